"""Hyperparameters: what the user chose, checked against the detector's domains
(:mod:`autovi_core.domains`) and read-only."""

from __future__ import annotations

from typing import Any


class Hyperparameters(dict):
    """A read-only ``dict`` of hyperparameters (JSON-serialisable, compares like a dict).

    Fitting must not write into it: what a fit finds out goes into the detector's ``provenance``.
    ``dict(hparams)`` gives a mutable copy.
    """

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "hyperparameters are read-only: they hold what the user chose; record what a fit found out in "
            "detector.provenance, and pass changed values as overrides to a new detector"
        )

    __setitem__ = __delitem__ = __ior__ = _read_only  # type: ignore[assignment]
    update = setdefault = pop = popitem = clear = _read_only  # type: ignore[assignment]

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        import copy

        return {key: copy.deepcopy(value, memo) for key, value in self.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        return (Hyperparameters, (dict(self),))

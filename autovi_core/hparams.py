"""Hyperparameters: what the user chose, type-checked against the detector's profiles and read-only.

A detector's profiles (``paper``, ``fast``) give every hyperparameter a value; the types of those
values are the hyperparameter's type. An override must have one of them: ``int`` (not ``bool``),
``float`` (an ``int`` is widened), ``bool``, ``str``, a sequence (list or tuple, its items checked
against the profile's items) or a mapping. ``None`` in some profile makes the value optional; a
hyperparameter that is ``None`` in every profile takes any JSON value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConfigError

_JSON_SCALARS = (str, int, float, bool, type(None))


def type_name(value: Any) -> str:
    """The hyperparameter type a profile value declares, as shown in errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (list, tuple)):
        items = sorted({type_name(item) for item in value})
        return f"list[{' | '.join(items)}]" if items else "list"
    if isinstance(value, Mapping):
        return "mapping"
    return type(value).__name__


def _matches(value: Any, example: Any) -> bool:
    if example is None:
        return value is None
    if isinstance(example, bool):
        return isinstance(value, bool)
    if isinstance(example, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(example, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(example, str):
        return isinstance(value, str)
    if isinstance(example, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return False
        if not example:
            return all(_is_json(item) for item in value)
        return all(any(_matches(item, ex) for ex in example) for item in value)
    if isinstance(example, Mapping):
        return isinstance(value, Mapping)
    return isinstance(value, type(example))


def _is_json(value: Any) -> bool:
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json(item) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _widen(value: Any, examples: Sequence[Any]) -> Any:
    """An ``int`` given for a ``float`` hyperparameter becomes a ``float``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if any(isinstance(ex, float) for ex in examples) and not any(isinstance(ex, int) and not isinstance(ex, bool) for ex in examples):
            return float(value)
    return value


def check_override(detector: str, key: str, value: Any, examples: Sequence[Any], types: tuple[type, ...] | None = None) -> Any:
    """``value`` checked against the profile values ``examples`` of ``key`` (or against ``types``
    where the detector declares them); returns it (ints widened to floats where the hyperparameter
    is a float). Raises a one-line :class:`ConfigError`."""
    if types:
        if value is None and any(ex is None for ex in examples):
            return None
        if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
            return value
        expected = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"detector {detector!r}: hyperparameter {key!r} expects {expected}, got {type_name(value)} {value!r}")
    declared = [ex for ex in examples if ex is not None]
    if not declared:  # None in every profile: any JSON value
        if _is_json(value):
            return value
        raise ConfigError(f"detector {detector!r}: hyperparameter {key!r} expects a JSON value, got {type(value).__name__} {value!r}")
    if value is None and len(declared) < len(examples):
        return None
    if any(_matches(value, ex) for ex in declared):
        return _widen(value, declared)
    expected = " or ".join(dict.fromkeys(type_name(ex) for ex in examples))
    raise ConfigError(f"detector {detector!r}: hyperparameter {key!r} expects {expected}, got {type_name(value)} {value!r}")


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

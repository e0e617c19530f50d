"""Hyperparameter domains: what values a hyperparameter accepts, how a ``--set`` string becomes one,
how it reads in docs, and (for the tests) how to draw values inside and outside it.

A detector declares each hyperparameter once, as a :class:`Param` (domain, ``paper`` and ``fast``
values, meaning, source); see :class:`autovi_core.Detector.params`. Domains:

- :class:`Int` and :class:`Float`: a range (bounds optional, open or closed), ``Int`` also a step
  (``multiple_of``);
- :class:`Bool`, :class:`Choice` (one of some strings), :class:`Text` (any non-empty string),
  :class:`Pattern` (a string matching a regular expression);
- :class:`Optional` (``None`` or the inner domain), :class:`ListOf` (a list of items of a domain,
  with a length range), :class:`OneOf` (any of several domains, e.g. a name or a list of names),
  :class:`AnyJSON` (any JSON value, for what a detector passes through unchecked).

``check`` returns the value normalised (an ``int`` given for a ``Float`` becomes a ``float``, a
tuple a list) or raises :class:`DomainError`, whose message says what the domain is; the detector
turns it into a one-line :class:`~autovi_core.errors.ConfigError` naming itself, the key and the value.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False, "1": True, "0": False}
_NONE_WORDS = {"none", "null", ""}


def shown(value: Any) -> str:
    """``repr(value)`` cut to 60 characters, for one-line refusals."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class DomainError(ValueError):
    """A value outside a domain; the message is the domain's description."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_is_json(item) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


class Domain(ABC):
    """The set of values a hyperparameter accepts."""

    @abstractmethod
    def check(self, value: Any) -> Any:
        """``value`` normalised, or :class:`DomainError` when it is outside the domain."""

    @abstractmethod
    def describe(self) -> str:
        """The domain in words, e.g. ``a float in (0, 1]``."""

    def parse(self, text: str) -> Any:
        """The value a ``--set KEY=TEXT`` string stands for (checked); :class:`DomainError` if none."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        return self.check(value)

    def to_json(self) -> dict[str, Any]:
        """A JSON description for ``autovi describe --json``."""
        return {"kind": type(self).__name__.lower(), "text": self.describe()}

    # --- property-based tests (hypothesis is imported by the caller's tests only) -----------------
    @abstractmethod
    def valid(self, hint: Sequence[Any] = ()) -> Any:
        """A hypothesis strategy of values inside the domain. ``hint``: typical values (the profiles'),
        which bound draws from unbounded ranges (a layer width of 10^9 is valid but cannot be built)."""

    @abstractmethod
    def invalid(self) -> Any:
        """A hypothesis strategy of values outside the domain (``None`` strategy if there are none)."""

    def __str__(self) -> str:
        return self.describe()


def _unquoted(text: str) -> str:
    """``--set k="a b"`` arrives as the JSON string ``"a b"``; plain ``a b`` as itself."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return str(json.loads(text))
        except json.JSONDecodeError:
            pass
    return text


def _not_a(expected: str, value: Any) -> DomainError:
    return DomainError(f"expects {expected}, got {type(value).__name__} {value!r}")


def _range_text(low: Any, high: Any, low_open: bool, high_open: bool) -> str:
    low, high = (f"{v:g}" if isinstance(v, float) else v for v in (low, high))
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" {'<' if high_open else '<='} {high}"
    return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def _soft_high(low: float | None, high: float | None, hint: Sequence[Any], floor: float) -> float:
    """The largest value drawn from a range without an upper bound: a few times the typical values."""
    if high is not None:
        return high
    typical = [abs(v) for v in hint if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max([floor, (low or 0) + floor, *(4 * t for t in typical)])


@dataclass(frozen=True)
class Int(Domain):
    """An integer in ``[low, high]`` (either bound optional), optionally a multiple of ``multiple_of``,
    or ``odd`` (a window with a centre pixel)."""

    low: int | None = None
    high: int | None = None
    multiple_of: int = 1
    odd: bool = False

    def __post_init__(self) -> None:
        if self.odd and self.multiple_of % 2 == 0:
            raise ValueError(f"no integer is odd and a multiple of {self.multiple_of}")

    def _fits(self, value: int) -> bool:
        in_range = (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
        return in_range and value % self.multiple_of == 0 and (not self.odd or value % 2 == 1)

    def check(self, value: Any) -> int:
        if isinstance(value, float) and value.is_integer() and not isinstance(value, bool):
            value = int(value)
        if not _is_int(value):
            raise _not_a(self.describe(), value)
        if not self._fits(value):
            raise DomainError(f"expects {self.describe()}, got {value}")
        return value

    def describe(self) -> str:
        step = f", a multiple of {self.multiple_of}" if self.multiple_of != 1 else ""
        return f"an {'odd ' if self.odd else ''}integer{_range_text(self.low, self.high, False, False)}{step}"

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "low": self.low, "high": self.high, "multiple_of": self.multiple_of, "odd": self.odd}

    def valid(self, hint: Sequence[Any] = ()) -> Any:
        from hypothesis import strategies as st

        low = self.low if self.low is not None else -int(_soft_high(None, None, hint, 8))
        high = int(_soft_high(self.low, self.high, hint, 8))
        m = self.multiple_of * (2 if self.odd else 1)
        offset = self.multiple_of if self.odd else 0  # odd multiples of an odd step s: 2ks + s
        return st.integers(-(-(low - offset) // m), (high - offset) // m).map(lambda k: k * m + offset).filter(self._fits)

    def invalid(self) -> Any:
        from hypothesis import strategies as st

        options = [st.text(max_size=5), st.booleans(), st.none(), st.floats(allow_nan=False).filter(lambda v: not v.is_integer())]
        if self.low is not None:
            options.append(st.integers(max_value=self.low - 1))
        if self.high is not None:
            options.append(st.integers(min_value=self.high + 1))
        if self.multiple_of != 1 or self.odd:
            low = self.low if self.low is not None else 0
            options.append(st.integers(low, low + 10 * self.multiple_of + 10).filter(lambda v: not self._fits(v)))
        return st.one_of(options)


@dataclass(frozen=True)
class Float(Domain):
    """A finite number in a range (either bound optional; ``low_open``/``high_open`` exclude it)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _not_a(self.describe(), value)
        value = float(value)
        outside = not math.isfinite(value)
        if self.low is not None:
            outside |= value <= self.low if self.low_open else value < self.low
        if self.high is not None:
            outside |= value >= self.high if self.high_open else value > self.high
        if outside:
            raise DomainError(f"expects {self.describe()}, got {value:g}")
        return value

    def describe(self) -> str:
        return f"a number{_range_text(self.low, self.high, self.low_open, self.high_open)}"

    def to_json(self) -> dict[str, Any]:
        bounds = {"low": self.low, "high": self.high, "low_open": self.low_open, "high_open": self.high_open}
        return {**super().to_json(), **bounds}

    def valid(self, hint: Sequence[Any] = ()) -> Any:
        from hypothesis import strategies as st

        low = self.low if self.low is not None else -_soft_high(None, None, hint, 1.0)
        high = _soft_high(self.low, self.high, hint, 1.0)
        open_low, open_high = self.low_open and self.low is not None, self.high_open and self.high is not None
        return st.floats(low, high, exclude_min=open_low, exclude_max=open_high)

    def invalid(self) -> Any:
        from hypothesis import strategies as st

        options = [st.text(max_size=5), st.booleans(), st.none(), st.sampled_from([math.nan, math.inf, -math.inf])]
        if self.low is not None:
            options.append(st.floats(max_value=self.low, exclude_max=not self.low_open, allow_nan=False, allow_infinity=False))
        if self.high is not None:
            options.append(st.floats(min_value=self.high, exclude_min=not self.high_open, allow_nan=False, allow_infinity=False))
        return st.one_of(options)


@dataclass(frozen=True)
class Bool(Domain):
    """``true`` or ``false`` (``--set`` also takes yes/no, on/off, 1/0)."""

    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _not_a(self.describe(), value)
        return value

    def describe(self) -> str:
        return "true or false"

    def parse(self, text: str) -> bool:
        word = text.strip().lower()
        if word not in _BOOL_WORDS:
            raise DomainError(f"expects {self.describe()}, got {text!r}")
        return _BOOL_WORDS[word]

    def valid(self, hint: Sequence[Any] = ()) -> Any:
        from hypothesis import strategies as st

        return st.booleans()

    def invalid(self) -> Any:
        from hypothesis import strategies as st

        return st.one_of(st.integers(), st.text(max_size=5), st.none(), st.floats(allow_nan=False))


@dataclass(frozen=True, init=False)
class Choice(Domain):
    """One of the given strings."""

    options: tuple[str, ...]

    def __init__(self, *options: str) -> None:
        if not options:
            raise ValueError("Choice needs at least one option")
        object.__setattr__(self, "options", tuple(options))

    def check(self, value: Any) -> str:
        if value not in self.options or not isinstance(value, str):
            raise DomainError(f"expects {self.describe()}, got {value!r}")
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def parse(self, text: str) -> str:
        return self.check(_unquoted(text))

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "options": list(self.options)}

    def valid(self, hint: Sequence[Any] = ()) -> Any:
        from hypothesis import strategies as st

        return st.sampled_from(self.options)

    def invalid(self) -> Any:
        from hypothesis import strategies as st

        return st.one_of(st.text(max_size=8).filter(lambda v: v not in self.options), st.integers(), st.none(), st.booleans())


@dataclass(frozen=True)
class Text(Domain):
    """Any non-empty string (a model or layer name, a file path): checked where it is used."""

    what: str = "a non-empty string"

    def check(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise DomainError(f"expects {self.describe()}, got {value!r}")
        return value

    def describe(self) -> str:
        return self.what

    def parse(self, text: str) -> str:
        return self.check(_unquoted(text))

    def valid(self, hint: Sequence[Any] = ()) -> Any:
        from hypothesis import strategies as st

        typical = [v for v in hint if isinstance(v, str) and v.strip()]
        return st.sampled_from(typical) if typical else st.text(min_size=1).filter(str.strip)

    def invalid(self) -> Any:
        from hypothesis import strategies as st

        return st.one_of(st.just(""), st.just("  "), st.integers(), st.none(), st.booleans())


@dataclass(frozen=True)
class Pattern(Domain):
    """A string matching the regular expression ``regex`` in full; ``what`` says it in words."""

    regex: str
    what: str

    def check(self, value: Any) -> str:
        import re

        if not isinstance(value, str) or re.fullmatch(self.regex, value) is None:
            raise DomainError(f"expects {self.describe()}, got {value!r}")
        return value

    def describe(self) -> str:
        return self.what

    def parse(self, text: str) -> str:
        return self.check(_unquoted(text))

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "regex": self.regex}

    def valid(self, hint: Sequence[Any] = ()) -> Any:
        from hypothesis import strategies as st

        return st.from_regex(self.regex, fullmatch=True)

    def invalid(self) -> Any:
        import re

        from hypothesis import strategies as st

        return st.one_of(st.text(max_size=8).filter(lambda v: re.fullmatch(self.regex, v) is None), st.integers(), st.none())


@dataclass(frozen=True)
class Optional(Domain):
    """``None`` (``--set KEY=none``) or a value of ``inner``; ``none_means`` says what ``None`` does."""

    inner: Domain
    none_means: str = ""

    def check(self, value: Any) -> Any:
        if value is None:
            return None
        try:
            return self.inner.check(value)
        except DomainError:
            raise DomainError(f"expects {self.describe()}, got {value!r}") from None

    def describe(self) -> str:
        return f"{self.inner.describe()}, or none{f' ({self.none_means})' if self.none_means else ''}"

    def parse(self, text: str) -> Any:
        return None if text.strip().lower() in _NONE_WORDS else self.inner.parse(text)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "inner": self.inner.to_json(), "none_means": self.none_means}

    def valid(self, hint: Sequence[Any] = ()) -> Any:
        from hypothesis import strategies as st

        return st.one_of(st.none(), self.inner.valid([v for v in hint if v is not None]))

    def invalid(self) -> Any:
        return self.inner.invalid().filter(lambda v: v is not None)


def _hint_items(hint: Sequence[Any]) -> list[Any]:
    return [item for v in hint if isinstance(v, (list, tuple)) for item in v]


@dataclass(frozen=True)
class ListOf(Domain):
    """A list of values of ``item``, ``min_len`` to ``max_len`` long (``--set`` takes JSON or a, b, c)."""

    item: Domain
    min_len: int = 1
    max_len: int | None = None

    def check(self, value: Any) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            raise _not_a(self.describe(), value)
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            raise DomainError(f"expects {self.describe()}, got {len(value)} item(s)")
        try:
            return [self.item.check(v) for v in value]
        except DomainError as exc:
            raise DomainError(f"expects {self.describe()}; an item {exc}") from None

    def describe(self) -> str:
        if self.max_len == self.min_len:
            count = f"{self.min_len}"
        elif self.max_len is None:
            count = f"{self.min_len} or more" if self.min_len else "any number of"
        else:
            count = f"{self.min_len} to {self.max_len}"
        return f"a list of {count} ({self.item.describe()})"

    def parse(self, text: str) -> list[Any]:
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                return self.check(json.loads(stripped))
            except json.JSONDecodeError:
                raise DomainError(f"expects {self.describe()}, got {text!r} (not valid JSON)") from None
        items = [part.strip() for part in stripped.split(",")] if stripped else []
        return self.check([self.item.parse(part) for part in items])

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "item": self.item.to_json(), "min_len": self.min_len, "max_len": self.max_len}

    def valid(self, hint: Sequence[Any] = ()) -> Any:
        from hypothesis import strategies as st

        typical_len = max((len(v) for v in hint if isinstance(v, (list, tuple))), default=self.min_len)
        max_len = self.max_len if self.max_len is not None else max(self.min_len, typical_len) + 2
        return st.lists(self.item.valid(_hint_items(hint)), min_size=self.min_len, max_size=max_len)

    def invalid(self) -> Any:
        from hypothesis import strategies as st

        options = [st.integers(), st.text(max_size=5).map(lambda v: {"x": v}), st.booleans()]
        options.append(st.lists(self.item.invalid(), min_size=max(1, self.min_len), max_size=max(1, self.min_len) + 1))
        if self.min_len > 0:
            options.append(st.just([]))
        if self.max_len is not None:
            options.append(st.lists(self.item.valid(), min_size=self.max_len + 1, max_size=self.max_len + 2))
        return st.one_of(options)


@dataclass(frozen=True, init=False)
class OneOf(Domain):
    """A value of any of ``domains`` (tried in order), e.g. a name or a list of names."""

    domains: tuple[Domain, ...]

    def __init__(self, *domains: Domain) -> None:
        object.__setattr__(self, "domains", tuple(domains))

    def check(self, value: Any) -> Any:
        for domain in self.domains:
            try:
                return domain.check(value)
            except DomainError:
                continue
        raise DomainError(f"expects {self.describe()}, got {value!r}")

    def describe(self) -> str:
        return " or ".join(d.describe() for d in self.domains)

    def parse(self, text: str) -> Any:
        try:  # JSON that is not a string (a list, a number) is that value, not text
            value = json.loads(text)
            if not isinstance(value, str):
                return self.check(value)
        except (json.JSONDecodeError, DomainError):
            pass
        for domain in self.domains:
            try:
                return domain.parse(text)
            except DomainError:
                continue
        raise DomainError(f"expects {self.describe()}, got {text!r}")

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "domains": [d.to_json() for d in self.domains]}

    def valid(self, hint: Sequence[Any] = ()) -> Any:
        from hypothesis import strategies as st

        return st.one_of([d.valid(hint) for d in self.domains])

    def invalid(self) -> Any:
        def outside_all(value: Any) -> bool:
            try:
                self.check(value)
            except DomainError:
                return True
            return False

        from hypothesis import strategies as st

        return st.one_of([d.invalid() for d in self.domains]).filter(outside_all)


@dataclass(frozen=True)
class AnyJSON(Domain):
    """Any JSON value: the domain of hyperparameters declared only by their profiles' ``None``."""

    def check(self, value: Any) -> Any:
        if not _is_json(value):
            raise _not_a(self.describe(), value)
        return value

    def describe(self) -> str:
        return "any JSON value"

    def valid(self, hint: Sequence[Any] = ()) -> Any:
        from hypothesis import strategies as st

        return st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))

    def invalid(self) -> Any:
        from hypothesis import strategies as st

        return st.one_of(st.just(math.nan), st.builds(object))


@dataclass(frozen=True)
class Param:
    """One hyperparameter, declared once: its domain, its ``paper`` and ``fast`` values, what it means
    (one line) and where that comes from (a paper section, the authors' code, or autovi's own choice)."""

    domain: Domain
    paper: Any
    fast: Any
    meaning: str
    source: str = ""

    def value(self, profile: str) -> Any:
        return {"paper": self.paper, "fast": self.fast}[profile]


def domain_from_profiles(values: Sequence[Any], types: tuple[type, ...] | None = None) -> Domain:
    """The type-only domain of a hyperparameter declared by its profile values alone (detectors
    without ``params``): ``None`` in some profile makes it optional; ``None`` in all, any JSON value."""
    declared = [v for v in values if v is not None]
    if types:
        domain = OneOf(*[_type_domain(t) for t in types])
    elif not declared:
        return AnyJSON()
    else:
        kinds = list(dict.fromkeys(_value_domain(v) for v in declared))
        domain = kinds[0] if len(kinds) == 1 else OneOf(*kinds)
    return Optional(domain) if len(declared) < len(values) else domain


def _type_domain(kind: type) -> Domain:
    if kind is bool:
        return Bool()
    if kind is int:
        return Int()
    if kind is float:
        return Float()
    if kind is str:
        return Text()
    if kind in (list, tuple):
        return ListOf(AnyJSON(), min_len=0)
    return AnyJSON()


def _value_domain(value: Any) -> Domain:
    if isinstance(value, (list, tuple)):
        items = list(dict.fromkeys(_value_domain(v) for v in value))
        return ListOf(items[0] if len(items) == 1 else OneOf(*items) if items else AnyJSON(), min_len=0)
    if isinstance(value, Mapping):
        return AnyJSON()
    return _type_domain(type(value))


__all__ = [
    "AnyJSON",
    "Bool",
    "Choice",
    "Domain",
    "DomainError",
    "Float",
    "Int",
    "ListOf",
    "OneOf",
    "Optional",
    "Param",
    "Pattern",
    "Text",
    "domain_from_profiles",
    "shown",
]

"""Facts: a conservative summary of a schema, to prove two schemas disjoint (``oneOf``).

A :class:`Facts` over-approximates what a schema accepts (its kinds of value, a finite set of
values, numeric and length ranges, required and listed properties, item schemas): when the facts
of two schemas share nothing, neither do the schemas. Never a guess: an unknown is "may overlap".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from core.jsonschema.keywords import KINDS
from core.jsonschema.values import kind_of, unique_values, value_key
from core.limits import Limits

__all__ = [
    "FactSource",
    "Facts",
    "disjoint",
    "disjoint_schemas",
    "numeric_disjoint",
    "overlap",
    "property_facts",
    "range_and",
    "ranges_disjoint",
    "tighter_high",
    "tighter_low",
    "union_facts",
]


class FactSource(Protocol):
    """What computes the facts of subschemas (following references): the schema analysis."""

    limits: Limits

    def facts_of_all(self, schemas: list[Any], depth: int) -> Facts | None:
        """The facts of the conjunction of ``schemas``, or None."""


@dataclass
class Facts:
    """An over-approximation of what a schema accepts; every field is "at most this" or unknown."""

    kinds: frozenset[str] = KINDS
    full: frozenset[str] = KINDS  # kinds of which the schema accepts every value
    values: list[Any] | None = None  # a finite set of allowed values, when known
    required: frozenset[str] = frozenset()
    props: dict[str, list[Any]] = field(default_factory=dict)
    closed: bool = False  # keys outside ``props`` are forbidden
    num: tuple[Fraction | None, bool, Fraction | None, bool] = (None, False, None, False)
    length: tuple[int, int | None] = (0, None)
    items: tuple[int, int | None] = (0, None)
    prefix: dict[int, list[Any]] = field(default_factory=dict)
    item: list[Any] = field(default_factory=list)  # schemas every array item must satisfy (no prefix)

    def merge(self, other: Facts) -> Facts:
        """The facts of the conjunction of both schemas."""
        values = self.values
        if other.values is not None:
            if values is None:
                values = other.values
            else:
                keys = {value_key(v) for v in other.values}
                values = [v for v in values if value_key(v) in keys]
        props = {k: list(v) for k, v in self.props.items()}
        for k, v in other.props.items():
            props.setdefault(k, []).extend(v)
        prefix = {k: list(v) for k, v in self.prefix.items()}
        for i, v in other.prefix.items():
            prefix.setdefault(i, []).extend(v)
        lo1, lx1, hi1, hx1 = self.num
        lo2, lx2, hi2, hx2 = other.num
        lo, lx = tighter_low((lo1, lx1), (lo2, lx2))
        hi, hx = tighter_high((hi1, hx1), (hi2, hx2))
        return Facts(
            kinds=self.kinds & other.kinds,
            full=self.full & other.full,
            values=values,
            required=self.required | other.required,
            props=props,
            closed=self.closed or other.closed,
            num=(lo, lx, hi, hx),
            length=range_and(self.length, other.length),
            items=range_and(self.items, other.items),
            prefix=prefix,
            item=self.item + other.item,
        )


def tighter_low(a: tuple[Fraction | None, bool], b: tuple[Fraction | None, bool]) -> tuple[Fraction | None, bool]:
    """The higher of two lower bounds ``(value, exclusive)``; None is no bound."""
    if a[0] is None:
        return b
    if b[0] is None:
        return a
    if a[0] != b[0]:
        return a if a[0] > b[0] else b
    return (a[0], a[1] or b[1])


def tighter_high(a: tuple[Fraction | None, bool], b: tuple[Fraction | None, bool]) -> tuple[Fraction | None, bool]:
    """The lower of two upper bounds ``(value, exclusive)``; None is no bound."""
    if a[0] is None:
        return b
    if b[0] is None:
        return a
    if a[0] != b[0]:
        return a if a[0] < b[0] else b
    return (a[0], a[1] or b[1])


def range_and(a: tuple[int, int | None], b: tuple[int, int | None]) -> tuple[int, int | None]:
    """The intersection of two count ranges ``(low, high or None)``."""
    hi = a[1] if b[1] is None else b[1] if a[1] is None else min(a[1], b[1])
    return (max(a[0], b[0]), hi)


def ranges_disjoint(a: tuple[int, int | None], b: tuple[int, int | None]) -> bool:
    """Whether two count ranges share no count."""
    lo, hi = range_and(a, b)
    return hi is not None and lo > hi


def union_facts(facts: Sequence[Facts], exclusive: bool = False) -> Facts:
    """Facts true of every instance of at least one of ``facts`` (kinds and values only).

    ``exclusive`` (a ``oneOf``): no kind is known to be accepted whole.
    """
    kinds: frozenset[str] = frozenset()
    full: frozenset[str] = frozenset()
    values: list[Any] | None = []
    required = facts[0].required
    for f in facts:
        kinds |= f.kinds
        full |= f.full
        if values is not None and f.values is not None:
            values.extend(f.values)
        else:
            values = None
        required &= f.required
    return Facts(
        kinds=kinds,
        full=frozenset() if exclusive else full,
        values=None if values is None else unique_values(values),
        required=required,
    )


def numeric_disjoint(a: Facts, b: Facts) -> bool:
    """Whether the numeric ranges of ``a`` and ``b`` share no number."""
    lo, lx = tighter_low((a.num[0], a.num[1]), (b.num[0], b.num[1]))
    hi, hx = tighter_high((a.num[2], a.num[3]), (b.num[2], b.num[3]))
    if lo is None or hi is None:
        return False
    return lo > hi or (lo == hi and (lx or hx))


def property_facts(f: Facts, key: str, rw: FactSource, depth: int) -> Facts | None:
    """The facts of property ``key`` under ``f`` (nothing allowed when ``f`` is closed without it)."""
    schemas = f.props.get(key)
    if schemas is None:
        return Facts(kinds=frozenset()) if f.closed else Facts()
    return rw.facts_of_all(schemas, depth + 1)


def disjoint(a: Facts, b: Facts, rw: FactSource, depth: int) -> bool:
    """True only when no instance satisfies both (a proof, never a guess)."""
    return not overlap(a, b, rw, depth)


def overlap(a: Facts, b: Facts, rw: FactSource, depth: int) -> frozenset[str]:
    """The kinds on which ``a`` and ``b`` are not proven disjoint."""
    if depth > rw.limits.max_rewrite_depth:
        return a.kinds & b.kinds
    common = a.kinds & b.kinds
    if not common:
        return common
    if a.values is not None and b.values is not None:
        keys = {value_key(v) for v in a.values if kind_of(v) in common}
        return frozenset(kind_of(v) for v in b.values if kind_of(v) in common and value_key(v) in keys)
    out = set()
    for kind in common:
        if kind in ("integer", "fraction"):
            if not numeric_disjoint(a, b):
                out.add(kind)
        elif kind == "string":
            if not ranges_disjoint(a.length, b.length):
                out.add(kind)
        elif kind == "array":
            if ranges_disjoint(a.items, b.items):
                continue
            # every common instance has the items below the larger minItems
            present = range(max(a.items[0], b.items[0]))
            if not any(
                i in a.prefix and i in b.prefix and disjoint_schemas(a.prefix[i], b.prefix[i], rw, depth)
                for i in present
            ):
                out.add(kind)
        elif kind == "object":
            for key in sorted(a.required | b.required):
                fa = property_facts(a, key, rw, depth)
                fb = property_facts(b, key, rw, depth)
                if fa is not None and fb is not None and disjoint(fa, fb, rw, depth + 1):
                    break
            else:
                out.add(kind)
        else:
            out.add(kind)
    return frozenset(out)


def disjoint_schemas(a: list[Any], b: list[Any], rw: FactSource, depth: int) -> bool:
    """Whether the conjunctions of ``a`` and of ``b`` are proven disjoint."""
    fa = rw.facts_of_all(a, depth + 1)
    fb = rw.facts_of_all(b, depth + 1)
    return fa is not None and fb is not None and disjoint(fa, fb, rw, depth + 1)

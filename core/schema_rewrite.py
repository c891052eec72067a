"""Exact rewrites of JSON-schema constructs llguidance refuses into constructs it supports.

llguidance 1.9.1 refuses ``not``, ``if``/``then``/``else``, ``dependentRequired``,
``dependentSchemas``, draft-7 ``dependencies``, ``uniqueItems`` and ``oneOf`` whose branches it
cannot prove disjoint, and counts written as decimals (``"minItems": 1.0``). Many real schemas use
them in ways that have an exact equivalent in what llguidance does support. :func:`rewrite_schema`
makes those rewrites, and only those: the rewritten schema accepts exactly the same instances as
the original (JSON Schema 2020-12 semantics). Anything it cannot rewrite exactly is left in place,
so llguidance refuses the schema with its own message naming the keyword
(``Unimplemented keys: ["not"]``); nothing is dropped or approximated.

The rewrites (``A``, ``B`` are subschemas; ``¬A`` is an exact complement, see below):

* counts written as integral decimals (``minItems``, ``maxLength``, ... ``2.0``) become integers;
* keywords with no effect by the specification are removed: ``if`` without ``then``/``else``,
  ``then``/``else`` without ``if``, ``minContains``/``maxContains`` without ``contains``,
  ``contains`` with ``minContains: 0`` and no ``maxContains``, ``uniqueItems: false``,
  ``uniqueItems: true`` with ``maxItems`` at most 1, ``propertyNames`` that every string satisfies,
  ``unevaluatedProperties``/``unevaluatedItems`` that are ``true`` or have nothing left to evaluate;
* ``format`` per :mod:`core.schema_formats`: an exact ``pattern`` or bounds, or removed as an
  annotation (reported in :attr:`RewriteReport.ignored`);
* ``uniqueItems: true`` over a small finite item domain (``enum``/``const``/boolean/null items,
  at most :data:`MAX_UNIQUE_ARRAYS` arrays): an ``enum`` of the distinct-item arrays;
* ``minProperties``/``maxProperties`` beside optional ``properties`` (llguidance counts only when
  every listed property is required): an ``anyOf`` over the sets of optional properties present,
  each requiring its set and forbidding the others (at most :data:`MAX_PROPERTY_SETS`);
* ``dependentRequired`` (and ``dependencies`` with a list) ``{a: [b, c]}``:
  ``anyOf: [{properties: {a: false}}, {required: [a, b, c]}]``;
* ``dependentSchemas`` (and ``dependencies`` with a schema) ``{a: S}``:
  ``anyOf: [{properties: {a: false}}, {allOf: [{required: [a]}, S]}]``;
* ``not: A``: ``¬A``;
* ``if: I, then: T, else: E``: ``anyOf: [{allOf: [I, T]}, {allOf: [¬I, E]}]`` (``I or E`` without
  ``then``; ``¬I or T`` without ``else``);
* ``oneOf``: ``anyOf`` when every pair of branches is provably disjoint (different types, different
  ``const``/``enum`` values, disjoint numeric or length ranges, a required property whose values are
  disjoint, with local ``$ref`` followed); value kinds that two branches accept whole (say, every
  non-object when the branches only constrain objects) are excluded with a ``type``; two closed
  objects with no property name in common share at most ``{}``, two arrays whose items must satisfy
  disjoint schemas at most ``[]``; otherwise ``anyOf`` of
  ``allOf: [A_i, ¬A_j...]`` over the branches that may overlap, when each of those has a complement;
* ``propertyNames``: a finite set of names (``const``/``enum``) lists them in ``properties`` with
  ``additionalProperties: false``; a ``pattern`` or length bounds alone become ``patternProperties``;
* ``unevaluatedProperties``/``unevaluatedItems`` when the node and its ``allOf``/``$ref`` evaluate a
  fixed set: ``additionalProperties`` (those names listed as ``true``) or ``items`` after a
  ``prefixItems`` of that length;
* a ``$ref`` to a schema that is ``false``, or provably accepts no value: ``false`` (llguidance
  refuses the whole schema on a referenced unsatisfiable schema, even where it only forbids an
  optional property).

Complements exist for: boolean schemas, ``type`` (not ``integer`` alone: "a number that is not an
integer" has no llguidance form), ``const``/``enum`` (strings by a regex of the finite set's
complement, numbers by open intervals, arrays and objects member by member), numeric bounds,
length and count bounds, ``pattern`` of the shapes :mod:`core.schema_regex` complements
(``^[C]+$``, a sequence of one-character atoms anchored at either end such as ``^[ab]``),
``required``, ``properties`` (with complementable values), ``prefixItems``, ``items: false``,
``additionalProperties: false`` alone, ``allOf``/``anyOf``/``oneOf``/``not``/``if``/local ``$ref``
(by De Morgan), ``dependentRequired``/``dependentSchemas``. Not for other patterns, ``format``,
``multipleOf``, ``uniqueItems``, ``contains``, ``patternProperties``, ``propertyNames``, or recursive
references: a ``not`` or ``oneOf`` that needs one of those stays as it was and is refused.

Structure is kept where references may point: a rewrite that would move or remove a keyword is
skipped when a local JSON-pointer ``$ref`` points inside it (references are looked for under
unknown keywords too, and the schemas they point to there are rewritten), and every structural
rewrite is skipped in documents with anchors (``$anchor``, ``$dynamicAnchor``, ``$dynamicRef``,
``$recursiveRef``) or with a reference inside an embedded resource (``$id`` below the root), whose
resolution this module does not follow.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any
from urllib.parse import unquote

from core.schema_formats import DEFAULT_FORMAT_MODE, FormatMode, rewrite_format
from core.schema_regex import ANY_CHAR, complement_pattern, complement_words

__all__ = ["MAX_UNIQUE_ARRAYS", "RewriteReport", "rewrite_schema", "rewrite_schema_report"]

#: Most arrays a ``uniqueItems`` rewrite may enumerate.
MAX_UNIQUE_ARRAYS = 256
#: Most sets of present optional properties a ``minProperties``/``maxProperties`` rewrite may list.
MAX_PROPERTY_SETS = 256
#: Deepest schema nesting the rewriter descends into (deeper parts are left as they are).
MAX_DEPTH = 100
#: Most branches of a ``oneOf`` rewritten with complements (each may need n - 1 complements).
MAX_ONE_OF_BRANCHES = 12
#: Most branches of a ``oneOf`` the rewriter analyses at all (pairs grow as the square).
MAX_ANALYSED_BRANCHES = 64
#: Largest complement (serialised characters) the rewriter inserts for one keyword.
MAX_COMPLEMENT_CHARS = 200_000
#: Analysis steps (facts and complements computed) for one schema; past it, nothing more is
#: rewritten (the result stays exact, only less is rewritten): a hostile schema costs bounded time.
MAX_WORK = 100_000
_REF_HOPS = 16

_COUNT_KEYS = (
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "minContains",
    "maxContains",
)
_SINGLE = (
    "additionalItems",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
)
_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_IDENTIFIERS = ("$anchor", "$dynamicAnchor", "$dynamicRef", "$recursiveRef", "$recursiveAnchor")

# Keywords that constrain instances (in any draft llguidance reads). A complement must account for
# every one of them; other keys are annotations or unknown, which both JSON Schema and llguidance
# ignore.
_ASSERTIONS = frozenset(
    {
        "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
        "exclusiveMinimum", "maxLength", "minLength", "pattern", "format", "maxItems", "minItems",
        "uniqueItems", "maxContains", "minContains", "contains", "items", "prefixItems",
        "additionalItems", "unevaluatedItems", "maxProperties", "minProperties", "required",
        "properties", "patternProperties", "additionalProperties", "propertyNames",
        "dependentRequired", "dependentSchemas", "dependencies", "unevaluatedProperties", "allOf",
        "anyOf", "oneOf", "not", "if", "then", "else", "$ref", "$dynamicRef", "$recursiveRef",
        "$id", "id", "$anchor", "$dynamicAnchor", "$recursiveAnchor", "$schema", "$vocabulary",
    }
)  # fmt: skip

# The kinds each keyword constrains (a schema without them accepts every value of those kinds).
_NUMBERS = frozenset({"integer", "fraction"})
_CONSTRAINS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"), _NUMBERS),
    **dict.fromkeys(("minLength", "maxLength", "pattern", "format"), frozenset({"string"})),
    **dict.fromkeys(
        ("items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems", "contains", "minContains",
         "maxContains", "unevaluatedItems"),
        frozenset({"array"}),
    ),
    **dict.fromkeys(
        ("required", "properties", "patternProperties", "additionalProperties", "minProperties", "maxProperties",
         "propertyNames", "dependentRequired", "dependentSchemas", "dependencies", "unevaluatedProperties"),
        frozenset({"object"}),
    ),
}  # fmt: skip
# Keywords whose effect the facts do not model at all.
_OPAQUE = frozenset({"not", "if", "then", "else", "$dynamicRef", "$recursiveRef"})

# JSON value kinds; numbers split into integral and fractional values so that "integer" is a set.
_KINDS = frozenset({"null", "boolean", "integer", "fraction", "string", "array", "object"})
_TYPE_KINDS: dict[str, frozenset[str]] = {
    "null": frozenset({"null"}),
    "boolean": frozenset({"boolean"}),
    "integer": frozenset({"integer"}),
    "number": frozenset({"integer", "fraction"}),
    "string": frozenset({"string"}),
    "array": frozenset({"array"}),
    "object": frozenset({"object"}),
}


@dataclass
class RewriteReport:
    """What :func:`rewrite_schema_report` changed: one short note per rewrite, by JSON pointer.

    ``ignored`` lists what was compiled as an annotation only (``format "path" at #/properties/p``),
    for the compile answer.
    """

    notes: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.notes)

    def kinds(self) -> list[str]:
        """The distinct rewrite kinds applied (the note text before the first colon)."""
        return sorted({n.split(":", 1)[0] for n in self.notes})


def rewrite_schema(schema: Mapping[str, Any], formats: FormatMode = DEFAULT_FORMAT_MODE) -> dict[str, Any]:
    """An exactly equivalent schema with the constructs llguidance refuses rewritten where possible.

    Pure: the input is not modified (unchanged parts of the result may share objects with it).
    What cannot be rewritten exactly is left in place for llguidance to refuse by name.

    Args:
        schema: a JSON schema object.
        formats: ``assert`` or ``annotate``: what ``format`` does (see :mod:`core.schema_formats`).

    Returns:
        The rewritten schema (a new dict).
    """
    return rewrite_schema_report(schema, formats)[0]


def rewrite_schema_report(
    schema: Mapping[str, Any], formats: FormatMode = DEFAULT_FORMAT_MODE
) -> tuple[dict[str, Any], RewriteReport]:
    """:func:`rewrite_schema`, also saying which rewrites were made and what was left as annotation."""
    if not isinstance(schema, Mapping):
        raise TypeError(f"rewrite_schema takes a schema object, not {type(schema).__name__}")
    rewriter = _Rewriter(schema, formats)
    out = rewriter.rewrite(schema, (), 0)
    assert isinstance(out, dict)
    if rewriter.notes and _too_big(out, 4 * _size(schema) + MAX_COMPLEMENT_CHARS):
        # Rewrites multiply in nested structures: past this size, only the formats are rewritten.
        rewriter = _Rewriter(schema, formats, formats_only=True)
        out = rewriter.rewrite(schema, (), 0)
        return out, RewriteReport(["too large to rewrite: #", *rewriter.notes], rewriter.ignored)
    return out, RewriteReport(rewriter.notes, rewriter.ignored)


def _size(schema: Any) -> int:
    return len(json.dumps(schema, ensure_ascii=False, default=str))


# ---------------------------------------------------------------------------------------------
# helpers on JSON values


def _pointer(path: Sequence[str]) -> str:
    return "#" + "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _kind_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if math.isfinite(v) and v.is_integer() else "fraction"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _key(v: Any) -> Any:
    """A hashable key equal for JSON-equal values (1 == 1.0; true != 1)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return (type(v).__name__, v)
    if isinstance(v, (int, float)):
        return ("num", Fraction(v) if math.isfinite(v) else v)
    if isinstance(v, list):
        return ("arr", tuple(_key(x) for x in v))
    if isinstance(v, dict):
        return ("obj", frozenset((k, _key(x)) for k, x in v.items()))
    return ("other", repr(v))


def _unique(values: Iterable[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for v in values:
        k = _key(v)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


def _type_kinds(t: Any) -> frozenset[str] | None:
    """Kinds allowed by a ``type`` value; None when it is malformed (leave it to llguidance)."""
    if t is None:
        return _KINDS
    names = [t] if isinstance(t, str) else t
    if not isinstance(names, list) or not all(isinstance(n, str) and n in _TYPE_KINDS for n in names):
        return None
    out: frozenset[str] = frozenset()
    for n in names:
        out |= _TYPE_KINDS[n]
    return out


def _type_value(kinds: Iterable[str]) -> str | list[str] | None:
    """A ``type`` value for a set of kinds; None for non-integral numbers without the integers."""
    kinds = set(kinds)
    names: list[str] = []
    for name in ("null", "boolean", "string", "array", "object"):
        if name in kinds:
            names.append(name)
    if "integer" in kinds and "fraction" in kinds:
        names.append("number")
    elif "fraction" in kinds:
        return None
    elif "integer" in kinds:
        names.append("integer")
    return names[0] if len(names) == 1 else names


def _any(pieces: Sequence[Any]) -> Any:
    kept = []
    for p in pieces:
        if p is True or p == {}:
            return True
        if p is not False:
            kept.append(p)
    if not kept:
        return False
    return kept[0] if len(kept) == 1 else {"anyOf": kept}


def _all(pieces: Sequence[Any]) -> Any:
    kept = []
    for p in pieces:
        if p is False:
            return False
        if p is not True and p != {}:
            kept.append(p)
    if not kept:
        return True
    return kept[0] if len(kept) == 1 else {"allOf": kept}


# ---------------------------------------------------------------------------------------------
# facts: a conservative summary of a schema, to prove two schemas disjoint


@dataclass
class _Facts:
    kinds: frozenset[str] = _KINDS
    full: frozenset[str] = _KINDS  # kinds of which the schema accepts every value
    values: list[Any] | None = None  # a finite set of allowed values, when known
    required: frozenset[str] = frozenset()
    props: dict[str, list[Any]] = field(default_factory=dict)
    closed: bool = False  # keys outside ``props`` are forbidden
    num: tuple[Fraction | None, bool, Fraction | None, bool] = (None, False, None, False)
    length: tuple[int, int | None] = (0, None)
    items: tuple[int, int | None] = (0, None)
    prefix: dict[int, list[Any]] = field(default_factory=dict)
    item: list[Any] = field(default_factory=list)  # schemas every array item must satisfy (no prefix)

    def merge(self, other: _Facts) -> _Facts:
        values = self.values
        if other.values is not None:
            if values is None:
                values = other.values
            else:
                keys = {_key(v) for v in other.values}
                values = [v for v in values if _key(v) in keys]
        props = {k: list(v) for k, v in self.props.items()}
        for k, v in other.props.items():
            props.setdefault(k, []).extend(v)
        prefix = {k: list(v) for k, v in self.prefix.items()}
        for i, v in other.prefix.items():
            prefix.setdefault(i, []).extend(v)
        lo1, lx1, hi1, hx1 = self.num
        lo2, lx2, hi2, hx2 = other.num
        lo, lx = _tighter_low((lo1, lx1), (lo2, lx2))
        hi, hx = _tighter_high((hi1, hx1), (hi2, hx2))
        return _Facts(
            kinds=self.kinds & other.kinds,
            full=self.full & other.full,
            values=values,
            required=self.required | other.required,
            props=props,
            closed=self.closed or other.closed,
            num=(lo, lx, hi, hx),
            length=_range_and(self.length, other.length),
            items=_range_and(self.items, other.items),
            prefix=prefix,
            item=self.item + other.item,
        )


def _tighter_low(a: tuple[Fraction | None, bool], b: tuple[Fraction | None, bool]) -> tuple[Fraction | None, bool]:
    if a[0] is None:
        return b
    if b[0] is None:
        return a
    if a[0] != b[0]:
        return a if a[0] > b[0] else b
    return (a[0], a[1] or b[1])


def _tighter_high(a: tuple[Fraction | None, bool], b: tuple[Fraction | None, bool]) -> tuple[Fraction | None, bool]:
    if a[0] is None:
        return b
    if b[0] is None:
        return a
    if a[0] != b[0]:
        return a if a[0] < b[0] else b
    return (a[0], a[1] or b[1])


def _range_and(a: tuple[int, int | None], b: tuple[int, int | None]) -> tuple[int, int | None]:
    hi = a[1] if b[1] is None else b[1] if a[1] is None else min(a[1], b[1])
    return (max(a[0], b[0]), hi)


def _ranges_disjoint(a: tuple[int, int | None], b: tuple[int, int | None]) -> bool:
    lo, hi = _range_and(a, b)
    return hi is not None and lo > hi


def _count(v: Any) -> int | None:
    if isinstance(v, bool) or not _is_number(v):
        return None
    if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
        return None
    return int(v) if v >= 0 else None


def _num(v: Any) -> Fraction | None:
    if not _is_number(v) or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return Fraction(v)


# ---------------------------------------------------------------------------------------------
# the rewriter


class _Rewriter:
    def __init__(self, root: Mapping[str, Any], formats: FormatMode, formats_only: bool = False) -> None:
        self.root = root
        self.formats = formats
        self.formats_only = formats_only
        self.notes: list[str] = []
        self.ignored: list[str] = []
        self.memo: dict[tuple[str, ...], Any] = {}
        self.active: set[tuple[str, ...]] = set()
        self.pinned: set[tuple[str, ...]] = set()
        self.pinned_prefixes: set[tuple[str, ...]] = set()  # every non-empty prefix of a pinned path
        self.structural = True
        self.root_id = root.get("$id") if isinstance(root.get("$id"), str) else None
        self._facts: dict[int, tuple[Any, _Facts | None]] = {}
        self._facts_all: dict[tuple[int, ...], tuple[list[Any], _Facts | None]] = {}
        self.work = 0
        self._scan()

    # -- document scan: references and identifiers
    def _scan(self) -> None:
        stack: list[tuple[Any, tuple[str, ...], int]] = [(self.root, (), 0)]
        resources: set[tuple[str, ...]] = set()
        refs: list[tuple[str, ...]] = []
        while stack:
            node, path, depth = stack.pop()
            if not isinstance(node, dict) or depth > MAX_DEPTH:
                continue
            if any(k in node for k in _IDENTIFIERS):
                self.structural = False
            for key in ("$id", "id"):  # ``id``: drafts 4 and 6 (we are in a schema position)
                value = node.get(key)
                if path and isinstance(value, str) and not value.startswith("#"):
                    # an embedded resource: pointers inside it are relative to it. A fragment-only
                    # id (``"#/properties/a"``, as schema generators write) does not move the base.
                    resources.add(path)
            ref = node.get("$ref")
            if isinstance(ref, str):
                refs.append(path)
                target = self._pointer_path(ref)
                if target is not None:
                    self.pinned.add(target)
                    self.pinned_prefixes.update(target[:i] for i in range(1, len(target) + 1))
                elif ref not in ("#", ""):
                    # a reference we do not follow (remote, anchor, relative): keep everything put
                    self.structural = False
            for child, child_path in _children(node, path):
                stack.append((child, child_path, depth + 1))
            for key, value in node.items():
                # unknown keywords may hold schemas too (``$defs: {group: {a: {...}}}``): a ``$ref``
                # can point there, so references inside them are found as well
                if isinstance(value, dict) and key not in _ASSERTIONS and key not in _DATA_KEYWORDS:
                    stack.append((value, path + (key,), depth + 1))
        # A reference inside an embedded resource is resolved against that resource, which this
        # module does not do; an embedded resource without references changes nothing here.
        if any(ref[:i] in resources for ref in refs for i in range(1, len(ref) + 1)):
            self.structural = False

    def _pointer_path(self, ref: str) -> tuple[str, ...] | None:
        if self.root_id and ref.startswith(self.root_id + "#"):
            ref = ref[len(self.root_id) :]
        if not ref.startswith("#/"):
            return () if ref == "#" else None
        parts = ref[2:].split("/")
        return tuple(unquote(p).replace("~1", "/").replace("~0", "~") for p in parts)

    def _movable(self, path: tuple[str, ...], key: str) -> bool:
        """Whether ``key`` of the node at ``path`` may be moved or removed."""
        if not self.structural:
            return False
        prefix = path + (key,)
        n = len(prefix)
        return not any(p[:n] == prefix for p in self.pinned)

    def note(self, kind: str, path: tuple[str, ...]) -> None:
        self.notes.append(f"{kind}: {_pointer(path)}")

    # -- references
    def original_at(self, path: tuple[str, ...]) -> Any:
        node: Any = self.root
        for seg in path:
            if isinstance(node, dict) and seg in node:
                node = node[seg]
            elif isinstance(node, list) and seg.isdigit() and int(seg) < len(node):
                node = node[int(seg)]
            else:
                return None
        return node

    def resolve(self, ref: Any, depth: int) -> tuple[tuple[str, ...], Any] | None:
        """The rewritten target of a local ``$ref`` and its path, or None (unknown or cyclic)."""
        if not isinstance(ref, str) or not self.structural:
            return None
        path = self._pointer_path(ref)
        if path is None:
            return None
        target = self.original_at(path)
        if target is None or path in self.active:
            return None
        return path, self.rewrite(target, path, depth + 1)

    # -- the walk
    def rewrite(self, node: Any, path: tuple[str, ...], depth: int) -> Any:
        if not isinstance(node, dict) or depth > MAX_DEPTH:
            return node
        if path in self.memo:
            return self.memo[path]
        self.active.add(path)
        try:
            out: dict[str, Any] = {}
            for key, value in node.items():
                out[key] = self._rewrite_child(key, value, path, depth)
            out = self._local(out, path, depth)
        finally:
            self.active.discard(path)
        self.memo[path] = out
        return out

    def _rewrite_child(self, key: str, value: Any, path: tuple[str, ...], depth: int) -> Any:
        if key in _SINGLE or (key == "items" and isinstance(value, dict)):
            return self.rewrite(value, path + (key,), depth + 1)
        if key in _MAPS and isinstance(value, dict):
            return {k: self.rewrite(v, path + (key, k), depth + 1) for k, v in value.items()}
        if (key in _LISTS or key == "items") and isinstance(value, list):
            return [self.rewrite(v, path + (key, str(i)), depth + 1) for i, v in enumerate(value)]
        if key == "dependencies" and isinstance(value, dict):
            return {
                k: self.rewrite(v, path + (key, k), depth + 1) if isinstance(v, dict) else v
                for k, v in value.items()
            }
        return self._referenced(value, path + (key,), depth + 1)

    def _referenced(self, value: Any, path: tuple[str, ...], depth: int) -> Any:
        """``value`` outside the schema keywords, with the schemas a ``$ref`` points to in it rewritten.

        A reference may point anywhere (``#/channels``, a key no keyword defines); llguidance
        follows it, so what it finds there must be rewritten like any schema.
        """
        if depth > MAX_DEPTH or path not in self.pinned_prefixes:
            return value
        if path in self.pinned or path in self.memo:  # a schema (rewritten already when a ref led there)
            return self.rewrite(value, path, depth)
        if isinstance(value, dict):
            return {k: self._referenced(v, path + (k,), depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self._referenced(v, path + (str(i),), depth + 1) for i, v in enumerate(value)]
        return value

    def _local(self, s: dict[str, Any], path: tuple[str, ...], depth: int) -> Any:
        s = self._format(s, path)
        if self.formats_only:
            return s
        s = self._counts(s, path)
        s = self._noops(s, path)
        s = self._property_counts(s, path)
        # before the rewrites below turn not/if/oneOf/dependentSchemas into allOf entries, which
        # would read as evaluating properties
        s = self._unevaluated(s, path, depth)
        s = self._property_names(s, path, depth)
        s = self._unique_items(s, path, depth)
        s = self._dependencies(s, path)
        s = self._conditional(s, path, depth)
        s = self._negation(s, path, depth)
        s = self._one_of(s, path, depth)
        return self._false_ref(s, path, depth)

    def _false_ref(self, s: dict[str, Any], path: tuple[str, ...], depth: int) -> Any:
        """A ``$ref`` to a schema that is ``false`` or provably accepts nothing (no kind of value is
        left, e.g. ``type: object`` with a ``oneOf`` of strings): the node is ``false``. llguidance
        refuses the whole schema on a referenced unsatisfiable schema, even where it only forbids
        an optional property."""
        if "$ref" not in s or not path or not all(self._movable(path, k) for k in s):
            return s
        resolved = self.resolve(s["$ref"], depth)
        if resolved is None:
            return s
        if not _is_false(resolved[1]):
            facts = self.facts(resolved[1], depth + 1)
            if facts is None or facts.kinds:
                return s
        self.note("$ref to false", path)
        return False

    # -- local rewrites (each takes and returns a fresh dict it may modify)
    def _format(self, s: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        out, ignored = rewrite_format(s, self.formats)
        if ignored is not None:
            self.ignored.append(f"format {json.dumps(ignored, ensure_ascii=False)} at {_pointer(path)}")
            self.note("format as annotation", path)
        elif out is not s:
            self.note(f"format {s['format']}", path)
        return out

    def _counts(self, s: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        for key in _COUNT_KEYS:
            v = s.get(key)
            if isinstance(v, float) and math.isfinite(v) and v.is_integer() and v >= 0:
                s[key] = int(v)
                self.note(f"decimal-count {key}", path)
        return s

    def _drop(self, s: dict[str, Any], path: tuple[str, ...], keys: Sequence[str], why: str) -> dict[str, Any]:
        present = [k for k in keys if k in s]
        if present and all(self._movable(path, k) for k in present):
            for k in present:
                del s[k]
            self.note(f"no-op {why}", path)
        return s

    def _noops(self, s: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        if "if" in s and "then" not in s and "else" not in s:
            s = self._drop(s, path, ["if"], "if without then/else")
        if "if" not in s and ("then" in s or "else" in s):
            s = self._drop(s, path, ["then", "else"], "then/else without if")
        if "contains" not in s and ("minContains" in s or "maxContains" in s):
            s = self._drop(s, path, ["minContains", "maxContains"], "min/maxContains without contains")
        if "contains" in s and "maxContains" not in s and _count(s.get("minContains")) == 0:
            s = self._drop(s, path, ["contains", "minContains"], "contains with minContains 0")
        unique = s.get("uniqueItems")
        max_items = _count(s.get("maxItems"))
        if unique is False or (unique is True and max_items is not None and max_items <= 1):
            del s["uniqueItems"]
            self.note("no-op uniqueItems", path)
        names = s.get("propertyNames")
        if names is True or (isinstance(names, dict) and self._any_string(names)):
            s = self._drop(s, path, ["propertyNames"], "propertyNames every string satisfies")
        deps = s.get("dependentRequired")
        if isinstance(deps, dict) and deps and all(v == [] for v in deps.values()):
            del s["dependentRequired"]
            self.note("no-op dependentRequired", path)
        return s

    def _property_counts(self, s: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        """``minProperties``/``maxProperties`` beside optional ``properties``, by the sets of them present.

        llguidance counts properties only when every listed one is required. So the node is split
        on which optional properties are present: one ``anyOf`` branch per set ``S`` requires ``S``
        and forbids the other optional ones (``false``); their union is every object, so adding the
        choice changes nothing, and in each branch every listed property is required or forbidden.
        A closed object (``additionalProperties: false``, no ``patternProperties``) holds exactly
        the required and present properties, so only the sets of an allowed size are listed and the
        counts go; an open one keeps the counts in every branch. At most
        :data:`MAX_PROPERTY_SETS` branches.
        """
        low, high = _count(s.get("minProperties")), _count(s.get("maxProperties"))
        props = s.get("properties")
        if (low is None and high is None) or not isinstance(props, dict) or not self._movable(path, "properties"):
            return s
        required = s.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            return s
        optional = [k for k, v in props.items() if k not in required and v is not False]
        if not optional or any(k in s and _count(s[k]) is None for k in ("minProperties", "maxProperties")):
            return s
        closed = s.get("additionalProperties") is False and not s.get("patternProperties")
        lo, hi = low or 0, len(optional) if high is None else high
        if closed:
            base = len(_unique([r for r in required if props.get(r, False) is not False]))
            if any(r not in props for r in required):
                return s  # a required name the object cannot hold: llguidance says so itself
            sizes = [n for n in range(len(optional) + 1) if lo <= base + n <= hi]
        else:
            sizes = list(range(len(optional) + 1))
        if sum(math.comb(len(optional), n) for n in sizes) > MAX_PROPERTY_SETS:
            return s
        counts: dict[str, Any] = {} if closed else {k: s[k] for k in ("minProperties", "maxProperties") if k in s}
        branches = []
        for n in sizes:
            for present in itertools.combinations(optional, n):
                branch: dict[str, Any] = {"properties": {k: False for k in optional if k not in present}}
                if present:
                    branch["required"] = list(present)
                branches.append({**branch, **counts})
        out = {k: v for k, v in s.items() if k not in ("minProperties", "maxProperties")}
        self.note("min/maxProperties by present properties", path)
        return self._add_constraints(out, [_any(branches) if branches else False])

    def _unevaluated(self, s: dict[str, Any], path: tuple[str, ...], depth: int) -> dict[str, Any]:
        """``unevaluatedProperties``/``unevaluatedItems`` whose evaluated set is known statically.

        When the node and its in-place applicators (``allOf``, ``$ref``, never ``not``) evaluate a
        fixed set of properties (names and patterns) or a fixed prefix of items, "unevaluated" is
        that set's complement: ``additionalProperties`` after listing those names with ``true``, or
        ``items`` after a ``prefixItems`` of that length. Branching applicators (``anyOf``,
        ``oneOf``, ``if``, ``dependentSchemas``, ``contains``) evaluate depending on the instance:
        left alone.
        """
        original = self.original_at(path)
        if not isinstance(original, dict):
            return s
        if "unevaluatedProperties" in s and self._movable(path, "unevaluatedProperties"):
            u = s["unevaluatedProperties"]
            seen = None if u is True or u == {} else self._evaluated(original, "properties", depth, 0, top=True)
            if u is True or u == {} or seen == "all":
                del s["unevaluatedProperties"]
                self.note("no-op unevaluatedProperties", path)
            elif isinstance(seen, tuple):
                names, patterns = seen
                props = dict(s["properties"]) if isinstance(s.get("properties"), dict) else {}
                pattern_props = dict(s["patternProperties"]) if isinstance(s.get("patternProperties"), dict) else {}
                props.update({n: True for n in names if n not in props})
                pattern_props.update({p: True for p in patterns if p not in pattern_props})
                if props:
                    s["properties"] = props
                if pattern_props:
                    s["patternProperties"] = pattern_props
                s["additionalProperties"] = u
                del s["unevaluatedProperties"]
                self.note("unevaluatedProperties", path)
        if "unevaluatedItems" in s and self._movable(path, "unevaluatedItems"):
            u = s["unevaluatedItems"]
            seen_items = None if u is True or u == {} else self._evaluated(original, "items", depth, 0, top=True)
            if u is True or u == {} or seen_items == "all":
                del s["unevaluatedItems"]
                self.note("no-op unevaluatedItems", path)
            elif isinstance(seen_items, int):
                prefix = list(s["prefixItems"]) if isinstance(s.get("prefixItems"), list) else []
                prefix += [True] * (seen_items - len(prefix))
                if prefix:
                    s["prefixItems"] = prefix
                s["items"] = u
                del s["unevaluatedItems"]
                self.note("unevaluatedItems", path)
        return s

    def _evaluated(self, node: Any, what: str, depth: int, hops: int, top: bool = False) -> Any:
        """What ``node`` and its in-place applicators evaluate, whatever the instance.

        For ``what="properties"``: ``(names, patterns)`` or ``"all"``; for ``"items"``: the prefix
        length or ``"all"``. None when it depends on the instance (or is not known).
        """
        if depth > MAX_DEPTH or hops > _REF_HOPS:
            return None
        if isinstance(node, bool):
            return ((), ()) if what == "properties" else 0
        if not isinstance(node, dict):
            return None
        dynamic = {"anyOf", "oneOf", "if", "then", "else", "dependentSchemas", "dependencies", "$dynamicRef",
                   "$recursiveRef", "contains"}  # fmt: skip
        if what == "properties":
            dynamic.discard("contains")
        if any(k in node for k in dynamic):
            return None
        nested = "unevaluatedProperties" if what == "properties" else "unevaluatedItems"
        if not top and nested in node:
            return "all"
        names: list[str] = []
        patterns: list[str] = []
        prefix = 0
        if what == "properties":
            if "additionalProperties" in node:
                return "all"
            if isinstance(node.get("properties"), dict):
                names.extend(node["properties"])
            if isinstance(node.get("patternProperties"), dict):
                patterns.extend(node["patternProperties"])
        else:
            if "items" in node or "additionalItems" in node:
                return "all" if isinstance(node.get("items"), (dict, bool)) and "additionalItems" not in node else None
            if isinstance(node.get("prefixItems"), list):
                prefix = len(node["prefixItems"])
        members: list[tuple[Any, int]] = []
        if isinstance(node.get("allOf"), list):
            members.extend((m, hops) for m in node["allOf"])
        if "$ref" in node:
            target_path = self._pointer_path(node["$ref"]) if isinstance(node["$ref"], str) else None
            target = None if target_path is None or not self.structural else self.original_at(target_path)
            if target is None:
                return None
            members.append((target, hops + 1))
        for member, member_hops in members:
            got = self._evaluated(member, what, depth + 1, member_hops)
            if got is None or got == "all":
                return got
            if what == "properties":
                names.extend(got[0])
                patterns.extend(got[1])
            else:
                prefix = max(prefix, got)
        if what == "properties":
            return (tuple(dict.fromkeys(names)), tuple(dict.fromkeys(patterns)))
        return prefix

    def _property_names(self, s: dict[str, Any], path: tuple[str, ...], depth: int) -> dict[str, Any]:
        """``propertyNames`` as the properties and patterns an object may hold.

        A finite set of names (``const``/``enum``, with length bounds) lists them in ``properties``
        (the others become ``false``) with ``additionalProperties: false``; a ``pattern`` or length
        bounds alone become ``patternProperties`` for what ``additionalProperties`` allowed.
        """
        if "propertyNames" not in s or not self._movable(path, "propertyNames"):
            return s
        names = s["propertyNames"]
        if isinstance(names, dict) and "$ref" in names and not set(names) - {"$ref", *_ANNOTATIONS}:
            resolved = self.resolve(names["$ref"], depth)
            if resolved is None:
                return s
            names = resolved[1]
        if isinstance(s.get("patternProperties"), dict) and s["patternProperties"]:
            return s
        extra = s.get("additionalProperties", True)
        props = s.get("properties") if isinstance(s.get("properties"), dict) else {}
        assert isinstance(props, dict)
        if names is False:
            allowed_names: list[str] | None = []
            regex = None
        else:
            parsed = _name_constraint(names)
            if parsed is None:
                return s
            allowed_names, regex = parsed
        if allowed_names is not None:
            keep = {k: (v if k in allowed_names else False) for k, v in props.items()}
            if extra is not False:
                keep.update({k: extra for k in allowed_names if k not in props})
            out = {k: v for k, v in s.items() if k != "propertyNames"}
            if keep or "properties" in s:
                out["properties"] = keep
            out["additionalProperties"] = False
        else:
            assert regex is not None
            lengths_only = not isinstance(names, dict) or "pattern" not in names
            if props and not (lengths_only and extra in (True, {})):
                return s  # which listed names match a pattern is llguidance's to decide, not ours
            out = {k: v for k, v in s.items() if k != "propertyNames"}
            if props:
                low, high = _name_lengths(names)
                out["properties"] = {
                    k: (v if low <= len(k) and (high is None or len(k) <= high) else False) for k, v in props.items()
                }
            out["patternProperties"] = {regex: extra}
            out["additionalProperties"] = False
        self.note("propertyNames", path)
        return out

    def _any_string(self, schema: dict[str, Any]) -> bool:
        """True when every string satisfies ``schema`` (only type: string and annotations)."""
        for k, v in schema.items():
            if k not in _ASSERTIONS:
                continue
            if k == "type" and (v == "string" or (isinstance(v, list) and "string" in v)):
                continue
            return False
        return True

    def _add_constraints(self, s: dict[str, Any], pieces: Sequence[Any]) -> dict[str, Any]:
        pieces = [p for p in pieces if p is not True and p != {}]
        if not pieces:
            return s
        existing = s.get("allOf")
        s["allOf"] = (list(existing) if isinstance(existing, list) else []) + list(pieces)
        return s

    def _unique_items(self, s: dict[str, Any], path: tuple[str, ...], depth: int) -> dict[str, Any]:
        if s.get("uniqueItems") is not True or "prefixItems" in s or "contains" in s:
            return s
        items = s.get("items", True)
        if not isinstance(items, (dict, bool)):
            return s
        facts = self.facts(items, depth)
        if facts is None:
            return s
        if facts.values is not None:
            domain = [v for v in facts.values if _kind_of(v) in facts.kinds]
        elif facts.kinds <= {"null", "boolean"}:
            domain = ([None] if "null" in facts.kinds else []) + ([False, True] if "boolean" in facts.kinds else [])
        else:
            return s
        domain = _unique(domain)
        lo = _count(s.get("minItems")) or 0
        hi = _count(s.get("maxItems"))
        hi = len(domain) if hi is None else min(hi, len(domain))
        total = sum(math.perm(len(domain), m) for m in range(lo, hi + 1))
        if total > MAX_UNIQUE_ARRAYS:
            return s
        arrays = [list(p) for m in range(lo, hi + 1) for p in itertools.permutations(domain, m)]
        del s["uniqueItems"]
        self.note("uniqueItems over a finite domain", path)
        kinds = _type_kinds(s.get("type")) or _KINDS
        others = _type_value(kinds - {"array"}) if kinds - {"array"} else None
        piece = _any([{"type": others} if others else False, {"enum": arrays} if arrays else False])
        return self._add_constraints(s, [piece])

    def _dependencies(self, s: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        for key in ("dependentRequired", "dependentSchemas", "dependencies"):
            deps = s.get(key)
            if not isinstance(deps, dict) or not self._movable(path, key):
                continue
            pieces = []
            props = s.get("properties")
            order = list(props) if isinstance(props, dict) else []
            for name, dep in deps.items():
                piece = _dependency(name, dep, order)
                if piece is None:
                    break
                pieces.append(piece)
            else:
                del s[key]
                s = self._add_constraints(s, pieces)
                self.note(key, path)
        return s

    def _conditional(self, s: dict[str, Any], path: tuple[str, ...], depth: int) -> dict[str, Any]:
        if "if" not in s or not all(self._movable(path, k) for k in ("if", "then", "else")):
            return s
        cond, then, other = s["if"], s.get("then", True), s.get("else", True)
        if "then" not in s:
            piece = _any([cond, other])
        else:
            negated = self.complement(cond, depth)
            if negated is None:
                return s
            piece = _any([_all([cond, then]), _all([negated, other])]) if "else" in s else _any([negated, then])
        if _too_big(piece):
            return s
        for k in ("if", "then", "else"):
            s.pop(k, None)
        self.note("if/then/else", path)
        return self._add_constraints(s, [piece])

    def _negation(self, s: dict[str, Any], path: tuple[str, ...], depth: int) -> dict[str, Any]:
        if "not" not in s or not self._movable(path, "not"):
            return s
        negated = self.complement(s["not"], depth)
        if negated is None or _too_big(negated):
            return s
        del s["not"]
        self.note("not", path)
        return self._add_constraints(s, [negated])

    def _one_of(self, s: dict[str, Any], path: tuple[str, ...], depth: int) -> dict[str, Any]:
        branches = s.get("oneOf")
        if not isinstance(branches, list) or not branches or not self._movable(path, "oneOf"):
            return s
        if len(branches) > MAX_ANALYSED_BRANCHES:
            return s
        base = {k: v for k, v in s.items() if k != "oneOf"}
        facts = [self.facts({"allOf": [base, b]}, depth) for b in branches]
        n = len(branches)
        # Kinds that two branches accept whole: no value of such a kind is in exactly one branch.
        excluded: frozenset[str] = frozenset()
        guard: Any = True
        if n > 1 and all(f is not None for f in facts):
            known = [f for f in facts if f is not None]
            excluded = frozenset(k for k in _KINDS if sum(k in f.full for f in known) >= 2)
            if excluded:
                allowed = _KINDS - excluded
                t = _type_value(allowed) if allowed else None
                if allowed and t is None:
                    excluded = frozenset()  # the guard would need "non-integral numbers"
                else:
                    guard = {"type": t} if allowed else False
                    facts = [replace(f, kinds=f.kinds - excluded, full=f.full - excluded) for f in known]

        # For each ordered pair (i, j) that may overlap: what branch i must add to exclude branch j.
        exclusions: dict[tuple[int, int], Any] = {}
        complements: dict[int, Any] = {}
        for i in range(n):
            for j in range(n):
                fi, fj = facts[i], facts[j]
                if i == j:
                    continue
                if fi is not None and fj is not None:
                    kinds = _overlap(fi, fj, self, depth)
                    if not kinds:
                        continue
                    nonempty = self._only_empty_shared(kinds, fi, fj, branches[j], depth)
                    if nonempty is not None:
                        exclusions[(i, j)] = nonempty
                        continue
                if n > MAX_ONE_OF_BRANCHES:
                    return s
                if j not in complements:
                    c = self.complement(branches[j], depth)
                    if c is None:
                        return s
                    complements[j] = c
                exclusions[(i, j)] = complements[j]
        rewritten: list[Any] = [
            _all([branches[i]] + [exclusions[(i, j)] for j in range(n) if (i, j) in exclusions]) for i in range(n)
        ]
        if not exclusions:
            self.note("oneOf disjoint", path)
        else:
            if _too_big(rewritten):
                return s
            self.note("oneOf by complements", path)
        if excluded:
            self.note("oneOf kinds every branch accepts", path)
        if "anyOf" not in s:
            s = {("anyOf" if k == "oneOf" else k): (rewritten if k == "oneOf" else v) for k, v in s.items()}
            return self._add_constraints(s, [guard])
        del s["oneOf"]
        return self._add_constraints(s, [{"anyOf": rewritten}, guard])

    def _only_empty_shared(self, kinds: frozenset[str], fi: _Facts, fj: _Facts, other: Any, depth: int) -> Any:
        """What excludes branch ``other`` from branch ``fi`` when the two can share only ``{}``/``[]``.

        Two closed objects (``additionalProperties: false``, no ``patternProperties``) with no
        property name in common share at most the empty object; two arrays whose every item
        (``items``, no ``prefixItems``) must satisfy disjoint schemas share at most the empty array.
        When ``other`` accepts that empty value, branch ``fi`` must not be empty (hold one of its own
        properties, or an item); when it does not, nothing is needed. Each piece constrains only its
        kind. None: not this case.
        """
        pieces: list[Any] = []
        for kind in sorted(kinds):
            if kind == "object":
                if not (fi.closed and fj.closed) or set(fi.props) & set(fj.props):
                    return None
                not_empty: Any = _any([{"required": [name]} for name in fi.props])
            elif kind == "array":
                if fi.prefix or fj.prefix or not fi.item or not fj.item:
                    return None
                if not _disjoint_schemas(fi.item, fj.item, self, depth):
                    return None
                not_empty = {"minItems": 1}
            else:
                return None
            empty = self.accepts_empty(other, kind, depth)
            if empty is None:
                return None
            if empty:
                pieces.append(not_empty)
        return _all(pieces)

    def accepts_empty(self, schema: Any, kind: str, depth: int, hops: int = 0) -> bool | None:
        """Whether ``{}`` (``kind="object"``) or ``[]`` (``"array"``) is valid against ``schema``.

        None: not known.
        """
        if depth > MAX_DEPTH or hops > _REF_HOPS:
            return None
        if isinstance(schema, bool):
            return schema
        if not isinstance(schema, dict):
            return None
        kinds = _type_kinds(schema.get("type"))
        if kinds is None:
            return None
        empty: Any = {} if kind == "object" else []
        if kind not in kinds:
            return False
        if "const" in schema and schema["const"] != empty:
            return False
        if "enum" in schema and (not isinstance(schema["enum"], list) or empty not in schema["enum"]):
            return False
        if kind == "object" and (schema.get("required") or (_count(schema.get("minProperties")) or 0) > 0):
            return False
        if kind == "array" and (_count(schema.get("minItems")) or 0) > 0:
            return False
        if kind == "array" and "contains" in schema and _count(schema.get("minContains", 1)) != 0:
            return None  # contains with minContains 1 (or malformed): left unknown
        verdicts: list[bool | None] = []
        for key, value in schema.items():
            if key == "allOf" and isinstance(value, list):
                verdicts.extend(self.accepts_empty(m, kind, depth + 1, hops) for m in value)
            elif key in ("anyOf", "oneOf") and isinstance(value, list):
                each = [self.accepts_empty(m, kind, depth + 1, hops) for m in value]
                if None in each:
                    return None
                verdicts.append(any(each) if key == "anyOf" else sum(bool(e) for e in each) == 1)
            elif key == "not":
                inner = self.accepts_empty(value, kind, depth + 1, hops)
                verdicts.append(None if inner is None else not inner)
            elif key == "$ref":
                resolved = self.resolve(value, depth)
                verdicts.append(None if resolved is None else self.accepts_empty(resolved[1], kind, depth + 1, hops + 1))
            elif key in ("if", "then", "else", "$dynamicRef", "$recursiveRef"):
                return None
            elif key in _ASSERTIONS and key not in _CONSTRAINS and key not in (
                "type", "enum", "const", "$id", "id", "$schema", "$vocabulary", "$anchor", "$dynamicAnchor",
                "$recursiveAnchor",
            ):  # fmt: skip
                return None
        if any(v is False for v in verdicts):
            return False
        return None if any(v is None for v in verdicts) else True

    # -- facts
    def facts(self, schema: Any, depth: int, hops: int = 0) -> _Facts | None:
        """A conservative summary of ``schema`` (None: nothing known, e.g. cyclic refs)."""
        if depth > MAX_DEPTH or hops > _REF_HOPS:
            return None
        if schema is True:
            return _Facts()
        if schema is False:
            return _Facts(kinds=frozenset(), full=frozenset())
        if not isinstance(schema, dict):
            return None
        # Facts are sound whatever depth or hops they were computed at, so one per object will do
        # (the object is kept with them, so its id is not reused).
        cached = self._facts.get(id(schema))
        if cached is not None and cached[0] is schema:
            return cached[1]
        f = self._compute_facts(schema, depth, hops)
        self._facts[id(schema)] = (schema, f)
        return f

    def facts_of_all(self, schemas: list[Any], depth: int) -> _Facts | None:
        """:meth:`facts` of the conjunction of ``schemas`` (cached by the objects)."""
        key = tuple(id(x) for x in schemas)
        cached = self._facts_all.get(key)
        if cached is not None and all(a is b for a, b in zip(cached[0], schemas)):
            return cached[1]
        f = self.facts({"allOf": list(schemas)}, depth)
        self._facts_all[key] = (list(schemas), f)
        return f

    def _compute_facts(self, schema: dict[str, Any], depth: int, hops: int) -> _Facts | None:
        self.work += 1
        if self.work > MAX_WORK:
            return None
        f = _Facts()
        kinds = _type_kinds(schema.get("type"))
        if kinds is None:
            return None
        f.kinds = kinds
        full = set(kinds)
        for key in schema:
            if key in _CONSTRAINS:
                full -= _CONSTRAINS[key]
            elif key in _OPAQUE:
                full.clear()
        f.full = frozenset(full)
        values: list[Any] | None = None
        if "const" in schema:
            values = [schema["const"]]
        if isinstance(schema.get("enum"), list):
            enum = schema["enum"]
            values = enum if values is None else [v for v in values if _key(v) in {_key(e) for e in enum}]
        if values is not None:
            f.values = _unique(v for v in values if _kind_of(v) in kinds)
            f.kinds = kinds & frozenset(_kind_of(v) for v in f.values)
            f.full = frozenset()
        req = schema.get("required")
        if isinstance(req, list) and all(isinstance(r, str) for r in req):
            f.required = frozenset(req)
        props = schema.get("properties")
        if isinstance(props, dict):
            f.props = {k: [v] for k, v in props.items()}
        if schema.get("additionalProperties") is False and not schema.get("patternProperties"):
            f.closed = True
        lo = _num(schema.get("minimum"))
        xlo = _num(schema.get("exclusiveMinimum"))
        hi = _num(schema.get("maximum"))
        xhi = _num(schema.get("exclusiveMaximum"))
        low = _tighter_low((lo, False), (xlo, xlo is not None))
        high = _tighter_high((hi, False), (xhi, xhi is not None))
        f.num = (low[0], low[1], high[0], high[1])
        f.length = (_count(schema.get("minLength")) or 0, _count(schema.get("maxLength")))
        f.items = (_count(schema.get("minItems")) or 0, _count(schema.get("maxItems")))
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            f.prefix = {i: [p] for i, p in enumerate(prefix)}
        elif isinstance(schema.get("items"), (dict, bool)):
            f.item = [schema["items"]]  # every item (2020-12, and drafts before it without a tuple)
        for member in schema.get("allOf", []) if isinstance(schema.get("allOf"), list) else []:
            g = self.facts(member, depth + 1, hops)
            if g is not None:
                f = f.merge(g)
            else:
                f.full = frozenset()
        if "$ref" in schema:
            resolved = self.resolve(schema["$ref"], depth)
            g = None if resolved is None else self.facts(resolved[1], depth + 1, hops + 1)
            if g is not None:
                f = f.merge(g)
            else:
                f.full = frozenset()
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                union = [self.facts(o, depth + 1, hops) for o in options]
                if all(u is not None for u in union):
                    f = f.merge(_union([u for u in union if u is not None], exclusive=key == "oneOf"))
                else:
                    f.full = frozenset()
        return f

    # -- complements
    def complement(self, schema: Any, depth: int, hops: int = 0) -> Any:
        """An exact complement of ``schema`` (a schema), or None when there is none we can write."""
        self.work += 1
        if depth > MAX_DEPTH or hops > _REF_HOPS or self.work > MAX_WORK:
            return None
        if schema is True or schema == {}:
            return False
        if schema is False:
            return True
        if not isinstance(schema, dict):
            return None
        if any(isinstance(schema.get(k), str) for k in ("$id", "id", *_IDENTIFIERS)):
            return None  # an embedded resource or anchor: its references would move
        pieces: list[Any] = []
        base = self._complement_base(schema, depth)
        if base is None:
            return None
        pieces.append(base)
        for key in ("allOf", "anyOf", "oneOf"):
            if key not in schema:
                continue
            members = schema[key]
            if not isinstance(members, list) or not members:
                return None
            negated = [self.complement(m, depth + 1, hops) for m in members]
            if any(n is None for n in negated):
                return None
            if key == "allOf":
                pieces.extend(negated)
            elif key == "anyOf":
                pieces.append(_all(negated))
            else:
                if len(members) > 4:
                    return None
                pairs = [_all([a, b]) for a, b in itertools.combinations(members, 2)]
                pieces.append(_any([_all(negated)] + pairs))
        if "not" in schema:
            pieces.append(schema["not"])
        if "if" in schema and ("then" in schema or "else" in schema):
            cond = schema["if"]
            if "then" in schema:
                nt = self.complement(schema["then"], depth + 1, hops)
                if nt is None:
                    return None
                pieces.append(_all([cond, nt]))
            if "else" in schema:
                nc = self.complement(cond, depth + 1, hops)
                ne = self.complement(schema["else"], depth + 1, hops)
                if nc is None or ne is None:
                    return None
                pieces.append(_all([nc, ne]))
        if "$ref" in schema:
            resolved = self.resolve(schema["$ref"], depth)
            if resolved is None:
                return None
            negated = self.complement(resolved[1], depth + 1, hops + 1)
            if negated is None:
                return None
            pieces.append(negated)
        return _any(pieces)

    def _complement_base(self, s: dict[str, Any], depth: int) -> Any:
        """The complement of ``s``'s non-applicator keywords (type, values, per-kind bounds)."""
        kinds = _type_kinds(s.get("type"))
        if kinds is None:
            return None
        pieces: list[Any] = []
        values: list[Any] | None = None
        if "const" in s:
            values = [s["const"]]
        if "enum" in s:
            if not isinstance(s["enum"], list):
                return None
            keys = {_key(e) for e in s["enum"]}
            values = list(s["enum"]) if values is None else [v for v in values if _key(v) in keys]
        if values is not None:
            values = _unique(v for v in values if _kind_of(v) in kinds)
            if not values:
                return True  # no value at all satisfies the schema
            complement = _complement_values(values)
            if complement is None:
                return None
            pieces.append(complement)
            kinds = frozenset(_kind_of(v) for v in values)
        else:
            others = _KINDS - kinds
            if others:
                t = _type_value(others)
                if t is None:
                    return None  # the complement holds the non-integral numbers: no llguidance form
                pieces.append({"type": t})
        handled = {"type", "enum", "const", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$ref"}
        handled |= {"$schema", "$vocabulary"}
        for key, value in s.items():
            if key in handled or key not in _ASSERTIONS:
                continue
            piece = _complement_keyword(key, value, s, kinds, self, depth + 1)
            if piece is None:
                return None
            pieces.append(piece)
        return _any(pieces)


def _children(node: dict[str, Any], path: tuple[str, ...]) -> Iterable[tuple[Any, tuple[str, ...]]]:
    for key, value in node.items():
        if key in _SINGLE or (key == "items" and isinstance(value, dict)):
            yield value, path + (key,)
        elif key in _MAPS and isinstance(value, dict):
            for k, v in value.items():
                yield v, path + (key, k)
        elif (key in _LISTS or key == "items") and isinstance(value, list):
            for i, v in enumerate(value):
                yield v, path + (key, str(i))
        elif key == "dependencies" and isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, dict):
                    yield v, path + (key, k)


# Keywords whose values are data, never schemas.
_DATA_KEYWORDS = frozenset({"default", "examples", "example", "x-guidance", "enum", "const", "$comment"})

_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly",
     "markdownDescription"}
)  # fmt: skip


def _name_lengths(names: Any) -> tuple[int, int | None]:
    if not isinstance(names, dict):
        return 0, None
    return _count(names.get("minLength")) or 0, _count(names.get("maxLength"))


def _name_constraint(names: Any) -> tuple[list[str] | None, str | None] | None:
    """A ``propertyNames`` schema as (the finite list of names, None) or (None, a name regex)."""
    if not isinstance(names, dict):
        return None
    keys = set(names) - _ANNOTATIONS
    if not keys <= {"type", "const", "enum", "pattern", "minLength", "maxLength"}:
        return None
    t = names.get("type", "string")
    if not (t == "string" or (isinstance(t, list) and "string" in t)):
        return None
    low, high = _name_lengths(names)
    if ("minLength" in names and _count(names["minLength"]) is None) or (
        "maxLength" in names and _count(names["maxLength"]) is None
    ):
        return None
    if "const" in names or "enum" in names:
        if "pattern" in names:
            return None
        values = [names["const"]] if "const" in names else names["enum"]
        if not isinstance(values, list):
            return None
        if "const" in names and "enum" in names:
            values = [v for v in values if isinstance(names["enum"], list) and v in names["enum"]]
        fits = [v for v in values if isinstance(v, str) and low <= len(v) and (high is None or len(v) <= high)]
        return _unique(fits), None
    if "pattern" in names:
        if "minLength" in names or "maxLength" in names or not isinstance(names["pattern"], str):
            return None
        return None, names["pattern"]
    if "minLength" not in names and "maxLength" not in names:
        return None
    upper = "" if high is None else str(high)
    return None, f"^{ANY_CHAR}{{{low},{upper}}}$"


def _is_false(schema: Any) -> bool:
    if schema is False:
        return True
    members = schema.get("allOf") if isinstance(schema, dict) else None
    return isinstance(members, list) and any(m is False for m in members)


def _too_big(schema: Any, limit: int = MAX_COMPLEMENT_CHARS) -> bool:
    """Whether ``schema`` serialises to more than about ``limit`` characters.

    Counted by walking it with an early stop: rewritten schemas share subschemas, and their
    serialisation can be far larger than the objects in memory.
    """
    size = 0
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            size += 2 + sum(len(k) + 4 for k in node)
            stack.extend(node.values())
        elif isinstance(node, list):
            size += 2 + len(node)
            stack.extend(node)
        elif isinstance(node, str):
            size += len(node) + 2
        else:
            size += 5
        if size > limit:
            return True
    return False


def _dependency(name: str, dep: Any, order: Sequence[str]) -> Any:
    """The constraint of one dependency: absent ``name``, or present with what it requires.

    The ``required`` list follows ``order`` (the node's ``properties``), then the dependencies, then
    ``name``: llguidance emits required keys that ``properties`` does not list in this order.
    """
    absent = {"properties": {name: False}}
    if isinstance(dep, list):
        if not all(isinstance(d, str) for d in dep):
            return None
        if not dep:
            return True
        names = _unique([*dep, name])
        rank = {k: i for i, k in enumerate(order)}
        names.sort(key=lambda k: rank.get(k, len(rank)))
        return _any([absent, {"required": names}])
    if dep is True or dep == {}:
        return True
    if dep is False:
        return absent
    if isinstance(dep, dict):
        return _any([absent, _all([{"required": [name]}, dep])])
    return None


def _union(facts: Sequence[_Facts], exclusive: bool = False) -> _Facts:
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
    return _Facts(
        kinds=kinds,
        full=frozenset() if exclusive else full,
        values=None if values is None else _unique(values),
        required=required,
    )


def _numeric_disjoint(a: _Facts, b: _Facts) -> bool:
    lo, lx = _tighter_low((a.num[0], a.num[1]), (b.num[0], b.num[1]))
    hi, hx = _tighter_high((a.num[2], a.num[3]), (b.num[2], b.num[3]))
    if lo is None or hi is None:
        return False
    return lo > hi or (lo == hi and (lx or hx))


def _property_facts(f: _Facts, key: str, rw: _Rewriter, depth: int) -> _Facts | None:
    schemas = f.props.get(key)
    if schemas is None:
        return _Facts(kinds=frozenset()) if f.closed else _Facts()
    return rw.facts_of_all(schemas, depth + 1)


def _disjoint(a: _Facts, b: _Facts, rw: _Rewriter, depth: int) -> bool:
    """True only when no instance satisfies both (a proof, never a guess)."""
    return not _overlap(a, b, rw, depth)


def _overlap(a: _Facts, b: _Facts, rw: _Rewriter, depth: int) -> frozenset[str]:
    """The kinds on which ``a`` and ``b`` are not proven disjoint."""
    if depth > MAX_DEPTH:
        return a.kinds & b.kinds
    common = a.kinds & b.kinds
    if not common:
        return common
    if a.values is not None and b.values is not None:
        keys = {_key(v) for v in a.values if _kind_of(v) in common}
        return frozenset(_kind_of(v) for v in b.values if _kind_of(v) in common and _key(v) in keys)
    out = set()
    for kind in common:
        if kind in ("integer", "fraction"):
            if not _numeric_disjoint(a, b):
                out.add(kind)
        elif kind == "string":
            if not _ranges_disjoint(a.length, b.length):
                out.add(kind)
        elif kind == "array":
            if _ranges_disjoint(a.items, b.items):
                continue
            # every common instance has the items below the larger minItems
            present = range(max(a.items[0], b.items[0]))
            if not any(
                i in a.prefix and i in b.prefix and _disjoint_schemas(a.prefix[i], b.prefix[i], rw, depth)
                for i in present
            ):
                out.add(kind)
        elif kind == "object":
            for key in sorted(a.required | b.required):
                fa = _property_facts(a, key, rw, depth)
                fb = _property_facts(b, key, rw, depth)
                if fa is not None and fb is not None and _disjoint(fa, fb, rw, depth + 1):
                    break
            else:
                out.add(kind)
        else:
            out.add(kind)
    return frozenset(out)


def _disjoint_schemas(a: list[Any], b: list[Any], rw: _Rewriter, depth: int) -> bool:
    fa = rw.facts_of_all(a, depth + 1)
    fb = rw.facts_of_all(b, depth + 1)
    return fa is not None and fb is not None and _disjoint(fa, fb, rw, depth + 1)


def _complement_values(values: list[Any], depth: int = 0) -> Any:
    """The complement of a finite set of values, or None (numbers llguidance cannot bound exactly)."""
    if depth > _CONST_DEPTH:
        return None
    by_kind: dict[str, list[Any]] = {}
    for v in values:
        k = _kind_of(v)
        by_kind.setdefault("number" if k in ("integer", "fraction") else k, []).append(v)
    pieces: list[Any] = []
    whole = [k for k in ("null", "boolean", "number", "string", "array", "object") if k not in by_kind]
    if whole:
        pieces.append({"type": whole[0] if len(whole) == 1 else whole})
    for kind, members in by_kind.items():
        if kind == "null":
            continue
        if kind == "boolean":
            rest = [b for b in (False, True) if all(m is not b for m in members)]
            if rest:
                pieces.append({"const": rest[0]})
        elif kind == "string":
            pieces.append({"type": "string", "pattern": complement_words(members)})
        elif kind == "number":
            cuts = sorted(_unique(members), key=Fraction)
            if any(not _plain_number(c) for c in cuts):
                return None
            pieces.append({"type": "number", "exclusiveMaximum": cuts[0]})
            for lo, hi in zip(cuts, cuts[1:]):
                pieces.append({"type": "number", "exclusiveMinimum": lo, "exclusiveMaximum": hi})
            pieces.append({"type": "number", "exclusiveMinimum": cuts[-1]})
        else:
            # arrays or objects: the kind minus each member, i.e. the intersection of "differs from m"
            differs = [(_array_differs if kind == "array" else _object_differs)(m, depth + 1) for m in members]
            if any(d is None for d in differs):
                return None
            pieces.append(_all([{"type": kind}, *differs]))
    return _any(pieces)


_CONST_DEPTH = 8


def _array_differs(value: list[Any], depth: int) -> Any:
    """Arrays different from ``value``: another length, or another item at some position."""
    n = len(value)
    pieces: list[Any] = [{"type": "array", "maxItems": n - 1}] if n else []
    pieces.append({"type": "array", "minItems": n + 1})
    for i, item in enumerate(value):
        other = _complement_values([item], depth)
        if other is None:
            return None
        pieces.append({"type": "array", "minItems": i + 1, "prefixItems": [True] * i + [other]})
    return _any(pieces)


def _object_differs(value: dict[str, Any], depth: int) -> Any:
    """Objects different from ``value``: a key missing, a key more, or another value for a key."""
    pieces: list[Any] = [{"type": "object", "properties": {k: False}} for k in value]
    pieces.append({"type": "object", "minProperties": len(value) + 1})
    for k, item in value.items():
        other = _complement_values([item], depth)
        if other is None:
            return None
        pieces.append({"type": "object", "required": [k], "properties": {k: other}})
    return _any(pieces)


def _plain_number(v: Any) -> bool:
    """A bound llguidance reads exactly: finite, written without an exponent, not too long."""
    if isinstance(v, float) and not math.isfinite(v):
        return False
    text = json.dumps(v)
    return "e" not in text.lower() and len(text) <= 24


def _complement_keyword(
    key: str, value: Any, s: dict[str, Any], kinds: frozenset[str], rw: _Rewriter, depth: int
) -> Any:
    """The complement of one keyword (false on the kinds it does not apply to), or None."""
    number_type = "number" if "fraction" in kinds else "integer"
    numeric = bool(kinds & {"integer", "fraction"})
    if key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if not numeric:
            return False
        if not _is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
            return None
        flip = {
            "minimum": "exclusiveMaximum",
            "maximum": "exclusiveMinimum",
            "exclusiveMinimum": "maximum",
            "exclusiveMaximum": "minimum",
        }[key]
        return {"type": number_type, flip: value}
    if key == "multipleOf":
        return False if not numeric else None
    if key in ("minLength", "maxLength", "pattern", "format"):
        if "string" not in kinds:
            return False
        n = _count(value)
        if key == "minLength" and n is not None:
            return False if n == 0 else {"type": "string", "maxLength": n - 1}
        if key == "maxLength" and n is not None:
            return {"type": "string", "minLength": n + 1}
        if key == "pattern" and isinstance(value, str):
            other = complement_pattern(value)
            return None if other is None else {"type": "string", "pattern": other}
        return None
    if key in ("minItems", "maxItems", "uniqueItems", "items", "prefixItems", "additionalItems", "contains",
               "minContains", "maxContains", "unevaluatedItems"):  # fmt: skip
        if "array" not in kinds:
            return False
        n = _count(value)
        if key == "minItems" and n is not None:
            return False if n == 0 else {"type": "array", "maxItems": n - 1}
        if key == "maxItems" and n is not None:
            return {"type": "array", "minItems": n + 1}
        if key == "uniqueItems" and value is False:
            return False
        if key == "prefixItems" and isinstance(value, list):
            pieces = []
            for i, p in enumerate(value):
                np_ = rw.complement(p, depth)
                if np_ is None:
                    return None
                if np_ is not False:
                    pieces.append({"type": "array", "minItems": i + 1, "prefixItems": [True] * i + [np_]})
            return _any(pieces)
        if key == "items" and isinstance(value, (dict, bool)):
            if value is True or value == {}:
                return False
            if value is False:
                prefix = s.get("prefixItems")
                k = len(prefix) if isinstance(prefix, list) else 0
                return {"type": "array", "minItems": k + 1}
            return None
        if key in ("minContains", "maxContains") and "contains" not in s:
            return False
        return None
    if key in ("required", "properties", "minProperties", "maxProperties", "additionalProperties",
               "patternProperties", "propertyNames", "dependentRequired", "dependentSchemas", "dependencies",
               "unevaluatedProperties"):  # fmt: skip
        if "object" not in kinds:
            return False
        n = _count(value)
        if key == "minProperties" and n is not None:
            return False if n == 0 else {"type": "object", "maxProperties": n - 1}
        if key == "maxProperties" and n is not None:
            return {"type": "object", "minProperties": n + 1}
        if key == "required" and isinstance(value, list) and all(isinstance(r, str) for r in value):
            return _any([{"type": "object", "properties": {r: False}} for r in value])
        if key == "properties" and isinstance(value, dict):
            pieces = []
            for name, sub in value.items():
                ns = rw.complement(sub, depth)
                if ns is None:
                    return None
                if ns is not False:
                    pieces.append({"type": "object", "required": [name], "properties": {name: ns}})
            return _any(pieces)
        if key == "additionalProperties":
            if value is True or value == {}:
                return False
            if value is False and not s.get("properties") and not s.get("patternProperties"):
                return {"type": "object", "minProperties": 1}
            return None
        if key == "patternProperties" and isinstance(value, dict) and all(v is True or v == {} for v in value.values()):
            return False
        if key in ("dependentRequired", "dependentSchemas", "dependencies") and isinstance(value, dict):
            pieces = []
            for name, dep in value.items():
                if isinstance(dep, list) and all(isinstance(d, str) for d in dep):
                    pieces.extend(
                        {"type": "object", "required": [name], "properties": {d: False}} for d in dep if d != name
                    )
                elif key != "dependentRequired":
                    nd = rw.complement(dep, depth)
                    if nd is None:
                        return None
                    if nd is not False:
                        pieces.append(_all([{"type": "object", "required": [name]}, nd]))
                else:
                    return None
            return _any(pieces)
        return None
    return None  # an assertion we do not complement ($id, propertyNames, ...)

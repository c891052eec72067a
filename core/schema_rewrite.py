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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from core.schema_analysis import SchemaAnalysis
from core.schema_facts import Facts, disjoint, disjoint_schemas, overlap
from core.schema_formats import DEFAULT_FORMAT_MODE, FormatMode, rewrite_format
from core.schema_keywords import (
    ANNOTATIONS,
    ASSERTIONS,
    COUNT_KEYS,
    KINDS,
    LISTS,
    MAPS,
    MAX_COMPLEMENT_CHARS,
    MAX_DEPTH,
    REF_HOPS,
    SINGLE,
    all_of,
    any_of,
    count_value,
    is_false,
    json_pointer,
    kind_of,
    serialised_size,
    too_big,
    type_kinds,
    type_value,
    unique_values,
)
from core.schema_regex import ANY_CHAR

__all__ = ["MAX_UNIQUE_ARRAYS", "RewriteReport", "rewrite_schema", "rewrite_schema_report"]

#: Most arrays a ``uniqueItems`` rewrite may enumerate.
MAX_UNIQUE_ARRAYS = 256
#: Most sets of present optional properties a ``minProperties``/``maxProperties`` rewrite may list.
MAX_PROPERTY_SETS = 256
#: Most branches of a ``oneOf`` rewritten with complements (each may need n - 1 complements).
MAX_ONE_OF_BRANCHES = 12
#: Most branches of a ``oneOf`` the rewriter analyses at all (pairs grow as the square).
MAX_ANALYSED_BRANCHES = 64


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
    if rewriter.notes and too_big(out, 4 * serialised_size(schema) + MAX_COMPLEMENT_CHARS):
        # Rewrites multiply in nested structures: past this size, only the formats are rewritten.
        rewriter = _Rewriter(schema, formats, formats_only=True)
        out = rewriter.rewrite(schema, (), 0)
        return out, RewriteReport(["too large to rewrite: #", *rewriter.notes], rewriter.ignored)
    return out, RewriteReport(rewriter.notes, rewriter.ignored)


# ---------------------------------------------------------------------------------------------
# the rewriter


class _Rewriter(SchemaAnalysis):
    def __init__(self, root: Mapping[str, Any], formats: FormatMode, formats_only: bool = False) -> None:
        super().__init__(root)
        self.formats = formats
        self.formats_only = formats_only
        self.notes: list[str] = []
        self.ignored: list[str] = []
        self.memo: dict[tuple[str, ...], Any] = {}


    def note(self, kind: str, path: tuple[str, ...]) -> None:
        self.notes.append(f"{kind}: {json_pointer(path)}")


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
        if key in SINGLE or (key == "items" and isinstance(value, dict)):
            return self.rewrite(value, path + (key,), depth + 1)
        if key in MAPS and isinstance(value, dict):
            return {k: self.rewrite(v, path + (key, k), depth + 1) for k, v in value.items()}
        if (key in LISTS or key == "items") and isinstance(value, list):
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
        if not is_false(resolved[1]):
            facts = self.facts(resolved[1], depth + 1)
            if facts is None or facts.kinds:
                return s
        self.note("$ref to false", path)
        return False

    # -- local rewrites (each takes and returns a fresh dict it may modify)
    def _format(self, s: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        out, ignored = rewrite_format(s, self.formats)
        if ignored is not None:
            self.ignored.append(f"format {json.dumps(ignored, ensure_ascii=False)} at {json_pointer(path)}")
            self.note("format as annotation", path)
        elif out is not s:
            self.note(f"format {s['format']}", path)
        return out

    def _counts(self, s: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        for key in COUNT_KEYS:
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
        if "contains" in s and "maxContains" not in s and count_value(s.get("minContains")) == 0:
            s = self._drop(s, path, ["contains", "minContains"], "contains with minContains 0")
        unique = s.get("uniqueItems")
        max_items = count_value(s.get("maxItems"))
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
        low, high = count_value(s.get("minProperties")), count_value(s.get("maxProperties"))
        props = s.get("properties")
        if (low is None and high is None) or not isinstance(props, dict) or not self._movable(path, "properties"):
            return s
        required = s.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            return s
        optional = [k for k, v in props.items() if k not in required and v is not False]
        if not optional or any(k in s and count_value(s[k]) is None for k in ("minProperties", "maxProperties")):
            return s
        closed = s.get("additionalProperties") is False and not s.get("patternProperties")
        lo, hi = low or 0, len(optional) if high is None else high
        if closed:
            base = len(unique_values([r for r in required if props.get(r, False) is not False]))
            if any(r not in props for r in required):
                return s  # a required name the object cannot hold: llguidance says so itself
            sizes = [n for n in range(len(optional) + 1) if lo <= base + n <= hi]
        else:
            sizes = list(range(len(optional) + 1))
        total = 0
        for n in sizes:  # counted with an early stop: thousands of optional properties cost nothing
            total += math.comb(len(optional), n) if n <= 8 or len(optional) - n <= 8 else MAX_PROPERTY_SETS + 1
            if total > MAX_PROPERTY_SETS:
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
        # no allowed set: no object fits, while every other kind of value still does
        return self._add_constraints(out, [any_of(branches) if branches else {"type": type_value(KINDS - {"object"})}])

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
        if depth > MAX_DEPTH or hops > REF_HOPS:
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
        if isinstance(names, dict) and "$ref" in names and not set(names) - {"$ref", *ANNOTATIONS}:
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
            if k not in ASSERTIONS:
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
            domain = [v for v in facts.values if kind_of(v) in facts.kinds]
        elif facts.kinds <= {"null", "boolean"}:
            domain = ([None] if "null" in facts.kinds else []) + ([False, True] if "boolean" in facts.kinds else [])
        else:
            return s
        domain = unique_values(domain)
        lo = count_value(s.get("minItems")) or 0
        hi = count_value(s.get("maxItems"))
        hi = len(domain) if hi is None else min(hi, len(domain))
        total = sum(math.perm(len(domain), m) for m in range(lo, hi + 1))
        if total > MAX_UNIQUE_ARRAYS:
            return s
        arrays = [list(p) for m in range(lo, hi + 1) for p in itertools.permutations(domain, m)]
        del s["uniqueItems"]
        self.note("uniqueItems over a finite domain", path)
        kinds = type_kinds(s.get("type")) or KINDS
        others = type_value(kinds - {"array"}) if kinds - {"array"} else None
        piece = any_of([{"type": others} if others else False, {"enum": arrays} if arrays else False])
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
            piece = any_of([cond, other])
        else:
            negated = self.complement(cond, depth)
            if negated is None:
                return s
            piece = any_of([all_of([cond, then]), all_of([negated, other])]) if "else" in s else any_of([negated, then])
        if too_big(piece):
            return s
        for k in ("if", "then", "else"):
            s.pop(k, None)
        self.note("if/then/else", path)
        return self._add_constraints(s, [piece])

    def _negation(self, s: dict[str, Any], path: tuple[str, ...], depth: int) -> dict[str, Any]:
        if "not" not in s or not self._movable(path, "not"):
            return s
        negated = self.complement(s["not"], depth)
        if negated is None or too_big(negated):
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
            excluded = frozenset(k for k in KINDS if sum(k in f.full for f in known) >= 2)
            if excluded:
                allowed = KINDS - excluded
                t = type_value(allowed) if allowed else None
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
                    kinds = overlap(fi, fj, self, depth)
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
            all_of([branches[i]] + [exclusions[(i, j)] for j in range(n) if (i, j) in exclusions]) for i in range(n)
        ]
        if not exclusions:
            self.note("oneOf disjoint", path)
        else:
            if too_big(rewritten):
                return s
            self.note("oneOf by complements", path)
        if excluded:
            self.note("oneOf kinds every branch accepts", path)
        if "anyOf" not in s:
            s = {("anyOf" if k == "oneOf" else k): (rewritten if k == "oneOf" else v) for k, v in s.items()}
            return self._add_constraints(s, [guard])
        del s["oneOf"]
        return self._add_constraints(s, [{"anyOf": rewritten}, guard])

    def _only_empty_shared(self, kinds: frozenset[str], fi: Facts, fj: Facts, other: Any, depth: int) -> Any:
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
                not_empty: Any = any_of([{"required": [name]} for name in fi.props])
            elif kind == "array":
                if fi.prefix or fj.prefix or not fi.item or not fj.item:
                    return None
                if not disjoint_schemas(fi.item, fj.item, self, depth):
                    return None
                not_empty = {"minItems": 1}
            else:
                return None
            empty = self.accepts_empty(other, kind, depth)
            if empty is None:
                return None
            if empty:
                pieces.append(not_empty)
        return all_of(pieces)


def _name_lengths(names: Any) -> tuple[int, int | None]:
    if not isinstance(names, dict):
        return 0, None
    return count_value(names.get("minLength")) or 0, count_value(names.get("maxLength"))


def _name_constraint(names: Any) -> tuple[list[str] | None, str | None] | None:
    """A ``propertyNames`` schema as (the finite list of names, None) or (None, a name regex)."""
    if not isinstance(names, dict):
        return None
    keys = set(names) - ANNOTATIONS
    if not keys <= {"type", "const", "enum", "pattern", "minLength", "maxLength"}:
        return None
    t = names.get("type", "string")
    if not (t == "string" or (isinstance(t, list) and "string" in t)):
        return None
    low, high = _name_lengths(names)
    if ("minLength" in names and count_value(names["minLength"]) is None) or (
        "maxLength" in names and count_value(names["maxLength"]) is None
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
        return unique_values(fits), None
    if "pattern" in names:
        if "minLength" in names or "maxLength" in names or not isinstance(names["pattern"], str):
            return None
        return None, names["pattern"]
    if "minLength" not in names and "maxLength" not in names:
        return None
    upper = "" if high is None else str(high)
    return None, f"^{ANY_CHAR}{{{low},{upper}}}$"


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
        names = unique_values([*dep, name])
        rank = {k: i for i, k in enumerate(order)}
        names.sort(key=lambda k: rank.get(k, len(rank)))
        return any_of([absent, {"required": names}])
    if dep is True or dep == {}:
        return True
    if dep is False:
        return absent
    if isinstance(dep, dict):
        return any_of([absent, all_of([{"required": [name]}, dep])])
    return None



"""The analysis the schema rewrites rest on: facts and complements of the subschemas of a document.

:class:`Analysis` resolves local references (reading the referenced schema as the rewrite sees it),
decides whether ``{}``/``[]`` are accepted, and computes facts (:mod:`core.jsonschema.facts`) and
exact complements (:mod:`core.jsonschema.complements`) of subschemas, within the work budget of
:class:`~core.limits.Limits` (``max_rewrite_work``) so that a hostile schema costs bounded time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from core.jsonschema.build import all_of, any_of
from core.jsonschema.complements import complement_keyword, complement_values
from core.jsonschema.facts import Facts, tighter_high, tighter_low, union_facts
from core.jsonschema.keywords import (
    ASSERTIONS,
    CONSTRAINS,
    IDENTIFIERS,
    KINDS,
    OPAQUE,
    type_kinds,
    type_value,
)
from core.jsonschema.refs import Path, References
from core.jsonschema.values import count_value, kind_of, number_value, unique_values, value_key
from core.limits import Limits

__all__ = ["Analysis", "Reader"]

#: How a referenced schema is read: ``(schema, its path, depth) -> the schema as the analysis
#: should see it``, or None while that location is being rewritten (a cycle).
Reader = Callable[[Any, Path, int], Any]


def _as_written(node: Any, path: Path, depth: int) -> Any:
    return node


class Analysis:
    """Facts and complements of the subschemas of one document, under a work budget.

    Attributes:
        refs: the document's references.
        limits: the bounds (``max_rewrite_depth``, ``max_rewrite_ref_hops``, ``max_rewrite_work``
            and the complement bounds).
        work: analysis steps taken so far.
    """

    def __init__(self, refs: References, limits: Limits, read: Reader = _as_written) -> None:
        """An analysis of ``refs.root``; ``read`` gives referenced schemas (default: as written)."""
        self.refs = refs
        self.limits = limits
        self._read = read
        self._facts: dict[int, tuple[Any, Facts | None]] = {}
        self._facts_all: dict[tuple[int, ...], tuple[list[Any], Facts | None]] = {}
        self.work = 0
        self._max_depth = limits.max_rewrite_depth
        self._max_hops = limits.max_rewrite_ref_hops

    def too_deep(self, depth: int, hops: int = 0) -> bool:
        """Whether ``depth`` levels and ``hops`` references are past the bounds of the limits."""
        return depth > self._max_depth or hops > self._max_hops

    # -- references
    def resolve(self, ref: Any, depth: int) -> tuple[Path, Any] | None:
        """The target of a local ``$ref`` as read, and its path; None (unknown or cyclic)."""
        if not isinstance(ref, str) or not self.refs.structural:
            return None
        path = self.refs.pointer_path(ref)
        if path is None:
            return None
        target = self.refs.at(path)
        if target is None:
            return None
        read = self._read(target, path, depth + 1)
        return None if read is None else (path, read)

    def accepts_empty(self, schema: Any, kind: str, depth: int, hops: int = 0) -> bool | None:
        """Whether ``{}`` (``kind="object"``) or ``[]`` (``"array"``) is valid against ``schema``.

        None: not known.
        """
        if self.too_deep(depth, hops):
            return None
        if isinstance(schema, bool):
            return schema
        if not isinstance(schema, dict):
            return None
        kinds = type_kinds(schema.get("type"))
        if kinds is None:
            return None
        empty: Any = {} if kind == "object" else []
        if kind not in kinds:
            return False
        if "const" in schema and schema["const"] != empty:
            return False
        if "enum" in schema and (not isinstance(schema["enum"], list) or empty not in schema["enum"]):
            return False
        if kind == "object" and (schema.get("required") or (count_value(schema.get("minProperties")) or 0) > 0):
            return False
        if kind == "array" and (count_value(schema.get("minItems")) or 0) > 0:
            return False
        if kind == "array" and "contains" in schema and count_value(schema.get("minContains", 1)) != 0:
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
                target = None if resolved is None else self.accepts_empty(resolved[1], kind, depth + 1, hops + 1)
                verdicts.append(target)
            elif key in ("if", "then", "else", "$dynamicRef", "$recursiveRef"):
                return None
            elif key in ASSERTIONS and key not in CONSTRAINS and key not in (
                "type", "enum", "const", "$id", "id", "$schema", "$vocabulary", "$anchor", "$dynamicAnchor",
                "$recursiveAnchor",
            ):  # fmt: skip
                return None
        if any(v is False for v in verdicts):
            return False
        return None if any(v is None for v in verdicts) else True

    # -- facts
    def facts(self, schema: Any, depth: int, hops: int = 0) -> Facts | None:
        """A conservative summary of ``schema`` (None: nothing known, e.g. cyclic refs)."""
        if self.too_deep(depth, hops):
            return None
        if schema is True:
            return Facts()
        if schema is False:
            return Facts(kinds=frozenset(), full=frozenset())
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

    def facts_of_all(self, schemas: list[Any], depth: int) -> Facts | None:
        """:meth:`facts` of the conjunction of ``schemas`` (cached by the objects)."""
        key = tuple(id(x) for x in schemas)
        cached = self._facts_all.get(key)
        if cached is not None and all(a is b for a, b in zip(cached[0], schemas)):
            return cached[1]
        f = self.facts({"allOf": list(schemas)}, depth)
        self._facts_all[key] = (list(schemas), f)
        return f

    def _compute_facts(self, schema: dict[str, Any], depth: int, hops: int) -> Facts | None:
        self.work += 1
        if self.work > self.limits.max_rewrite_work:
            return None
        f = Facts()
        kinds = type_kinds(schema.get("type"))
        if kinds is None:
            return None
        f.kinds = kinds
        full = set(kinds)
        for key in schema:
            if key in CONSTRAINS:
                full -= CONSTRAINS[key]
            elif key in OPAQUE:
                full.clear()
        f.full = frozenset(full)
        values: list[Any] | None = None
        if "const" in schema:
            values = [schema["const"]]
        if isinstance(schema.get("enum"), list):
            enum = schema["enum"]
            values = enum if values is None else [v for v in values if value_key(v) in {value_key(e) for e in enum}]
        if values is not None:
            f.values = unique_values(v for v in values if kind_of(v) in kinds)
            f.kinds = kinds & frozenset(kind_of(v) for v in f.values)
            f.full = frozenset()
        req = schema.get("required")
        if isinstance(req, list) and all(isinstance(r, str) for r in req):
            f.required = frozenset(req)
        props = schema.get("properties")
        if isinstance(props, dict):
            f.props = {k: [v] for k, v in props.items()}
        if schema.get("additionalProperties") is False and not schema.get("patternProperties"):
            f.closed = True
        lo = number_value(schema.get("minimum"))
        xlo = number_value(schema.get("exclusiveMinimum"))
        hi = number_value(schema.get("maximum"))
        xhi = number_value(schema.get("exclusiveMaximum"))
        low = tighter_low((lo, False), (xlo, xlo is not None))
        high = tighter_high((hi, False), (xhi, xhi is not None))
        f.num = (low[0], low[1], high[0], high[1])
        f.length = (count_value(schema.get("minLength")) or 0, count_value(schema.get("maxLength")))
        f.items = (count_value(schema.get("minItems")) or 0, count_value(schema.get("maxItems")))
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
                    f = f.merge(union_facts([u for u in union if u is not None], exclusive=key == "oneOf"))
                else:
                    f.full = frozenset()
        return f

    # -- complements
    def complement(self, schema: Any, depth: int, hops: int = 0) -> Any:
        """An exact complement of ``schema`` (a schema), or None when there is none we can write."""
        self.work += 1
        if self.too_deep(depth, hops) or self.work > self.limits.max_rewrite_work:
            return None
        if schema is True or schema == {}:
            return False
        if schema is False:
            return True
        if not isinstance(schema, dict):
            return None
        if any(isinstance(schema.get(k), str) for k in ("$id", "id", *IDENTIFIERS)):
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
                pieces.append(all_of(negated))
            else:
                if len(members) > self.limits.max_rewrite_one_of_negated:
                    return None
                pairs = [all_of([a, b]) for a, b in itertools.combinations(members, 2)]
                pieces.append(any_of([all_of(negated)] + pairs))
        if "not" in schema:
            pieces.append(schema["not"])
        if "if" in schema and ("then" in schema or "else" in schema):
            cond = schema["if"]
            if "then" in schema:
                nt = self.complement(schema["then"], depth + 1, hops)
                if nt is None:
                    return None
                pieces.append(all_of([cond, nt]))
            if "else" in schema:
                nc = self.complement(cond, depth + 1, hops)
                ne = self.complement(schema["else"], depth + 1, hops)
                if nc is None or ne is None:
                    return None
                pieces.append(all_of([nc, ne]))
        if "$ref" in schema:
            resolved = self.resolve(schema["$ref"], depth)
            if resolved is None:
                return None
            negated = self.complement(resolved[1], depth + 1, hops + 1)
            if negated is None:
                return None
            pieces.append(negated)
        return any_of(pieces)

    def _complement_base(self, s: dict[str, Any], depth: int) -> Any:
        """The complement of ``s``'s non-applicator keywords (type, values, per-kind bounds)."""
        kinds = type_kinds(s.get("type"))
        if kinds is None:
            return None
        pieces: list[Any] = []
        values: list[Any] | None = None
        if "const" in s:
            values = [s["const"]]
        if "enum" in s:
            if not isinstance(s["enum"], list):
                return None
            keys = {value_key(e) for e in s["enum"]}
            values = list(s["enum"]) if values is None else [v for v in values if value_key(v) in keys]
        if values is not None:
            values = unique_values(v for v in values if kind_of(v) in kinds)
            if not values:
                return True  # no value at all satisfies the schema
            complement = complement_values(values, self.limits.max_rewrite_const_depth)
            if complement is None:
                return None
            pieces.append(complement)
            kinds = frozenset(kind_of(v) for v in values)
        else:
            others = KINDS - kinds
            if others:
                t = type_value(others)
                if t is None:
                    return None  # the complement holds the non-integral numbers: no llguidance form
                pieces.append({"type": t})
        handled = {"type", "enum", "const", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$ref"}
        handled |= {"$schema", "$vocabulary"}
        for key, value in s.items():
            if key in handled or key not in ASSERTIONS:
                continue
            piece = complement_keyword(key, value, s, kinds, self, depth + 1)
            if piece is None:
                return None
            pieces.append(piece)
        return any_of(pieces)

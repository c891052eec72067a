"""The analysis the schema rewrites rest on: references, facts and complements of a document.

:class:`SchemaAnalysis` scans a document once (which locations references point to, whether it has
anchors or embedded resources), resolves local references, and computes facts
(:mod:`core.schema_facts`) and exact complements (:mod:`core.schema_complements`) of subschemas,
within a work budget so that a hostile schema costs bounded time.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from core.schema_complements import complement_keyword, complement_values
from core.schema_facts import Facts, tighter_high, tighter_low, union_facts
from core.schema_keywords import (
    ASSERTIONS,
    CONSTRAINS,
    IDENTIFIERS,
    KINDS,
    MAX_DEPTH,
    OPAQUE,
    REF_HOPS,
    SCHEMA_KEYWORDS,
    all_of,
    any_of,
    count_value,
    kind_of,
    number_value,
    schema_children,
    type_kinds,
    type_value,
    unique_values,
    value_key,
)

__all__ = ["MAX_WORK", "SchemaAnalysis"]

#: Analysis steps (facts and complements computed) for one schema; past it, nothing more is
#: rewritten (the result stays exact, only less is rewritten): a hostile schema costs bounded time.
MAX_WORK = 100_000


class SchemaAnalysis:
    """References, facts and complements of one schema document (``root``).

    :meth:`rewrite` is what :meth:`resolve` returns for a referenced location: here the schema as
    it is; the rewriter overrides it so that the analysis reads rewritten schemas.
    """

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.active: set[tuple[str, ...]] = set()  # locations being rewritten (cycles)
        self.pinned: set[tuple[str, ...]] = set()
        self.pinned_prefixes: set[tuple[str, ...]] = set()  # every non-empty prefix of a pinned path
        self.structural = True
        self.root_id = root.get("$id") if isinstance(root.get("$id"), str) else None
        self._facts: dict[int, tuple[Any, Facts | None]] = {}
        self._facts_all: dict[tuple[int, ...], tuple[list[Any], Facts | None]] = {}
        self.work = 0
        self._scan()

    def rewrite(self, node: Any, path: tuple[str, ...], depth: int) -> Any:
        """The schema at ``path`` as the analysis should read it (here: unchanged)."""
        return node

    # -- document scan: references and identifiers
    def _scan(self) -> None:
        # (node, path, depth, inside an embedded resource)
        stack: list[tuple[Any, tuple[str, ...], int, bool]] = [(self.root, (), 0, False)]
        while stack:
            node, path, depth, inside = stack.pop()
            if not isinstance(node, dict) or depth > MAX_DEPTH:
                continue
            if any(k in node for k in IDENTIFIERS):
                self.structural = False
            for key in ("$id", "id"):  # ``id``: drafts 4 and 6 (we are in a schema position)
                value = node.get(key)
                if path and isinstance(value, str) and not value.startswith("#"):
                    # an embedded resource: pointers inside it are relative to it. A fragment-only
                    # id (``"#/properties/a"``, as schema generators write) does not move the base.
                    inside = True
            ref = node.get("$ref")
            if isinstance(ref, str):
                if inside:
                    # resolved against the embedded resource, which this module does not do (an
                    # embedded resource without references changes nothing here)
                    self.structural = False
                target = self._pointer_path(ref)
                if target is not None:
                    self.pinned.add(target)
                    if len(target) <= MAX_DEPTH:  # deeper locations are never rewritten anyway
                        self.pinned_prefixes.update(target[:i] for i in range(1, len(target) + 1))
                elif ref not in ("#", ""):
                    # a reference we do not follow (remote, anchor, relative): keep everything put
                    self.structural = False
            for child, child_path in schema_children(node, path):
                stack.append((child, child_path, depth + 1, inside))
            for key, value in node.items():
                # unknown keywords may hold schemas too (``$defs: {group: {a: {...}}}``): a ``$ref``
                # can point there, so references inside them are found as well
                if isinstance(value, dict) and key not in ASSERTIONS and key not in SCHEMA_KEYWORDS:
                    stack.append((value, path + (key,), depth + 1, inside))

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

    def accepts_empty(self, schema: Any, kind: str, depth: int, hops: int = 0) -> bool | None:
        """Whether ``{}`` (``kind="object"``) or ``[]`` (``"array"``) is valid against ``schema``.

        None: not known.
        """
        if depth > MAX_DEPTH or hops > REF_HOPS:
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
                verdicts.append(None if resolved is None else self.accepts_empty(resolved[1], kind, depth + 1, hops + 1))
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
        if depth > MAX_DEPTH or hops > REF_HOPS:
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
        if self.work > MAX_WORK:
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
        if depth > MAX_DEPTH or hops > REF_HOPS or self.work > MAX_WORK:
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
                if len(members) > 4:
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
            complement = complement_values(values)
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

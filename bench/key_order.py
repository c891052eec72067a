"""The order in which a compiled JSON schema lets object keys be written, as a function of the schema.

llguidance fixes the order of the keys it knows: the names of ``properties`` in the order written,
names met through ``$ref``/``allOf``/``anyOf`` merged at the position of that keyword in the node,
then the ``required`` names no ``properties`` lists; other keys come after those, in any order.
The rewrites of :mod:`core.jsonschema` keep that rule for the keywords they replace, which read as
if written after the node's own keywords (``docs/conformance.md``, "Key order"):

1. the names of ``properties`` (followed by those a ``propertyNames`` ``const``/``enum`` allows),
   each at its first appearance, walking the schema and the subschemas
   that apply to the object in place, a node's keywords in the order written: ``$ref`` (its
   target), ``allOf`` (every member), ``anyOf`` (the first branch the object satisfies), ``oneOf``
   (the branch it satisfies, then every name the other branches mention); then, after the node's
   own keywords, ``dependentRequired``/``dependentSchemas``/``dependencies`` of the keys present,
   ``if`` (every name it mentions, whether it holds or not) followed by ``then`` or ``else``, and
   ``not`` (every name its subschema mentions);
2. the ``required`` names not listed, in order of appearance;
3. every other key: names the schema mentions somewhere (in document order), then the rest as given.

:class:`SchemaOrder` applies the rule to an instance (nested values by the subschemas that apply to
them), so that a valid instance can be written as a model constrained by the schema would write it.
Which branch applies is decided with ``jsonschema`` (local references only, no network).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["SchemaOrder", "json_equal", "mentioned_names"]

_DEPTH = 40


def _no_retrieve(uri: str) -> Any:
    import referencing.exceptions

    raise referencing.exceptions.NoSuchResource(uri)


def _resolve(root: Any, ref: Any) -> Any:
    """The local JSON-pointer target of ``ref`` in ``root``, or None."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref[2:].split("/") if ref.startswith("#/") else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def mentioned_names(root: Any, schema: Any, depth: int = 0, seen: frozenset[int] = frozenset()) -> list[str]:
    """Every property name ``schema`` lists in ``properties``, in place, in document order.

    In place: the node and its ``$ref``, ``allOf``, ``anyOf``, ``oneOf``, ``not``, ``if``, ``then``,
    ``else`` and ``dependentSchemas`` subschemas (the names a complement of the schema lists).
    """
    out: list[str] = []
    for name in _mentioned(root, schema, depth, seen):
        if name not in out:
            out.append(name)
    return out


def _mentioned(root: Any, schema: Any, depth: int, seen: frozenset[int]) -> Iterator[str]:
    if not isinstance(schema, dict) or depth > _DEPTH or id(schema) in seen:
        return
    seen = seen | {id(schema)}
    for key, sub in schema.items():
        if key == "properties" and isinstance(sub, dict):
            yield from sub
        elif key == "$ref":
            yield from _mentioned(root, _resolve(root, sub), depth + 1, seen)
        elif key in ("allOf", "anyOf", "oneOf") and isinstance(sub, list):
            for branch in sub:
                yield from _mentioned(root, branch, depth + 1, seen)
        elif key in ("not", "if", "then", "else"):
            yield from _mentioned(root, sub, depth + 1, seen)
        elif key in ("dependentSchemas", "dependencies") and isinstance(sub, dict):
            for dep in sub.values():
                yield from _mentioned(root, dep, depth + 1, seen)


def _name_list(root: Any, names: Any) -> list[str]:
    """The names a ``propertyNames`` with ``const``/``enum`` (or a ``$ref`` to one) allows, in order."""
    if isinstance(names, dict) and "$ref" in names:
        names = _resolve(root, names["$ref"])
    if not isinstance(names, dict):
        return []
    values = [names["const"]] if "const" in names else names.get("enum")
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def _document_names(node: Any, out: list[str], depth: int = 0) -> None:
    """Names the document mentions as property names anywhere (``properties``, ``required``, ...)."""
    if depth > 200:
        return
    if isinstance(node, dict):
        for key, sub in node.items():
            if key in ("properties", "dependentRequired", "dependentSchemas") and isinstance(sub, dict):
                out.extend(k for k in sub if k not in out)
            elif key == "required" and isinstance(sub, list):
                out.extend(k for k in sub if isinstance(k, str) and k not in out)
            if key not in ("const", "enum", "default", "examples", "example"):
                _document_names(sub, out, depth + 1)
    elif isinstance(node, list):
        for sub in node:
            _document_names(sub, out, depth + 1)


class SchemaOrder:
    """Reorders an instance's object keys in the order the compiled schema fixes (module docstring)."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self._validator: Any = None
        names: list[str] = []
        _document_names(root, names)
        self._rank = {name: i for i, name in enumerate(names)}

    def _valid(self, schema: Any, value: Any) -> bool:
        try:
            if self._validator is None:
                import jsonschema
                import referencing

                cls = jsonschema.validators.validator_for(self.root, default=jsonschema.Draft202012Validator)
                registry: Any = referencing.Registry(retrieve=_no_retrieve)  # type: ignore[call-arg]
                self._validator = cls(self.root, registry=registry)
            return bool(self._validator.evolve(schema=schema).is_valid(value))
        except Exception:
            return False

    def _named(self, names: Sequence[str]) -> dict[str, Any]:
        return {"properties": dict.fromkeys(names, True)}

    def _flatten(self, schemas: Sequence[Any], value: Any, depth: int) -> list[dict[str, Any]]:
        """The schemas whose ``properties``/``required`` apply to ``value``, in the rule's order."""
        out: list[dict[str, Any]] = []
        for s in schemas:
            if not isinstance(s, dict) or depth > _DEPTH:
                continue
            placed = False
            has_props = isinstance(s.get("properties"), dict)
            for key, sub in s.items():
                if (key == "properties" or (key == "additionalProperties" and has_props)) and not placed:
                    out.append(s)
                    out.append(self._named(_name_list(self.root, s.get("propertyNames"))))
                    placed = True
                elif key == "$ref":
                    target = _resolve(self.root, sub)
                    if target is not None:
                        out.extend(self._flatten([target], value, depth + 1))
                elif key == "allOf" and isinstance(sub, list):
                    out.extend(self._flatten(sub, value, depth + 1))
                elif key in ("anyOf", "oneOf") and isinstance(sub, list):
                    taken = next((i for i, b in enumerate(sub) if self._valid(b, value)), None)
                    if taken is not None:
                        out.extend(self._flatten([sub[taken]], value, depth + 1))
                        if key == "oneOf":
                            others = [b for i, b in enumerate(sub) if i != taken]
                            out.append(self._named(mentioned_names(self.root, {"anyOf": others})))
            if not placed:
                out.append(s)
                out.append(self._named(_name_list(self.root, s.get("propertyNames"))))
            out.extend(self._deferred(s, value, depth))
        return out

    def _deferred(self, s: dict[str, Any], value: Any, depth: int) -> list[dict[str, Any]]:
        """What the keywords the rewrites replace add, after the node's own keywords."""
        out: list[dict[str, Any]] = []
        present = value if isinstance(value, dict) else {}
        for key in ("dependentRequired", "dependentSchemas", "dependencies"):
            deps = s.get(key)
            if not isinstance(deps, dict):
                continue
            for name, dep in deps.items():
                if name not in present:
                    continue
                if isinstance(dep, list):
                    out.append({"required": [d for d in dep if isinstance(d, str)] + [name]})
                else:
                    out.append({"required": [name]})
                    out.extend(self._flatten([dep], value, depth + 1))
        if "if" in s and ("then" in s or "else" in s):
            cond = s["if"]
            out.append(self._named(mentioned_names(self.root, cond)))
            holds = self._valid(cond, value)
            if holds:
                out.extend(self._flatten([cond], value, depth + 1))
            branch = s.get("then") if holds else s.get("else")
            if branch is not None:
                out.extend(self._flatten([branch], value, depth + 1))
        if "not" in s:
            out.append(self._named(mentioned_names(self.root, s["not"])))
        return out

    def reorder(self, value: Any, schemas: Sequence[Any] = (), depth: int = 0) -> Any:
        """``value`` with every object's keys in the order the rule fixes."""
        if depth == 0 and not schemas:
            schemas = [self.root]
        flat = self._flatten(schemas, value, depth) if schemas else []
        for s in flat:
            # a const or enum object or array is emitted as written in the schema
            literals = [s["const"]] if "const" in s else s.get("enum", []) if isinstance(s.get("enum"), list) else []
            for literal in literals:
                if isinstance(literal, (dict, list)) and json_equal(literal, value):
                    return literal
        if isinstance(value, dict):
            order: list[str] = []
            required: list[str] = []
            for s in flat:
                props = s.get("properties")
                if isinstance(props, dict):
                    order.extend(k for k in props if k not in order)
                req = s.get("required")
                if isinstance(req, list):
                    required.extend(k for k in req if isinstance(k, str) and k not in required)
            order.extend(k for k in required if k not in order)
            rest = sorted((k for k in value if k not in order), key=lambda k: self._rank.get(k, len(self._rank)))
            keys = [k for k in order if k in value] + rest
            return {k: self.reorder(value[k], self._for_key(flat, k), depth + 1) for k in keys}
        if isinstance(value, list):
            return [self.reorder(v, self._for_item(flat, i), depth + 1) for i, v in enumerate(value)]
        return value

    @staticmethod
    def _for_key(flat: Sequence[dict[str, Any]], key: str) -> list[Any]:
        out: list[Any] = []
        for s in flat:
            props = s.get("properties")
            if isinstance(props, dict) and key in props:
                out.append(props[key])
                continue
            matched = False
            pattern_props = s.get("patternProperties")
            if isinstance(pattern_props, dict):
                for pattern, sub in pattern_props.items():
                    with contextlib.suppress(re.error):
                        if re.search(pattern, key):
                            out.append(sub)
                            matched = True
            if not matched and isinstance(s.get("additionalProperties"), dict):
                out.append(s["additionalProperties"])
        return out

    @staticmethod
    def _for_item(flat: Sequence[dict[str, Any]], index: int) -> list[Any]:
        out: list[Any] = []
        for s in flat:
            prefix = s.get("prefixItems")
            items = s.get("items")
            if isinstance(items, list):  # draft 4-2019 tuple form
                prefix, items = items, s.get("additionalItems")
            if isinstance(prefix, list) and index < len(prefix):
                out.append(prefix[index])
            elif isinstance(items, dict):
                out.append(items)
        return out


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: key order ignored, 1 == 1.0, true != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False
    return bool(a == b) and type(a) is not str or (isinstance(a, str) and isinstance(b, str) and a == b)

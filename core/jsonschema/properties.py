"""Passes over what an object may hold: ``minProperties``/``maxProperties`` beside optional
properties, ``propertyNames``, and the dependencies (``dependentRequired``, ``dependentSchemas``,
draft-7 ``dependencies``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from core.jsonschema.build import add_constraints, all_of, any_of
from core.jsonschema.context import RewriteContext
from core.jsonschema.keywords import ANNOTATIONS, KINDS, type_value
from core.jsonschema.refs import Path
from core.jsonschema.regex import ANY_CHAR
from core.jsonschema.values import count_value, unique_values

__all__ = ["dependencies", "property_counts", "property_names"]


def property_counts(ctx: RewriteContext, s: dict[str, Any], path: Path, depth: int) -> dict[str, Any]:
    """``minProperties``/``maxProperties`` beside optional ``properties``, by the sets of them present.

    llguidance counts properties only when every listed one is required. So the node is split
    on which optional properties are present: one ``anyOf`` branch per set ``S`` requires ``S``
    and forbids the other optional ones (``false``); their union is every object, so adding the
    choice changes nothing, and in each branch every listed property is required or forbidden.
    A closed object (``additionalProperties: false``, no ``patternProperties``) holds exactly
    the required and present properties, so only the sets of an allowed size are listed and the
    counts go; an open one keeps the counts in every branch. At most
    ``Limits.max_rewrite_property_sets`` branches.
    """
    low, high = count_value(s.get("minProperties")), count_value(s.get("maxProperties"))
    props = s.get("properties")
    if (low is None and high is None) or not isinstance(props, dict) or not ctx.refs.movable(path, "properties"):
        return s
    required = s.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        return s
    optional = [k for k, v in props.items() if k not in required and v is not False]
    if not optional or any(k in s and count_value(s[k]) is None for k in ("minProperties", "maxProperties")):
        return s
    closed = s.get("additionalProperties") is False and not s.get("patternProperties")
    if closed:
        base = len(unique_values([r for r in required if props.get(r, False) is not False]))
        if any(r not in props for r in required):
            return s  # a required name the object cannot hold: llguidance says so itself
        # the counts bound the whole object: its required properties and the optional ones present
        lo, hi = low or 0, base + len(optional) if high is None else high
        sizes = [n for n in range(len(optional) + 1) if lo <= base + n <= hi]
    else:
        sizes = list(range(len(optional) + 1))
    bound = ctx.limits.max_rewrite_property_sets
    total = 0
    for n in sizes:  # counted with an early stop: thousands of optional properties cost nothing
        total += math.comb(len(optional), n) if n <= 8 or len(optional) - n <= 8 else bound + 1
        if total > bound:
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
    ctx.note("min/maxProperties by present properties", path)
    # no allowed set: no object fits, while every other kind of value still does
    return add_constraints(out, [any_of(branches) if branches else {"type": type_value(KINDS - {"object"})}])


def property_names(ctx: RewriteContext, s: dict[str, Any], path: Path, depth: int) -> dict[str, Any]:
    """``propertyNames`` as the properties and patterns an object may hold.

    A finite set of names (``const``/``enum``, with length bounds) lists them in ``properties``
    (the others become ``false``) with ``additionalProperties: false``; a ``pattern`` or length
    bounds alone become ``patternProperties`` for what ``additionalProperties`` allowed.
    """
    if "propertyNames" not in s or not ctx.refs.movable(path, "propertyNames"):
        return s
    if ctx.unevaluated and _under_unevaluated(ctx.refs.root, path):
        return s  # the names it would list would read as evaluated to the enclosing unevaluatedProperties
    names = s["propertyNames"]
    if isinstance(names, dict) and "$ref" in names and not set(names) - {"$ref", *ANNOTATIONS}:
        resolved = ctx.analysis.resolve(names["$ref"], depth)
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
    ctx.note("propertyNames", path)
    return out


# Keywords whose subschemas apply to the same instance as their parent (so their evaluated
# properties count for the parent's unevaluatedProperties), and where referenced schemas live.
_IN_PLACE = frozenset(
    {"allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "$defs", "definitions"}
)


def _under_unevaluated(root: Any, path: Path) -> bool:
    """Whether the subschema at ``path`` applies in place below an ``unevaluatedProperties``, or
    may (a referenced schema, reachable from anywhere)."""
    node = root
    for key in path:
        if (
            isinstance(key, str)
            and key in _IN_PLACE
            and (key in ("$defs", "definitions") or (isinstance(node, dict) and "unevaluatedProperties" in node))
        ):
            return True
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return True  # not in the document as written: assume the worst
    return False


def dependencies(ctx: RewriteContext, s: dict[str, Any], path: Path, depth: int) -> dict[str, Any]:
    """``dependentRequired``/``dependentSchemas``/``dependencies`` as ``anyOf`` constraints."""
    for key in ("dependentRequired", "dependentSchemas", "dependencies"):
        deps = s.get(key)
        if not isinstance(deps, dict) or not ctx.refs.movable(path, key):
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
            s = add_constraints(s, pieces)
            ctx.note(key, path)
    return s


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

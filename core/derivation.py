"""The static pre-check behind ``max_derivation_depth``: the longest acyclic chain of references.

llguidance compiles a grammar by recursion on the native stack: each ``$ref`` it follows, each
subschema under ``properties``/``items``/``anyOf``/..., and each Lark rule that refers to the next
costs a few kilobytes of stack (measured per kind in ``docs/reliability.md``). A chain a few
thousand levels long overflows the thread's stack and the whole process dies with SIGSEGV, well
below every size limit, and no ``LLParserLimits`` field bounds it. Syntactic nesting is bounded by
``max_nesting_depth``; depth that comes from references is measured here, before llguidance sees
the grammar.

The measure is the number of nodes on the longest chain: a node is a subschema or a Lark rule;
an edge is an applicator step, a ``$ref``, a rule named in another's body, ``@sub`` or an inline
``%json``. Cycles are legal (recursive schemas and grammars are normal and the engine does not
unfold them): an edge back to a node already on the chain is not followed, so only acyclic chains
count. The walk is iterative, so hostile input cannot exhaust Python's own stack either.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote

from core.lark_text import lark_statements, lark_tokens

__all__ = ["derivation_depth", "schema_derivation_depth"]

# Keywords whose value is one subschema, a map of subschemas, or a list of them.
_ONE = (
    "additionalProperties",
    "additionalItems",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "items",
)
_MAP = ("properties", "patternProperties", "dependentSchemas")
_LIST = ("anyOf", "oneOf", "allOf", "prefixItems", "items")
_EDGES = frozenset({"$ref", *_ONE, *_MAP, *_LIST})  # a schema with none of these has no children

_Node = Hashable


def derivation_depth(grammar: str, limit: int) -> int:
    """The longest acyclic chain in a grammar as handed to llguidance (counting stops past ``limit``).

    ``grammar`` is Lark text or llguidance's JSON top-level grammar
    (``{"grammars": [{"lark_grammar": ...} | {"json_schema": ...}]}``). Returns a number above
    ``limit`` as soon as one chain is longer than ``limit``.
    """
    graph = _Graph()
    text = grammar.lstrip()
    top: Any = None
    if text.startswith("{"):
        try:
            top = json.loads(text)
        except ValueError:
            top = None
    roots: list[_Node] = []
    if isinstance(top, dict) and isinstance(top.get("grammars"), list):
        for entry in top["grammars"]:
            if isinstance(entry, dict):
                roots.extend(graph.add_grammar(entry))
    else:
        roots.extend(graph.add_lark(grammar, ""))
    return _longest_chain(roots, graph.children, limit)


def schema_derivation_depth(schema: Any, limit: int) -> int:
    """:func:`derivation_depth` of one JSON schema, as an object (checked before it is rewritten)."""
    graph = _Graph()
    return _longest_chain([graph.add_schema(schema)], graph.children, limit)


class _Graph:
    """Nodes of every grammar of one top-level grammar, with their children computed on demand."""

    def __init__(self) -> None:
        self.docs: list[Any] = []  # JSON schemas (top-level ones and inline %json ones)
        self.rules: dict[tuple[str, str], list[Any]] = {}  # (grammar, rule) -> children
        self.starts: dict[str, list[_Node]] = {}  # grammar name -> its rule nodes
        # A subschema's value, noted when its parent lists it: found again by path, from the
        # document's root, only when a $ref leads there.
        self.values: dict[_Node, Any] = {}

    def add_grammar(self, entry: dict[str, Any]) -> list[_Node]:
        name = entry.get("name")
        name = name if isinstance(name, str) else f"#{len(self.starts)}"
        if isinstance(entry.get("lark_grammar"), str):
            nodes = self.add_lark(entry["lark_grammar"], name)
        elif "json_schema" in entry:
            nodes = [self.add_schema(entry["json_schema"])]
        else:
            nodes = []
        self.starts[name] = nodes
        return nodes

    def add_schema(self, schema: Any) -> _Node:
        self.docs.append(schema)
        return ("json", len(self.docs) - 1, ())

    def add_lark(self, text: str, grammar: str) -> list[_Node]:
        bodies: dict[str, list[tuple[str, Any]]] = {}
        for name, body in lark_statements(text):
            if name is not None:
                bodies.setdefault(name, []).extend(self._references(body))
        for name, refs in bodies.items():
            children: list[_Node] = []
            for kind, value in refs:
                if kind == "name" and value in bodies:
                    children.append(("lark", grammar, value))
                elif kind == "sub":
                    children.append(("grammar", value))
                elif kind == "json":
                    children.append(self.add_schema(value))
            self.rules[(grammar, name)] = children
        return [("lark", grammar, name) for name in bodies]

    @staticmethod
    def _references(body: str) -> Iterator[tuple[str, Any]]:
        after_at = False
        for kind, value in lark_tokens(body):
            if kind == "name":
                yield ("sub" if after_at else "name"), value.group("name")
            elif kind == "json":
                yield "json", value
            after_at = kind == "other" and value.group(0) == "@"

    def children(self, node: _Node) -> Iterable[_Node]:
        assert isinstance(node, tuple)
        if node[0] == "lark":
            out: list[_Node] = []
            for child in self.rules.get((node[1], node[2]), ()):
                if child[0] == "grammar":  # @sub: the rules of that grammar, one level down
                    out.extend(self.starts.get(child[1], ()))
                else:
                    out.append(child)
            return out
        return self._schema_children(node[1], node[2])

    def _schema_children(self, doc: int, path: tuple[str | int, ...]) -> list[_Node]:
        values = self.values
        value = values.get(("json", doc, path), _DONE)
        if value is _DONE:
            value = _resolve(self.docs[doc], path)
        if not isinstance(value, dict) or value.keys().isdisjoint(_EDGES):
            return []
        out: list[_Node] = []
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            target = _pointer(ref)
            if target is not None:
                out.append(("json", doc, target))
        for key in _ONE:
            sub = value.get(key)
            if isinstance(sub, (dict, bool)):
                child = ("json", doc, (*path, key))
                values[child] = sub
                out.append(child)
        for key in _MAP:
            sub = value.get(key)
            if isinstance(sub, dict):
                for k, v in sub.items():
                    child = ("json", doc, (*path, key, k))
                    values[child] = v
                    out.append(child)
        for key in _LIST:
            sub = value.get(key)
            if isinstance(sub, list):
                for i, v in enumerate(sub):
                    child = ("json", doc, (*path, key, i))
                    values[child] = v
                    out.append(child)
        return out


def _pointer(ref: str) -> tuple[str, ...] | None:
    """The path of a local JSON pointer reference (``#/$defs/a~1b``); None for ``#anchor`` forms."""
    fragment = unquote(ref[1:])
    if not fragment:
        return ()
    if not fragment.startswith("/"):
        return None
    return tuple(part.replace("~1", "/").replace("~0", "~") for part in fragment[1:].split("/"))


def _resolve(root: Any, path: tuple[str | int, ...]) -> Any:
    node = root
    for part in path:
        if isinstance(node, dict):
            node = node.get(str(part)) if not isinstance(part, int) else node.get(part)
        elif isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                return None
        else:
            return None
    return node


def _longest_chain(roots: Iterable[_Node], children: Callable[[_Node], Iterable[_Node]], limit: int) -> int:
    """Nodes on the longest path without a repeated node, from any root; stops past ``limit``.

    A depth-first walk with memoised depths; an edge to a node on the current path (a cycle) is
    not followed.
    """
    memo: dict[_Node, int] = {}
    on_path: set[_Node] = set()
    best = 0
    for root in roots:
        if root in memo:
            continue
        # frames: [node, iterator over its children, longest chain found from it so far]
        stack: list[list[Any]] = [[root, iter(children(root)), 1]]
        on_path.add(root)
        while stack:
            frame = stack[-1]
            child = next(frame[1], _DONE)
            if child is _DONE:
                stack.pop()
                on_path.discard(frame[0])
                memo[frame[0]] = frame[2]
                if stack:
                    stack[-1][2] = max(stack[-1][2], frame[2] + 1)
                continue
            if child in on_path:
                continue
            if child in memo:
                frame[2] = max(frame[2], memo[child] + 1)
            else:
                on_path.add(child)
                stack.append([child, iter(children(child)), 1])
            if len(stack) > limit or frame[2] > limit:
                return limit + 1
        best = max(best, memo[root])
    return best


_DONE = object()

"""References of one schema document: where local ``$ref``s point, and what may move.

A rewrite must not move or remove a keyword that a local JSON-pointer ``$ref`` points into, and
cannot follow references it does not resolve (anchors, remote documents, references inside an
embedded resource, whose base is not the root). :class:`References` scans a document once and
answers both questions; it also resolves a pointer to the original value it names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from core.jsonschema.keywords import ASSERTIONS, IDENTIFIERS, SCHEMA_KEYWORDS, schema_children

__all__ = ["Path", "References", "json_pointer"]

#: A location in a schema document: the keys and list indices from the root.
Path = tuple[str, ...]


def json_pointer(path: Sequence[str]) -> str:
    """``path`` as a URI-fragment JSON pointer (``#/properties/a~1b``)."""
    return "#" + "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


class References:
    """What the local references of a document point to, found by one scan of it.

    Attributes:
        root: the document.
        pinned: the locations local references point to.
        pinned_prefixes: every non-empty prefix of a pinned location (where to look for schemas
            outside the schema keywords).
        structural: False when the document has references this module does not follow
            (anchors, remote or relative references, references inside an embedded resource):
            then nothing may move.
    """

    def __init__(self, root: Mapping[str, Any], max_depth: int) -> None:
        """Scan ``root`` down to ``max_depth`` levels of subschemas."""
        self.root = root
        self.pinned: set[Path] = set()
        self.pinned_prefixes: set[Path] = set()
        self.structural = True
        self._root_id = root.get("$id") if isinstance(root.get("$id"), str) else None
        self._under_pinned: set[Path] | None = None
        self._prefix_cap = 2 * max_depth + 2  # a subschema's path: a keyword and maybe a name per level
        self._scan(max_depth)

    def _scan(self, max_depth: int) -> None:
        # (node, path, depth, inside an embedded resource)
        stack: list[tuple[Any, Path, int, bool]] = [(self.root, (), 0, False)]
        while stack:
            node, path, depth, inside = stack.pop()
            if not isinstance(node, dict) or depth > max_depth:
                continue
            if not node.keys().isdisjoint(IDENTIFIERS):
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
                target = self.pointer_path(ref)
                if target is not None:
                    self.pinned.add(target)
                    if len(target) <= max_depth:  # deeper locations are never rewritten anyway
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

    def pointer_path(self, ref: str) -> Path | None:
        """The location a local JSON-pointer reference names; None for any other reference."""
        if self._root_id and ref.startswith(self._root_id + "#"):
            ref = ref[len(self._root_id) :]
        if not ref.startswith("#/"):
            return () if ref == "#" else None
        parts = ref[2:].split("/")
        return tuple(unquote(p).replace("~1", "/").replace("~0", "~") for p in parts)

    def movable(self, path: Path, key: str) -> bool:
        """Whether ``key`` of the node at ``path`` may be moved or removed."""
        if not self.structural:
            return False
        prefix = path + (key,)
        n = len(prefix)
        if n > self._prefix_cap:  # deeper than any walk goes: not worth a set of such prefixes
            return not any(p[:n] == prefix for p in self.pinned)
        if self._under_pinned is None:  # the prefixes of pinned locations, as long as the cap
            cap = self._prefix_cap
            self._under_pinned = {p[:i] for p in self.pinned for i in range(1, min(len(p), cap) + 1)}
        return prefix not in self._under_pinned

    def at(self, path: Path) -> Any:
        """The original value at ``path``; None when there is none."""
        node: Any = self.root
        for seg in path:
            if isinstance(node, dict) and seg in node:
                node = node[seg]
            elif isinstance(node, list) and seg.isdigit() and int(seg) < len(node):
                node = node[int(seg)]
            else:
                return None
        return node

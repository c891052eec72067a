"""Captures: how llguidance's flat capture records become a program's variables.

A compiled template names a capture per named slot. llguidance records ``(name, bytes)`` pairs
as slots complete; inside a ``{{#repeat}}`` every capture name carries :data:`LIST_APPEND` so that
llguidance records each repetition instead of keeping the last, and each separator is recorded
under an internal marker name, so that the values captured inside a repeat can be grouped per
item. :class:`CaptureLayout`, built with the grammar, says where each name lives; every session
reads its variables through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CaptureLayout", "LIST_APPEND", "RepeatInfo", "capture_name", "passthrough_layout", "utf8_prefix"]

#: The prefix that makes llguidance append a capture's values instead of keeping the last one.
LIST_APPEND = "__LIST_APPEND:"


def capture_name(recorded: str) -> str:
    """The capture name a template gave, from the name llguidance recorded."""
    return recorded.removeprefix(LIST_APPEND)


def utf8_prefix(raw: bytes) -> str:
    """Decode the longest prefix of ``raw`` that ends on a whole UTF-8 character.

    A capture's bytes can end inside a multi-byte character while its value is still growing;
    the incomplete character is left out until its last byte arrives.
    """
    for cut in range(0, 4):
        try:
            return raw[: len(raw) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class RepeatInfo:
    """One ``{{#repeat}}`` block as seen by capture grouping.

    Attributes:
        id: the repeat's number, in template order (depth first), from 1.
        name: the repeat's own capture name, None when it has none.
        item: the capture name of one repetition (the user's name, or an internal one).
        sep_marker: the capture name of the separator, None when ``sep=''``.
    """

    id: int
    name: str | None
    item: str
    sep_marker: str | None


@dataclass(frozen=True)
class CaptureLayout:
    """Where each capture lives, to turn llguidance's flat capture list into variables.

    ``scope`` maps a capture name to the repeats it is inside, outermost first (a repeat's own
    item capture is inside its repeat). Values at the top level are strings; inside a repeat they
    become lists, one entry per repetition (lists of lists for nested repeats).

    Attributes:
        scope: capture name -> ids of the repeats around it, outermost first.
        repeats: repeat id -> its :class:`RepeatInfo`.
        markers: separator marker name -> the id of its repeat.
        passthrough: a user's own Lark grammar: report its ``name[capture]`` rules as they are
            (the last value of a name wins; a ``__LIST_APPEND:name`` capture, as ``guidance``
            writes ``list_append=True``, gives the list of every value). ``scope`` then only
            lists the names, each at the top level.
    """

    scope: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    repeats: Mapping[int, RepeatInfo] = field(default_factory=dict)
    markers: Mapping[str, int] = field(default_factory=dict)
    passthrough: bool = False

    def values(self, records: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
        """Group llguidance ``get_captures()`` records into the template's variables."""
        root: dict[Any, Any] = {}
        for recorded, raw in records:
            name = capture_name(recorded)
            value = utf8_prefix(raw)
            if self.passthrough:
                if recorded.startswith(LIST_APPEND):  # guidance's list_append: every value, in order
                    root.setdefault(name, []).append(value)
                else:
                    root[name] = value
                continue
            k = self.markers.get(name)
            if k is not None:
                ctx = self._context(root, self.scope[self.repeats[k].item][:-1], None, None)
                items = ctx.setdefault(("#r", k), [])
                if not items:
                    items.append({})
                items.append({})
                continue
            chain = self.scope.get(name)
            if chain is None:
                continue
            ctx = self._context(root, chain, name, value)
            ctx[name] = value
        return self._render(root)

    def _context(
        self, root: dict[Any, Any], chain: Sequence[int], name: str | None, value: str | None
    ) -> dict[Any, Any]:
        ctx = root
        for k in chain:
            items: list[dict[Any, Any]] = ctx.setdefault(("#r", k), [])
            if not items:
                items.append({})
            info = self.repeats[k]
            if info.sep_marker is None and name is not None and info.item in items[-1]:
                # No separator to count items by: a finished item followed by a new capture,
                # or an item value that does not extend the last one, starts a new item.
                old = items[-1][info.item]
                if name != info.item or not (isinstance(old, str) and value is not None and value.startswith(old)):
                    items.append({})
            ctx = items[-1]
        return ctx

    def _render(self, ctx: Mapping[Any, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, val in ctx.items():
            if isinstance(key, str):
                if not key.startswith("#"):
                    out[key] = val
                continue
            info = self.repeats[key[1]]
            rendered = [self._render(item) for item in val]
            if info.name is not None:
                out[info.name] = [item[info.item] for item in val if info.item in item]
            for item in rendered:
                for inner, v in item.items():
                    if inner != info.name:
                        out.setdefault(inner, []).append(v)
        return out


def passthrough_layout(names: Sequence[str]) -> CaptureLayout:
    """The layout of a user's own grammar declaring the captures ``names`` (as llguidance records them)."""
    return CaptureLayout(scope={capture_name(n): () for n in names}, passthrough=True)

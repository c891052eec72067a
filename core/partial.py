"""Partial values: every capture so far, the ones still being generated with their text so far.

llguidance records a capture only when its slot is complete. While a slot is being generated, its
text so far is found by walking the template over the accepted bytes: literal text is matched,
completed slots are skipped by the length of their recorded value, and the first slot without a
record is the one being generated; its value is the rest of the text, less any tail that may yet
turn out to be the text after the slot (a stop string or the next literal), less a trailing
incomplete UTF-8 character. So a partial value is always a prefix of the slot's final value.

Nothing here runs unless partial values are asked for: the decode loop never pays for it.

Shape of the answer (one entry per capture name, JSON-ready)::

    {"value": "Ad", "complete": false}                          # a slot being generated
    {"value": ["a", "b", "c"], "complete": false, "complete_items": 2}   # inside a repeat
    {"value": '{"name":"Ad', "complete": false,
     "parsed": {"name": "Ad"}, "final": []}                     # a json slot, parse_json=True

A ``select`` with options appears once its option is decided (one option left that the text
agrees with); a block select's value grows once only one branch agrees with the text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.captures import CaptureLayout, capture_name, utf8_prefix
from core.partial_json import parse_partial_json
from core.template.nodes import GenNode, GrammarNode, JsonNode, Node, RepeatNode, SelectNode, TextNode

__all__ = ["partial_values"]


class _Mismatch(Exception):
    """The text disagrees with this part of the template (only raised during trials)."""


@dataclass
class _Entry:
    text: bytes
    complete: bool


@dataclass
class _Rep:
    node: RepeatNode
    item: str
    items: list[dict[Any, Any]] = field(default_factory=list)
    finished: bool = False


def _holdback(rem: bytes, follows: Sequence[bytes]) -> int:
    """How many trailing bytes of ``rem`` may be the start of one of ``follows``."""
    best = 0
    for f in follows:
        for k in range(min(len(f) - 1, len(rem)), best, -1):
            if f.startswith(rem[len(rem) - k :]):
                best = k
                break
    return best


class _Walker:
    """Walks template nodes over the accepted bytes, pairing slots with llguidance's records."""

    def __init__(self, data: bytes, records: Sequence[tuple[str, bytes]], items: Mapping[int, str]) -> None:
        self.data = data
        self.records = [(capture_name(name), raw) for name, raw in records]
        self.cursor = 0
        self.items = items  # id(RepeatNode) -> the capture name of one of its items
        self.shown = 0  # end of the text shown as the open slot's value

    # -- records
    def take(self, name: str | None) -> bytes | None:
        """The next record of ``name`` (moving past it), or None."""
        if name is None:
            return None
        for i in range(self.cursor, len(self.records)):
            if self.records[i][0] == name:
                self.cursor = i + 1
                return self.records[i][1]
        return None

    # -- walking; each returns the position after the part, or None when the text ends inside it
    def seq(self, nodes: Sequence[Node], pos: int, ctx: dict[Any, Any], follows: tuple[bytes, ...]) -> int | None:
        i = 0
        while i < len(nodes):
            node = nodes[i]
            nxt = nodes[i + 1] if i + 1 < len(nodes) else None
            after = (nxt.text.encode(),) if isinstance(nxt, TextNode) else follows if nxt is None else ()
            if isinstance(node, TextNode):
                got = self.literal(node.text.encode(), pos)
                if got is None:
                    return None
                pos = got
            elif isinstance(node, GenNode):
                follow = nxt.text if isinstance(nxt, TextNode) else None
                stops, rest = node.ending(follow)
                suffixes = tuple(s.encode() for s in stops)
                if follow is not None:
                    i += 1  # the text after the gen is handled with it, as core.template.lark folds it
                    rest_follows = follows if i + 1 >= len(nodes) else ()
                else:
                    rest_follows = after
                got = self.gen(node, pos, ctx, suffixes, rest_follows)
                if got is None:
                    return None
                pos = got
                if rest:
                    got = self.literal(rest.encode(), pos)
                    if got is None:
                        return None
                    pos = got
            else:
                got = self.node(node, pos, ctx, after)
                if got is None:
                    return None
                pos = got
            i += 1
        return pos

    def literal(self, lit: bytes, pos: int) -> int | None:
        rem = self.data[pos : pos + len(lit)]
        if rem == lit:
            return pos + len(lit)
        if lit.startswith(rem):
            self.shown = len(self.data)  # the text ends inside literal text the walk is sure of
            return None
        raise _Mismatch

    def open(self, ctx: dict[Any, Any], name: str | None, pos: int, follows: Sequence[bytes]) -> None:
        rem = self.data[pos:]
        end = len(self.data) - _holdback(rem, follows)
        self.shown = end
        if name is not None:
            ctx[name] = _Entry(self.data[pos:end], False)

    def gen(
        self, node: GenNode, pos: int, ctx: dict[Any, Any], suffixes: tuple[bytes, ...], follows: tuple[bytes, ...]
    ) -> int | None:
        raw = self.take(node.name)
        if raw is None:
            if node.name is None and suffixes:
                # no record to measure by: the first stop ends the slot (llguidance's lazy match)
                hits = [(self.data.find(s, pos), s) for s in suffixes]
                found = [(at, s) for at, s in hits if at >= 0]
                if found:
                    at, s = min(found)
                    return at + len(s)
            self.open(ctx, node.name, pos, suffixes or follows)
            return None
        ctx[node.name] = _Entry(raw, True)
        pos += len(raw)
        if not suffixes:
            return pos
        for s in suffixes:
            if self.data.startswith(s, pos):
                return pos + len(s)
        if any(s.startswith(self.data[pos:]) for s in suffixes):
            return None
        raise _Mismatch

    def node(self, node: Node, pos: int, ctx: dict[Any, Any], follows: tuple[bytes, ...]) -> int | None:
        if isinstance(node, SelectNode):
            return self.select(node, pos, ctx, follows)
        if isinstance(node, RepeatNode):
            return self.repeat(node, pos, ctx, follows)
        if isinstance(node, (JsonNode, GrammarNode)):
            raw = self.take(node.name)
            if raw is None:
                self.open(ctx, node.name, pos, follows)
                return None
            assert node.name is not None
            ctx[node.name] = _Entry(raw, True)
            got = pos + len(raw)
            if self.data[pos:got] != raw and not raw.startswith(self.data[pos:got]):
                raise _Mismatch
            return got
        raise TypeError(f"unexpected node {node!r}")  # pragma: no cover

    def select(self, node: SelectNode, pos: int, ctx: dict[Any, Any], follows: tuple[bytes, ...]) -> int | None:
        inner_start = self.cursor  # a block's inner records come before its own
        raw = self.take(node.name)
        if node.options is not None:
            if raw is not None:
                assert node.name is not None
                ctx[node.name] = _Entry(raw, True)
                return pos + len(raw)
            rem = self.data[pos:]
            fits = [o.encode() for o in node.options]
            fits = [o for o in fits if o.startswith(rem) or rem.startswith(o)]
            if len(fits) != 1 or not rem:
                if not fits:
                    raise _Mismatch
                self.shown = pos
                return None
            (chosen,) = fits
            if node.name is not None:
                ctx[node.name] = _Entry(chosen, True)  # decided: the only option the text agrees with
            if rem.startswith(chosen):
                return pos + len(chosen)
            self.shown = pos
            return None
        assert node.branches is not None
        if raw is not None:
            # complete: the branch that spans the recorded value exactly gives the inner values
            for branch in node.branches:
                trial = _Walker(self.data[: pos + len(raw)], self.records, self.items)
                sub: dict[Any, Any] = {}
                trial.cursor = inner_start
                try:
                    if trial.seq(branch, pos, sub, ()) == pos + len(raw):
                        ctx.update(sub)
                        break
                except _Mismatch:
                    continue
            assert node.name is not None
            ctx[node.name] = _Entry(raw, True)
            return pos + len(raw)
        viable = []
        for branch in node.branches:
            trial = _Walker(self.data, self.records, self.items)
            trial.cursor = self.cursor
            try:
                trial.seq(branch, pos, {}, follows)
            except _Mismatch:
                continue
            viable.append(branch)
        if len(viable) != 1:
            if not viable:
                raise _Mismatch
            self.shown = pos
            return None
        got = self.seq(viable[0], pos, ctx, follows)
        if node.name is not None:
            end = got if got is not None else self.shown
            ctx[node.name] = _Entry(self.data[pos:end], False)
        return got

    def repeat(self, node: RepeatNode, pos: int, ctx: dict[Any, Any], follows: tuple[bytes, ...]) -> int | None:
        rep = _Rep(node, self.items[id(node)])
        ctx[("#r", id(node))] = rep
        sep = node.sep.encode()
        first = node.body[0].text.encode() if node.body and isinstance(node.body[0], TextNode) else b""
        inner_follows = ((sep,) if sep else (first,)) + follows
        while True:
            count = len(rep.items)
            if node.max is not None and count >= node.max:
                rep.finished = True
                return pos
            if count and sep:
                if not self.data.startswith(sep, pos):
                    if pos >= len(self.data) or sep.startswith(self.data[pos:]):
                        self.shown = pos
                        return None
                    rep.finished = True
                    return pos
                pos += len(sep)
            elif pos >= len(self.data):
                self.shown = pos
                return None
            elif count >= node.min:
                # another item, or the text after the repeat? An item when the body agrees and
                # either a capture inside it is recorded or the body's own leading text matched
                # where the text after the repeat does not; when both could be, wait.
                trial = _Walker(self.data, self.records, self.items)
                trial.cursor = self.cursor
                try:
                    trial.seq(node.body, pos, {}, inner_follows)
                except _Mismatch:
                    rep.finished = True
                    return pos
                rem = self.data[pos:]
                after = any(f and (f.startswith(rem) or rem.startswith(f)) for f in follows)
                if trial.cursor == self.cursor and (not first or after):
                    self.shown = pos
                    return None
            item: dict[Any, Any] = {}
            start = pos
            got = self.seq(node.body, pos, item, inner_follows)
            if got is None:
                if self.shown > start or item:
                    item[rep.item] = _Entry(self.data[start : self.shown], False)
                    rep.items.append(item)
                return None
            self.take(rep.item)
            item[rep.item] = _Entry(self.data[start:got], True)
            rep.items.append(item)
            pos = got


@dataclass
class _Leaf:
    entry: _Entry


@dataclass
class _List:
    items: list[Any]  # _Leaf or _List, one per item of the repeat
    finished: bool  # the repeat will have no more items


def _render(ctx: Mapping[Any, Any], out: dict[str, Any]) -> None:
    """Turn a walk's contexts into values by name: strings at the top, lists inside repeats."""
    for key, val in ctx.items():
        if isinstance(key, str):
            if not key.startswith("#"):
                out[key] = _Leaf(val)
            continue
        rep: _Rep = val
        name = rep.node.name
        values: list[Any] = []
        inner: dict[str, list[Any]] = {}
        for item in rep.items:
            sub: dict[str, Any] = {}
            _render(item, sub)
            for k, v in sub.items():
                if k == name:
                    values.append(v)
                else:
                    inner.setdefault(k, []).append(v)
        if name is not None and values:  # as in the complete values: no items, no name
            out[name] = _List(values, rep.finished)
        for k, lst in inner.items():
            out[k] = _List(lst, rep.finished)


def _done(v: Any) -> bool:
    if isinstance(v, _Leaf):
        return v.entry.complete
    return bool(v.finished) and all(_done(x) for x in v.items)


def _plain(v: Any) -> Any:
    if isinstance(v, _Leaf):
        return utf8_prefix(v.entry.text)
    return [_plain(x) for x in v.items]


def _parse_each(value: Any) -> tuple[Any, Any]:
    """``parse_partial_json`` of a value, or of each item of a list of them."""
    if isinstance(value, str):
        return parse_partial_json(value)
    pairs = [_parse_each(v) for v in value]
    return [p for p, _ in pairs], [f for _, f in pairs]


def _json_names(nodes: Sequence[Node]) -> set[str]:
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, JsonNode) and node.name is not None:
            found.add(node.name)
        elif isinstance(node, RepeatNode):
            found |= _json_names(node.body)
        elif isinstance(node, SelectNode) and node.branches:
            for b in node.branches:
                found |= _json_names(b)
    return found


def _entry(v: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"value": _plain(v), "complete": _done(v)}
    if isinstance(v, _List):
        n = 0
        while n < len(v.items) and _done(v.items[n]):
            n += 1
        out["complete_items"] = n
    return out


def _repeat_items(nodes: Sequence[Node], layout: CaptureLayout) -> dict[int, str]:
    """Pair each repeat node with its item capture name (core.template.lark numbers repeats in order)."""
    found: list[RepeatNode] = []

    def walk(seq: Sequence[Node]) -> None:
        for node in seq:
            if isinstance(node, RepeatNode):
                found.append(node)
                walk(node.body)
            elif isinstance(node, SelectNode) and node.branches:
                for b in node.branches:
                    walk(b)

    walk(nodes)
    infos = [layout.repeats[k] for k in sorted(layout.repeats)]
    return {id(node): info.item for node, info in zip(found, infos, strict=False)}


def partial_values(
    nodes: Sequence[Node] | None,
    layout: CaptureLayout,
    data: bytes,
    records: Sequence[tuple[str, bytes]],
    *,
    parse_json: bool = False,
    complete: Mapping[str, Any] | None = None,
    terminated: bool = False,
) -> dict[str, dict[str, Any]]:
    """Every capture so far with its text so far and whether it is complete.

    Args:
        nodes: the program's template nodes (None for other kinds: only complete captures).
        layout: the program's capture layout.
        data: the bytes accepted so far (EOS excluded).
        records: llguidance's ``get_captures()``.
        parse_json: also parse each json slot's partial text (``parsed`` and ``final``).
        complete: the complete values as :meth:`CaptureLayout.values` gives them (computed if None).
        terminated: the text is final (after EOS): every value is complete.

    Returns:
        ``{name: {"value", "complete", ...}}``, see the module docstring.
    """
    done = dict(complete if complete is not None else layout.values(records))
    if terminated:
        out = {name: _final(value) for name, value in done.items()}
    else:
        out = _walk(nodes, layout, data, records, done)
    if parse_json and nodes is not None:
        for name in _json_names(nodes) & out.keys():
            out[name]["parsed"], out[name]["final"] = _parse_each(out[name]["value"])
    return out


def _walk(
    nodes: Sequence[Node] | None,
    layout: CaptureLayout,
    data: bytes,
    records: Sequence[tuple[str, bytes]],
    done: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    tree: dict[str, Any] = {}
    if nodes is not None:
        walker = _Walker(data, records, _repeat_items(nodes, layout))
        ctx: dict[Any, Any] = {}
        try:
            walker.seq(nodes, 0, ctx, ())
        except _Mismatch:
            pass  # a part the walk cannot place: what was found before it stands
        _render(ctx, tree)
    out = {name: _entry(v) for name, v in tree.items()}
    # llguidance's records are the authority on what is complete (they can even run ahead of the
    # text where the rest is forced); the walk adds what is still being generated.
    for name, value in done.items():
        mine = out.get(name)
        if not isinstance(value, list):
            if mine is None or mine["value"] != value or not mine["complete"]:
                out[name] = _final(value)
            continue
        if mine is None or not isinstance(mine["value"], list):
            out[name] = {"value": list(value), "complete": False, "complete_items": len(value)}
            continue
        extra = mine["value"][len(value) :]
        mine["value"] = list(value) + extra
        mine["complete_items"] = max(len(value), mine["complete_items"])
        mine["complete"] = mine["complete"] and mine["complete_items"] == len(mine["value"])
    return out


def _final(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value, "complete": True}
    if isinstance(value, list):
        out["complete_items"] = len(value)
    return out

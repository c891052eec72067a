"""Property tests: random templates, regexes and JSON schemas against independent oracles.

Each random constraint is built from a small AST that gives three things side by side: the
engine's source (template text, regex, schema), an equivalent Python oracle (a regex for
``re.fullmatch``, with ``jsonschema`` for embedded JSON), and a sampler of texts the oracle accepts.
Two directions per constraint:

(a) sampling tokens only from the masks until EOS yields text the oracle accepts (and, for
    templates, captured values equal to the oracle's groups);
(b) a text drawn from the oracle side is accepted token by token (each token in the mask first).

Template semantics the oracle follows (``core/template/lark.py``): a ``gen`` followed by literal text
stops at the first occurrence of that text; ``stop=`` text stays in the output but not in the
captured value; JSON is compact. To keep every slot boundary unambiguous, slot contents use the
"content" alphabet and the literal text after a slot starts with a "separator" character outside
it (JSON slots are followed by ``|``, which JSON texts here never contain). Two literal texts
that may come at the same place never start with the same character: llguidance lexes literals
greedily, so ``;`` then ``:a`` is refused where ``;:`` is also possible (test_boundaries.py pins
that); a repeat's separator is ``,`` (which nothing else starts with) and its leading text starts
with ``|``.

The default run uses the tiny vocabulary; ``-m slow`` adds a longer run on tekken.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import GuidanceBackend, GuidanceState, Tokenizer
from tests.core.helpers import random_walk

CONTENT = "abc01é"  # what slots produce
SEPARATORS = " :;-\nxyz"  # what literal text after a slot starts with (never in CONTENT)
LITERAL = SEPARATORS + "|"
REPEAT_SEPARATORS = ["", ",", ", "]  # "," starts nothing else
INTERPOLATED = LITERAL + "{}[]*\\.+?()"  # interpolated values: regex and template syntax is text

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"')


def is_compact(text: str) -> bool:
    return not re.search(r"\s", _STRINGS.sub('""', text))


# ---------------------------------------------------------------------------------------------
# regexes: a safe subset with the same meaning in Rust's regex crate and Python's re


@dataclass(frozen=True)
class Rx:
    kind: str  # "lit", "cls", "cat", "alt", "rep"
    chars: str = ""
    parts: tuple[Rx, ...] = ()
    lo: int = 0
    hi: int = 0

    def source(self) -> str:
        if self.kind == "lit":
            return self.chars  # the alphabets hold no regex metacharacter
        if self.kind == "cls":
            return "[" + self.chars + "]"
        if self.kind == "cat":
            return "".join(p.source() for p in self.parts)
        if self.kind == "alt":
            return "(?:" + "|".join(p.source() for p in self.parts) + ")"
        return "(?:" + self.parts[0].source() + "){" + f"{self.lo},{self.hi}" + "}"

    def nullable(self) -> bool:
        if self.kind in ("lit", "cls"):
            return False
        if self.kind == "cat":
            return all(p.nullable() for p in self.parts)
        if self.kind == "alt":
            return any(p.nullable() for p in self.parts)
        return self.lo == 0 or self.parts[0].nullable()

    def sample(self, rng: np.random.Generator) -> str:
        if self.kind == "lit":
            return self.chars
        if self.kind == "cls":
            return self.chars[int(rng.integers(len(self.chars)))]
        if self.kind == "cat":
            return "".join(p.sample(rng) for p in self.parts)
        if self.kind == "alt":
            return self.parts[int(rng.integers(len(self.parts)))].sample(rng)
        return "".join(self.parts[0].sample(rng) for _ in range(int(rng.integers(self.lo, self.hi + 1))))


def rx_strategy(alphabet: str = CONTENT) -> st.SearchStrategy[Rx]:
    leaves = st.one_of(
        st.builds(lambda c: Rx("lit", c), st.sampled_from(alphabet)),
        st.builds(lambda cs: Rx("cls", "".join(sorted(set(cs)))), st.text(alphabet, min_size=1, max_size=3)),
    )

    def extend(inner: st.SearchStrategy[Rx]) -> st.SearchStrategy[Rx]:
        return st.one_of(
            st.builds(lambda ps: Rx("cat", parts=tuple(ps)), st.lists(inner, min_size=2, max_size=3)),
            st.builds(lambda ps: Rx("alt", parts=tuple(ps)), st.lists(inner, min_size=2, max_size=3)),
            st.builds(lambda p, lo, extra: Rx("rep", parts=(p,), lo=lo, hi=lo + extra), inner,
                      st.integers(0, 2), st.integers(0, 2)),
        )  # fmt: skip

    return st.recursive(leaves, extend, max_leaves=6)


# ---------------------------------------------------------------------------------------------
# JSON schemas: small, with a sampler of valid instances (order = the schema's property order)


@dataclass(frozen=True)
class Js:
    schema: dict[str, Any]
    kind: str
    args: tuple[Any, ...] = ()

    def sample(self, rng: np.random.Generator) -> Any:
        k, a = self.kind, self.args
        if k == "int":
            return int(rng.integers(a[0], a[1] + 1))
        if k == "str":
            n = int(rng.integers(0, a[0] + 1))
            return "".join(a[1][int(rng.integers(len(a[1])))] for _ in range(n))
        if k == "enum":
            return a[0][int(rng.integers(len(a[0])))]
        if k == "bool":
            return bool(rng.integers(2))
        if k == "null":
            return None
        if k == "obj":
            out = {}
            for name, sub in a[0]:
                if name in a[1] or rng.random() < 0.5:
                    out[name] = sub.sample(rng)
            return out
        if k == "arr":
            return [a[0].sample(rng) for _ in range(int(rng.integers(a[1], a[2] + 1)))]
        if k == "oneof":
            return a[0][int(rng.integers(len(a[0])))].sample(rng)
        if k == "notenum":
            while True:
                s = "".join("abc"[int(rng.integers(3))] for _ in range(int(rng.integers(0, 3))))
                if s not in a[0]:
                    return s
        if k == "dep":  # {"a", "b"} optional, a requires b
            out = {}
            b = rng.random() < 0.6
            if b and rng.random() < 0.5:
                out["a"] = 1
            if b:
                out["b"] = 2
            return out
        raise AssertionError(k)


def js_strategy(string_alphabet: str) -> st.SearchStrategy[Js]:
    pattern = "^[" + "".join(_class_char(c) for c in string_alphabet) + "]*$"
    enum_values = st.sampled_from([0, 1, -3, 42, "a", "bc", "", True, False, None])
    leaves = st.one_of(
        st.builds(lambda lo, w: Js({"type": "integer", "minimum": lo, "maximum": lo + w}, "int", (lo, lo + w)),
                  st.integers(-20, 20), st.integers(0, 30)),
        st.builds(lambda n: Js({"type": "string", "maxLength": n, "pattern": pattern}, "str", (n, string_alphabet)),
                  st.integers(0, 3)),
        st.builds(
            lambda vs: Js({"enum": vs}, "enum", (vs,)),
            st.lists(enum_values, min_size=1, max_size=4, unique_by=json.dumps),
        ),
        st.just(Js({"type": "boolean"}, "bool")),
        st.just(Js({"type": "null"}, "null")),
        st.builds(lambda vs: Js({"type": "string", "maxLength": 2, "pattern": "^[abc]*$", "not": {"enum": vs}},
                                "notenum", (vs,)),
                  st.lists(st.sampled_from(["", "a", "ab", "c"]), min_size=1, max_size=2, unique=True)),
        st.just(Js({"type": "object", "properties": {"a": {"const": 1}, "b": {"const": 2}},
                    "additionalProperties": False, "dependentRequired": {"a": ["b"]}}, "dep")),
    )  # fmt: skip

    def extend(inner: st.SearchStrategy[Js]) -> st.SearchStrategy[Js]:
        def obj(props: list[tuple[str, Js]], req: list[bool]) -> Js:
            required = [n for (n, _), r in zip(props, req) if r]
            schema = {"type": "object", "properties": {n: p.schema for n, p in props}, "additionalProperties": False}
            if required:
                schema["required"] = required
            return Js(schema, "obj", (props, set(required)))

        def arr(item: Js, lo: int, extra: int) -> Js:
            schema = {"type": "array", "items": item.schema, "minItems": lo, "maxItems": lo + extra}
            return Js(schema, "arr", (item, lo, lo + extra))

        def one_of(branches: list[Js]) -> Js:
            return Js({"oneOf": [b.schema for b in branches]}, "oneof", (branches,))

        names = st.lists(st.sampled_from(["k", "n", "id", "é"]), min_size=1, max_size=3, unique=True)
        return st.one_of(
            names.flatmap(lambda ns: st.builds(obj, st.tuples(*[st.tuples(st.just(n), inner) for n in ns]).map(list),
                                               st.lists(st.booleans(), min_size=len(ns), max_size=len(ns)))),
            st.builds(arr, inner, st.integers(0, 1), st.integers(0, 2)),
            # branches of different kinds: provably disjoint, so the rewrite makes it an anyOf
            st.builds(one_of, st.lists(st.sampled_from([
                Js({"type": "integer", "minimum": 0, "maximum": 9}, "int", (0, 9)),
                Js({"type": "string", "maxLength": 2, "pattern": pattern}, "str", (2, string_alphabet)),
                Js({"type": "null"}, "null"),
                Js({"type": "array", "items": {"type": "boolean"}, "maxItems": 2}, "arr",
                   (Js({"type": "boolean"}, "bool"), 0, 2)),
            ]), min_size=2, max_size=3, unique_by=lambda j: j.kind)),
        )  # fmt: skip

    return st.recursive(leaves, extend, max_leaves=5)


def _class_char(c: str) -> str:
    """A character inside a regex class, written the same way for Rust and Python."""
    return {"\\": "\\\\", "\n": "\\n", "]": "\\]", "[": "\\[", "^": "\\^", "-": "\\-"}.get(c, c)


def check_json(text: str, schema: dict[str, Any]) -> None:
    assert is_compact(text), text
    jsonschema.Draft202012Validator(schema).validate(json.loads(text))


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# templates


@dataclass
class Piece:
    """One template piece: its source, its oracle regex, its sampler, its captured names."""

    source: str
    regex: str
    sample: Any  # Callable[[np.random.Generator], str]
    captures: list[str] = field(default_factory=list)  # top-level names checked against groups
    json: dict[str, dict[str, Any]] = field(default_factory=dict)  # capture name -> schema


@dataclass
class Tmpl:
    source: str
    variables: dict[str, Any]
    regex: str
    pieces: list[Piece]

    def sample(self, rng: np.random.Generator) -> str:
        return "".join(p.sample(rng) for p in self.pieces)


class _Names:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"


def _literal(text: str, variables: dict[str, Any], interpolate: bool, names: _Names) -> Piece:
    if interpolate:
        var = names("v")
        variables[var] = text
        source = "{{" + var + "}}"
    else:
        source = text
    return Piece(source, re.escape(text), lambda rng, t=text: t)


@st.composite
def literal_text(draw: st.DrawFn, after_slot: bool, json_slot: bool = False) -> tuple[str, bool]:
    """(text, interpolate?) for a literal; after a slot it starts with a separator character."""
    interpolate = draw(st.booleans()) and draw(st.booleans())
    alphabet = INTERPOLATED if interpolate else LITERAL
    rest = draw(st.text(alphabet, max_size=4))
    if not after_slot:
        return rest, interpolate
    first = "|" if json_slot else draw(st.sampled_from(SEPARATORS))
    return first + rest, interpolate


@st.composite
def slot(draw: st.DrawFn, names: _Names, variables: dict[str, Any], top: bool) -> Piece:
    kind = draw(st.sampled_from(["gen", "gen", "stop", "select", "json"] if top else ["gen", "stop", "select"]))
    name = names("s")
    if kind in ("gen", "stop"):
        # Not the empty text: an empty gen before its suffix text competes with that same text as
        # the next lexeme, and llguidance keeps only the gen parse (test_boundaries.py pins this).
        rx = draw(rx_strategy().filter(lambda r: not r.nullable()))
        if kind == "stop":
            stop = draw(st.sampled_from(["|", ".", ".."]))  # never the start of the next literal
            return Piece(
                f"{{{{gen '{name}' regex='{rx.source()}' stop='{stop}'}}}}",
                f"(?P<{name}>{rx.source()}){re.escape(stop)}",
                lambda rng, r=rx, s=stop: r.sample(rng) + s,
                [name],
            )
        return Piece(
            f"{{{{gen '{name}' regex='{rx.source()}'}}}}",
            f"(?P<{name}>{rx.source()})",
            lambda rng, r=rx: r.sample(rng),
            [name],
        )
    if kind == "select":
        options = draw(st.lists(st.text("abcé", min_size=1, max_size=3), min_size=1, max_size=3, unique=True))
        if draw(st.booleans()):
            src = "[" + ", ".join(f"'{o}'" for o in options) + "]"
        else:
            var = names("o")
            variables[var] = options
            src = var
        alternatives = "|".join(re.escape(o) for o in sorted(options, key=len, reverse=True))
        return Piece(
            f"{{{{select '{name}' options={src}}}}}",
            f"(?P<{name}>{alternatives})",
            lambda rng, o=options: o[int(rng.integers(len(o)))],
            [name],
        )
    js = draw(js_strategy("abc"))
    var = names("j")
    variables[var] = js.schema
    return Piece(
        f"{{{{json '{name}' schema={var}}}}}",
        f"(?P<{name}>[^|]*)",
        lambda rng, j=js: compact(j.sample(rng)),
        [name],
        {name: js.schema},
    )


@st.composite
def repeat_piece(draw: st.DrawFn, names: _Names, variables: dict[str, Any]) -> Piece:
    name = names("r")
    lead, lead_interp = draw(literal_text(after_slot=False))
    lead = "|" + lead if lead else lead  # never the start of the text after the repeat
    lead_piece = _literal(lead, variables, lead_interp, names)
    body = draw(slot(names, variables, top=False))
    trail, trail_interp = draw(literal_text(after_slot=True))
    trail_piece = _literal(trail, variables, trail_interp, names)
    lo = draw(st.integers(0, 2))
    hi = lo + draw(st.integers(0, 2))
    hi = max(hi, 1)
    sep = draw(st.sampled_from(REPEAT_SEPARATORS))
    body_rx = lead_piece.regex + re.sub(r"\(\?P<\w+>", "(?:", body.regex) + trail_piece.regex
    one = f"(?:{body_rx})"
    more = f"(?:{re.escape(sep)}{one}){{0,{hi - 1}}}" if hi > 1 else ""
    regex = f"(?:{one}{more})" if lo >= 1 else f"(?:{one}{more})?"
    if lo > 1:
        regex = f"(?:{one}(?:{re.escape(sep)}{one}){{{lo - 1},{hi - 1}}})"

    def sample(rng: np.random.Generator) -> str:
        n = int(rng.integers(lo, hi + 1))
        items = [lead_piece.sample(rng) + body.sample(rng) + trail_piece.sample(rng) for _ in range(n)]
        return sep.join(items)

    source = (
        f"{{{{#repeat '{name}' min={lo} max={hi} sep='{sep}'}}}}"
        + lead_piece.source + body.source + trail_piece.source + "{{/repeat}}"
    )  # fmt: skip
    return Piece(source, regex, sample)


@st.composite
def templates(draw: st.DrawFn) -> Tmpl:
    names = _Names()
    variables: dict[str, Any] = {}
    pieces: list[Piece] = []
    text, interp = draw(literal_text(after_slot=False))
    pieces.append(_literal(text, variables, interp, names))
    for i in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 4)) == 0:
            p = draw(repeat_piece(names, variables))
            json_slot = False
        else:
            p = draw(slot(names, variables, top=True))
            json_slot = bool(p.json)
        pieces.append(p)
        text, interp = draw(literal_text(after_slot=True, json_slot=json_slot))
        pieces.append(_literal(text, variables, interp, names))
    source = "".join(p.source for p in pieces)
    return Tmpl(source, variables, "".join(p.regex for p in pieces), pieces)


def check_template(t: Tmpl, text: str, variables: dict[str, Any]) -> None:
    m = re.fullmatch(t.regex, text)
    assert m, (t.source, text)
    for p in t.pieces:
        for name in p.captures:
            assert variables.get(name) == m.group(name), (t.source, text, name, variables)
        for name, schema in p.json.items():
            check_json(m.group(name), schema)


# ---------------------------------------------------------------------------------------------
# the properties


def _walks(state_factory: Any, rng_seeds: range) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for seed in rng_seeds:
        text, variables, _ = random_walk(state_factory(), np.random.default_rng(seed), max_steps=600)
        out.append((text, variables))
    return out


def _accepts(state: GuidanceState, tokenizer: Tokenizer, text: str) -> bool:
    """Feed the tokenizer's tokens for ``text`` one by one, then EOS; True when all are accepted.

    Each token is looked up in the mask first. llguidance lets only the canonical tokenization of
    forced bytes through the mask (``":`` where the next bytes ``":[`` are forced, not ``":[``), so
    the tokenizer's own token may be missing from the mask there, and only there; it is still
    accepted. Anywhere else a token missing from the mask fails the test.
    """
    program = state.program
    bitmask = np.zeros((1, program.mask_words), dtype=np.int32)
    for t in [*tokenizer.encode(text), program.eos_token_id]:
        state.fill_bitmask(bitmask, 0)
        if not (int(bitmask[0, t // 32]) >> (t % 32)) & 1:
            assert t != program.eos_token_id and state.forced_tokens(), (text, tokenizer.decode([t]))
        if not state.accept_token(t):
            return False
    return state.is_terminated() and state.text() == text


def run_template(backend: GuidanceBackend, t: Tmpl, seed: int, walks: int) -> None:
    program = backend.compile_template(t.source, t.variables)
    for text, variables in _walks(program.create_state, range(seed, seed + walks)):
        check_template(t, text, variables)
    rng = np.random.default_rng(seed)
    for _ in range(2):
        text = t.sample(rng)
        assert re.fullmatch(t.regex, text), (t.source, text)  # the sampler agrees with the oracle
        state = program.create_state()
        assert _accepts(state, backend.tokenizer, text), (t.source, text)
        check_template(t, text, state.variables)


def run_regex(backend: GuidanceBackend, rx: Rx, seed: int, walks: int) -> None:
    program = backend.compile_regex(rx.source())
    for text, _ in _walks(program.create_state, range(seed, seed + walks)):
        assert re.fullmatch(rx.source(), text), (rx.source(), text)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        text = rx.sample(rng)
        if text:  # the empty text is just EOS
            assert _accepts(program.create_state(), backend.tokenizer, text), (rx.source(), text)


def run_schema(backend: GuidanceBackend, js: Js, seed: int, walks: int) -> None:
    program = backend.compile_json_schema(js.schema)
    for text, _ in _walks(program.create_state, range(seed, seed + walks)):
        check_json(text, js.schema)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        value = js.sample(rng)
        jsonschema.Draft202012Validator(js.schema).validate(value)
        assert _accepts(program.create_state(), backend.tokenizer, compact(value)), (js.schema, value)


_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=_SUPPRESSED)
SLOW = settings(max_examples=400, deadline=None, suppress_health_check=_SUPPRESSED)


@pytest.fixture(scope="module")
def tiny(tiny_tokenizer: Tokenizer) -> Tokenizer:
    return tiny_tokenizer


def fresh(tokenizer: Tokenizer) -> GuidanceBackend:
    """A backend with an empty program cache (cheap: the tokenizer is shared).

    Not shared between examples, to keep each example independent.
    """
    return GuidanceBackend(tokenizer, max_cache_size=4)


def test_schemas_differing_only_in_property_order_get_their_own_programs(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer)
    ab = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
    ba = {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "integer"}}, "required": ["a", "b"]}
    backend.compile_json_schema(ab)
    state = backend.compile_json_schema(ba).create_state()
    assert _accepts(state, tiny_tokenizer, '{"b":1,"a":2}')


@FAST
@given(t=templates(), seed=st.integers(0, 10_000))
def test_random_templates_on_the_tiny_vocabulary(tiny: Tokenizer, t: Tmpl, seed: int) -> None:
    run_template(fresh(tiny), t, seed, walks=3)


@FAST
@given(rx=rx_strategy(CONTENT + " :x"), seed=st.integers(0, 10_000))
def test_random_regexes_on_the_tiny_vocabulary(tiny: Tokenizer, rx: Rx, seed: int) -> None:
    run_regex(fresh(tiny), rx, seed, walks=3)


@FAST
@given(js=js_strategy('abé"\\\n '), seed=st.integers(0, 10_000))
def test_random_json_schemas_on_the_tiny_vocabulary(tiny: Tokenizer, js: Js, seed: int) -> None:
    run_schema(fresh(tiny), js, seed, walks=3)


@pytest.mark.slow
@SLOW
@given(t=templates(), seed=st.integers(0, 10_000))
def test_random_templates_on_tekken(tekken: Tokenizer, t: Tmpl, seed: int) -> None:
    run_template(fresh(tekken), t, seed, walks=4)


@pytest.mark.slow
@SLOW
@given(rx=rx_strategy(CONTENT + " :x"), seed=st.integers(0, 10_000))
def test_random_regexes_on_tekken(tekken: Tokenizer, rx: Rx, seed: int) -> None:
    run_regex(fresh(tekken), rx, seed, walks=4)


@pytest.mark.slow
@SLOW
@given(js=js_strategy('abé"\\\n '), seed=st.integers(0, 10_000))
def test_random_json_schemas_on_tekken(tekken: Tokenizer, js: Js, seed: int) -> None:
    run_schema(fresh(tekken), js, seed, walks=4)

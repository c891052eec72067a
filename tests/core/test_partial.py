"""Partial values: what a capture shows while it is generated is always a prefix of what it becomes.

The property test walks random templates holding every tag kind (gen with and without stop, select
with options and in block form, json, grammar, repeat with and without separators, interpolation)
by sampling tokens from the masks, and at every step checks each partial value against the final
captured values of the same walk: complete values equal their final value (so never change), other
values are prefixes of it, lists grow item by item, parsed JSON agrees with the final document.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import GuidanceBackend, GuidanceGrammar, GuidanceState, Tokenizer, allowed_tokens
from tests.core.test_properties import SEPARATORS, Tmpl, templates

_GRAMMARS = ['start: "<" /[abc]{1,4}/ ">"', "start: /[ab]{1,3}/ | /c+/"]


@st.composite
def every_tag_templates(draw: st.DrawFn) -> Tmpl:
    """A random template from the property tests plus a block select and a grammar slot."""
    t = draw(templates())
    source, variables = t.source, dict(t.variables)
    if draw(st.booleans()):
        sep = draw(st.sampled_from(SEPARATORS))
        source += "{{#select 'b0'}}yes{{or}}no:{{gen 'why0' regex='[ab]{1,5}'}}{{/select}}" + sep
    if draw(st.booleans()):
        variables["lark0"] = draw(st.sampled_from(_GRAMMARS))
        source += "{{grammar 'g0' lark=lark0}}" + draw(st.sampled_from(SEPARATORS))
    return Tmpl(source, variables, "", [])


def _walk(state: GuidanceState, rng: np.random.Generator, max_steps: int = 600) -> list[dict[str, Any]]:
    """Sample from the masks until EOS, reading the partial values after every token."""
    program = state.program
    eos = program.eos_token_id
    bitmask = np.zeros((1, program.mask_words), dtype=np.int32)
    seen = []
    for _ in range(max_steps):
        state.fill_bitmask(bitmask, 0)
        allowed = allowed_tokens(bitmask[0], program.vocab_size)
        if eos in allowed and (allowed.size == 1 or rng.random() < 0.3):
            token = eos
        else:
            choices = allowed[allowed != eos]
            token = int(choices[rng.integers(choices.size)])
        assert state.accept_token(token)
        seen.append(state.partial_variables(parse_json=True))
        if state.is_terminated():
            return seen
    raise AssertionError(f"no EOS within {max_steps} steps: {state.text()!r}")


def _pointer(doc: Any, pointer: str) -> Any:
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def _consistent(partial: Any, final: Any) -> None:
    """A partial JSON value agrees with the final one: same shape, strings and lists grown only."""
    if isinstance(partial, dict):
        assert isinstance(final, dict) and set(partial) <= set(final), (partial, final)
        for k, v in partial.items():
            _consistent(v, final[k])
    elif isinstance(partial, list):
        assert isinstance(final, list) and len(partial) <= len(final), (partial, final)
        for a, b in zip(partial, final, strict=False):
            _consistent(a, b)
    elif isinstance(partial, str):
        assert isinstance(final, str) and final.startswith(partial), (partial, final)
    else:
        assert partial == final and type(partial) is type(final), (partial, final)


def _check_json(entry: dict[str, Any], final_text: Any) -> None:
    if isinstance(final_text, list):
        for parsed, finals, text in zip(entry["parsed"], entry["final"], final_text, strict=False):
            _check_json({"parsed": parsed, "final": finals}, text)
        return
    doc = json.loads(final_text)
    if entry["parsed"] is not None:
        _consistent(entry["parsed"], doc)
    for pointer in entry["final"]:
        assert _pointer(entry["parsed"], pointer) == _pointer(doc, pointer), (pointer, entry, doc)


def _check_step(partial: dict[str, Any], final: dict[str, Any], before: dict[str, Any]) -> None:
    for name, entry in partial.items():
        assert name in final, (name, partial, final)
        value, want = entry["value"], final[name]
        if isinstance(want, list):
            assert isinstance(value, list) and len(value) <= len(want), (name, value, want)
            done = entry["complete_items"]
            assert value[:done] == want[:done], (name, value, want)
            for got, full in zip(value[done:], want[done:], strict=False):
                flat = [got] if isinstance(got, str) else got
                fulls = [full] if isinstance(full, str) else full
                for a, b in zip(flat, fulls, strict=False):
                    assert isinstance(a, str) and isinstance(b, str) and b.startswith(a), (name, value, want)
            if entry["complete"]:
                assert value == want, (name, value, want)
        else:
            assert isinstance(value, str) and want.startswith(value), (name, value, want)
            if entry["complete"]:
                assert value == want, (name, value, want)
        if "parsed" in entry:
            _check_json(entry, want)
        old = before.get(name)
        if old is not None and old["complete"]:
            assert entry["complete"] and value == old["value"], (name, old, entry)


def run_walks(backend: GuidanceBackend, t: Tmpl, seed: int, walks: int) -> None:
    program = backend.compile_template(t.source, t.variables)
    for s in range(seed, seed + walks):
        state = program.create_state()
        steps = _walk(state, np.random.default_rng(s))
        final = state.variables
        before: dict[str, Any] = {}
        for i, partial in enumerate(steps):
            try:
                _check_step(partial, final, before)
            except AssertionError as e:
                text = backend.tokenizer.decode(state.tokens[: i + 1])
                raise AssertionError(f"{t.source!r} {t.variables!r} after {text!r}: {e}") from None
            before = partial
        last = steps[-1]
        assert {k: v["value"] for k, v in last.items()} == final, (t.source, last, final)
        assert all(v["complete"] for v in last.values()), (t.source, last)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=every_tag_templates(), seed=st.integers(0, 10_000))
def test_partial_values_only_grow_on_random_walks(tiny_tokenizer: Tokenizer, t: Tmpl, seed: int) -> None:
    run_walks(GuidanceBackend(tiny_tokenizer, max_cache_size=4), t, seed, walks=3)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=every_tag_templates(), seed=st.integers(0, 10_000))
def test_partial_values_only_grow_on_tekken(tekken_backend: GuidanceBackend, t: Tmpl, seed: int) -> None:
    run_walks(tekken_backend, t, seed, walks=2)


# ---------------------------------------------------------------------------------------------
# examples


def _feed(
    backend: GuidanceBackend, template: str, text: str, variables: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    grammar = GuidanceGrammar(backend.compile_template(template, variables or {}))
    out = []
    for token in backend.tokenizer.encode(text):
        assert grammar.accept_tokens([token])
        out.append(grammar.get_variable_values(partial=True, parse_json=True))
    return out


def test_a_slot_being_generated_shows_its_text_so_far(tiny_backend: GuidanceBackend) -> None:
    template = "Name: {{gen 'name' regex='[A-Z][a-z]+'}}\nAge: {{gen 'age' regex='[0-9]+'}}"
    steps = _feed(tiny_backend, template, "Name: Adalbert\nAge: 3")
    values = [s["name"]["value"] for s in steps if "name" in s]
    assert values[0] == "" or values[0].startswith("A")
    assert "Adal" in values and values[-1] == "Adalbert"
    assert steps[-1]["name"]["complete"] and steps[-1]["age"] == {"value": "3", "complete": False}


def test_the_start_of_the_text_after_a_slot_is_held_back(tiny_backend: GuidanceBackend) -> None:
    grammar = GuidanceGrammar(tiny_backend.compile_template("{{gen 'a'}} the end", {}))
    assert grammar.accept_tokens(tiny_backend.tokenizer.encode("word th"))
    assert grammar.get_variable_values(partial=True)["a"] == {"value": "word", "complete": False}


def test_no_half_characters(tiny_backend: GuidanceBackend) -> None:
    grammar = GuidanceGrammar(tiny_backend.compile_template("{{gen 'a' regex='[a-zé]+'}}.", {}))
    tok = tiny_backend.tokenizer
    assert grammar.accept_tokens(tok.encode("ab") + [0xC3])  # the first byte of é
    assert grammar.get_variable_values(partial=True)["a"]["value"] == "ab"
    assert grammar.accept_tokens([0xA9])
    assert grammar.get_variable_values(partial=True)["a"]["value"] == "abé"


def test_a_select_appears_once_decided(tiny_backend: GuidanceBackend) -> None:
    grammar = GuidanceGrammar(tiny_backend.compile_template("{{select 'a' options=['yes', 'yelp', 'no']}}!", {}))
    tok = tiny_backend.tokenizer
    assert grammar.accept_tokens(tok.encode("y"))
    assert "a" not in grammar.get_variable_values(partial=True)
    assert grammar.accept_tokens(tok.encode("e"))
    assert "a" not in grammar.get_variable_values(partial=True)
    assert grammar.accept_tokens(tok.encode("l"))
    assert grammar.get_variable_values(partial=True)["a"] == {"value": "yelp", "complete": True}


def test_repeats_grow_item_by_item(tiny_backend: GuidanceBackend) -> None:
    steps = _feed(tiny_backend, "{{#repeat 'xs' sep=', '}}<{{gen 'x' regex='[a-z]+'}}>{{/repeat}}.", "<ab>, <c")
    assert steps[-1]["x"] == {"value": ["ab", "c"], "complete": False, "complete_items": 1}
    assert steps[-1]["xs"]["value"] == ["<ab>", "<c"]


def test_a_json_slot_shows_its_partial_value_and_final_keys(tiny_backend: GuidanceBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    steps = _feed(tiny_backend, "{{json 'p' schema=s}}", '{"name":"Ada","age":3', {"s": schema})
    by_text = {s["p"]["value"]: s["p"] for s in steps if "p" in s}
    assert by_text['{"name":"Ad']["parsed"] == {"name": "Ad"} and by_text['{"name":"Ad']["final"] == []
    assert by_text['{"name":"Ada","age":3']["parsed"] == {"name": "Ada"}
    assert by_text['{"name":"Ada","age":3']["final"] == ["/name"]


def test_complete_values_are_unchanged_without_partial(tiny_backend: GuidanceBackend) -> None:
    grammar = GuidanceGrammar(tiny_backend.compile_template("Name: {{gen 'name' regex='[a-z]+'}}.", {}))
    assert grammar.accept_tokens(tiny_backend.tokenizer.encode("Name: ab"))
    assert grammar.get_variable_values() == {}
    assert grammar.get_variable_values(partial=True) == {"name": {"value": "ab", "complete": False}}

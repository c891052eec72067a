"""Sessions: all-or-nothing accept, EOS, rollback, fork, reset, forced tokens, captures."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from core import (
    CompiledGuidanceProgram,
    GuidanceBackend,
    GuidanceGrammar,
    InvalidTokens,
    LimitExceeded,
    Limits,
    TokenRejected,
    allowed_tokens,
)

TEMPLATE = "Name: {{gen 'name' regex='[A-Z][a-z]+'}}\nAge: {{gen 'age' regex='[0-9]{1,3}'}}"


def mask_of(grammar: GuidanceGrammar) -> bytes:
    bitmask = np.zeros((1, grammar.program.mask_words), dtype=np.int32)
    grammar.fill_next_token_bitmask(bitmask, 0)
    return bitmask.tobytes()


def test_spec_example_runs_as_written(tekken_backend: GuidanceBackend) -> None:
    backend = tekken_backend
    tok = backend.tokenizer
    program = backend.compile_template(TEMPLATE, variables={})
    grammar = GuidanceGrammar(program, tok)
    bitmask = backend.allocate_bitmask(1)
    assert bitmask.dtype == np.int32 and bitmask.shape == (1, (tok.vocab_size + 31) // 32)
    assert grammar.accept_tokens(tok.encode("Name: Ada\nAge: 36"))
    grammar.fill_next_token_bitmask(bitmask, 0)
    assert grammar.accept_tokens([tok.eos_token_id]) and grammar.is_terminated()
    assert grammar.get_variable_values() == {"name": "Ada", "age": "36"}


def test_rejected_token_leaves_session_unchanged(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    grammar = GuidanceGrammar(tiny_backend.compile_template(TEMPLATE))
    assert grammar.accept_tokens(tok.encode("Name: A"))
    before = mask_of(grammar)
    tokens_before = list(grammar.state.tokens)
    digit = tok.encode("7")
    assert not grammar.accept_tokens(digit)
    # all or nothing: a good token followed by a bad one moves nothing either
    assert not grammar.accept_tokens(tok.encode("d") + digit)
    assert grammar.state.tokens == tokens_before
    assert mask_of(grammar) == before
    with pytest.raises(TokenRejected) as info:
        grammar.state.advance(tok.encode("da") + digit)
    assert info.value.index == 2 and info.value.status == 409
    assert grammar.accept_tokens(tok.encode("da\nAge: 1") + [tok.eos_token_id])
    assert grammar.get_variable_values() == {"name": "Ada", "age": "1"}


def test_eos_is_allowed_only_when_complete(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    eos = tok.eos_token_id
    grammar = GuidanceGrammar(tiny_backend.compile_template(TEMPLATE))
    assert not grammar.accept_tokens(tok.encode("Name: Ada\nAge: ") + [eos])
    assert grammar.state.tokens == []
    assert grammar.validate_tokens(tok.encode("Name: Ada\nAge: 4") + [eos, eos]) == tok.encode("Name: Ada\nAge: 4") + [
        eos
    ]
    assert grammar.accept_tokens(tok.encode("Name: Ada\nAge: 4"))
    state = grammar.state
    assert state.is_accepting() and not state.is_terminated()
    assert grammar.accept_tokens([eos])
    assert grammar.is_terminated()
    # after EOS only EOS is in the mask, and nothing more is accepted
    row = np.frombuffer(mask_of(grammar), dtype=np.int32)
    assert allowed_tokens(row, tok.vocab_size).tolist() == [eos]
    assert not grammar.accept_tokens(tok.encode("1"))
    assert state.text() == "Name: Ada\nAge: 4"


def test_completed_template_allows_only_eos(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    grammar = GuidanceGrammar(tiny_backend.compile_template("{{select 'x' options=['yes', 'no']}}!"))
    assert grammar.accept_tokens(tok.encode("no!"))
    row = np.frombuffer(mask_of(grammar), dtype=np.int32)
    assert allowed_tokens(row, tok.vocab_size).tolist() == [tok.eos_token_id]


def test_out_of_vocabulary_ids_are_invalid_not_rejected(tiny_backend: GuidanceBackend) -> None:
    state = tiny_backend.compile_regex("[a-z]+").create_state()
    for bad in (-1, tiny_backend.tokenizer.vocab_size, 10**12):
        with pytest.raises(InvalidTokens) as info:
            state.advance([97, bad])
        assert info.value.index == 1 and info.value.status == 422
    assert state.tokens == []
    assert not state.accept_tokens([-5])


def test_tokens_per_accept_are_limited(tiny_tokenizer: object) -> None:
    from core import Tokenizer

    assert isinstance(tiny_tokenizer, Tokenizer)
    backend = GuidanceBackend(tiny_tokenizer, limits=Limits(max_tokens_per_accept=4))
    state = backend.compile_regex("[a-z]+").create_state()
    with pytest.raises(LimitExceeded):
        state.advance([97] * 5)


def test_rollback_restores_masks_and_variables(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    grammar = GuidanceGrammar(tiny_backend.compile_template(TEMPLATE))
    assert grammar.accept_tokens(tok.encode("Name: Ad"))
    mid = mask_of(grammar)
    mid_vars = grammar.get_variable_values()
    assert grammar.accept_tokens(tok.encode("a\nAge: 12") + [tok.eos_token_id])
    n = len(tok.encode("a\nAge: 12")) + 1
    grammar.rollback(n)  # EOS included
    assert not grammar.is_terminated()
    assert mask_of(grammar) == mid
    assert grammar.get_variable_values() == mid_vars
    assert grammar.state.text() == "Name: Ad"
    with pytest.raises(ValueError):
        grammar.rollback(1000)


def test_rollback_and_rejection_work_with_max_tokens(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    grammar = GuidanceGrammar(tiny_backend.compile_template("A{{gen 'g' regex='[a-z]+' max_tokens=3}}!"))
    assert grammar.accept_tokens(tok.encode("Axy"))
    grammar.rollback(1)
    assert grammar.state.text() == "Ax"
    assert grammar.accept_tokens(tok.encode("!") + [tok.eos_token_id])
    assert grammar.get_variable_values() == {"g": "x"}
    fresh = GuidanceGrammar(grammar.program)
    too_long = tok.encode("Aabcdefgh!")
    assert fresh.validate_tokens(too_long) == too_long[: len(fresh.validate_tokens(too_long))]
    assert len(fresh.validate_tokens(too_long)) < len(too_long)
    with pytest.raises(TokenRejected):
        fresh.state.advance(too_long)
    assert fresh.state.tokens == []


def test_fork_is_independent(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    a = GuidanceGrammar(tiny_backend.compile_template(TEMPLATE))
    assert a.accept_tokens(tok.encode("Name: Bo"))
    b = a.fork()
    assert b.accept_tokens(tok.encode("b\nAge: 1") + [tok.eos_token_id])
    assert a.accept_tokens(tok.encode("\nAge: 22") + [tok.eos_token_id])
    assert a.get_variable_values() == {"name": "Bo", "age": "22"}
    assert b.get_variable_values() == {"name": "Bob", "age": "1"}


def test_reset_returns_to_start(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    g = GuidanceGrammar(tiny_backend.compile_template(TEMPLATE))
    start = mask_of(g)
    assert g.accept_tokens(tok.encode("Name: X"))
    g.reset()
    assert mask_of(g) == start and g.state.tokens == [] and g.get_variable_values() == {}


def test_forced_tokens_are_the_canonical_literal(tekken_backend: GuidanceBackend) -> None:
    tok = tekken_backend.tokenizer
    state = tekken_backend.compile_template("The capital of France is {{gen 'c' regex='[A-Z][a-z]+'}}").create_state()
    forced = state.forced_tokens()
    assert forced and tok.decode(forced) == "The capital of France is"[: len(tok.decode(forced))]
    assert state.accept_tokens(forced)


def test_variables_appear_as_each_slot_completes(tekken_backend: GuidanceBackend) -> None:
    tok = tekken_backend.tokenizer
    state = tekken_backend.compile_template(
        "Say: {{gen 'msg' stop='.'}} {{select 'end' options=['Done', 'Over']}} {{gen 'n' regex='[0-9]+'}}"
    ).create_state()
    assert state.accept_tokens(tok.encode("Say: héllo wörld"))
    assert state.variables == {}
    assert state.accept_tokens(tok.encode(". Over 1"))
    assert state.variables == {"msg": "héllo wörld", "end": "Over"}
    assert state.accept_tokens(tok.encode("2") + [tok.eos_token_id])
    assert state.variables == {"msg": "héllo wörld", "end": "Over", "n": "12"}
    assert state.text() == "Say: héllo wörld. Over 12"


def test_partial_utf8_in_captures_is_trimmed(tiny_backend: GuidanceBackend) -> None:
    state = tiny_backend.compile_template("{{gen 'x' regex='[a-zé]+'}}!").create_state()
    e_acute = "é".encode()
    assert state.accept_tokens([ord("a"), e_acute[0]])  # half of é
    assert state.variables.get("x", "a") == "a"
    assert state.accept_tokens([e_acute[1], ord("!")])
    assert state.variables == {"x": "aé"}


def test_stop_text_shared_with_following_literal_is_produced_once(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    state = tiny_backend.compile_template("A: {{gen 'a' stop='\n'}}\nB: {{gen 'b' regex='[0-9]'}}").create_state()
    assert state.accept_tokens(tok.encode("A: x y\nB: 5") + [tok.eos_token_id])
    assert state.variables == {"a": "x y", "b": "5"}


def test_gen_without_regex_stops_at_the_following_text(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    state = tiny_backend.compile_template("<{{gen 'a'}}> and <{{gen 'b'}}>").create_state()
    assert state.accept_tokens(tok.encode("<x y> and <z>") + [tok.eos_token_id])
    assert state.variables == {"a": "x y", "b": "z"}


def test_nested_repeats_give_lists_of_lists(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    program = tiny_backend.compile_template(
        "{{#repeat 'rows' min=1 max=3 sep=';'}}{{#repeat 'cells' min=1 max=3 sep=','}}"
        "{{gen 'c' regex='[0-9]'}}{{/repeat}}{{/repeat}}."
    )
    state = program.create_state()
    assert state.accept_tokens(tok.encode("1,2;3;4,4,4.") + [tok.eos_token_id])
    assert state.variables == {
        "rows": ["1,2", "3", "4,4,4"],
        "cells": [["1", "2"], ["3"], ["4", "4", "4"]],
        "c": [["1", "2"], ["3"], ["4", "4", "4"]],
    }


def test_repeat_without_separator_groups_items(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    program = tiny_backend.compile_template("{{#repeat 'r' min=1 max=5}}[{{gen 'x' regex='[a-z]+'}}]{{/repeat}}")
    state = program.create_state()
    assert state.accept_tokens(tok.encode("[a][a][bc]") + [tok.eos_token_id])
    assert state.variables == {"r": ["[a]", "[a]", "[bc]"], "x": ["a", "a", "bc"]}


def test_json_whitespace_option_bounds_whitespace(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    compact = tiny_backend.compile_json_schema(schema).create_state()
    assert not compact.accept_tokens(tok.encode('{ "a":1}'))
    spaced = tiny_backend.compile_json_schema(schema, whitespace=2).create_state()
    assert spaced.accept_tokens(tok.encode('{ "a":  1}'))
    assert (
        not tiny_backend.compile_json_schema(schema, whitespace=2)
        .create_state()
        .accept_tokens(tok.encode('{   "a":1}'))
    )


def test_control_tokens_are_not_text(tekken_backend: GuidanceBackend) -> None:
    state = tekken_backend.compile_regex("[a-z]+").create_state()
    for control in (0, 1, 3, 999):
        assert not state.accept_tokens([control])


def test_captures_of_a_users_lark_grammar_are_reported(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    program = tiny_backend.compile_grammar('start: "x=" num ";"\nnum[capture]: /[0-9]+/\n')
    state = program.create_state()
    assert state.accept_tokens(tok.encode("x=42;") + [tok.eos_token_id])
    assert state.variables == {"num": "42"}


def test_accept_token_takes_one_allowed_token(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    grammar = GuidanceGrammar(tiny_backend.compile_template(TEMPLATE))
    first = tok.encode("Name: ")[0]
    before = mask_of(grammar)
    assert not grammar.accept_token(tok.encode("x")[0])  # the text must start with "Name: "
    assert grammar.state.tokens == [] and mask_of(grammar) == before
    assert grammar.accept_token(first)
    assert grammar.state.tokens == [first]


def test_accept_token_text_is_all_or_nothing(tekken_backend: GuidanceBackend) -> None:
    tok = tekken_backend.tokenizer
    grammar = GuidanceGrammar(tekken_backend.compile_template(TEMPLATE), tok)
    assert grammar.accept_token_text("Name: Ada")
    assert grammar.state.tokens == tok.encode("Name: Ada")
    before = mask_of(grammar)
    assert not grammar.accept_token_text("\nAge: x")  # "\nAge: " fits, "x" does not: none of it is taken
    assert grammar.state.text() == "Name: Ada" and mask_of(grammar) == before
    assert grammar.accept_token_text("\nAge: 36")
    assert grammar.accept_token(tok.eos_token_id) and grammar.is_terminated()
    assert grammar.get_variable_values() == {"name": "Ada", "age": "36"}


def test_create_state_is_a_fresh_state_of_the_same_program(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    grammar = GuidanceGrammar(tiny_backend.compile_template(TEMPLATE))
    start = mask_of(grammar)
    assert grammar.accept_tokens(tok.encode("Name: Bo"))
    state = grammar.create_state()
    assert state.program is grammar.program and state is not grammar.state
    assert state.tokens == [] and not state.is_terminated()
    row = np.zeros((1, grammar.program.mask_words), dtype=np.int32)
    state.fill_bitmask(row, 0)
    assert row.tobytes() == start  # at the program's start, whatever the grammar has accepted
    assert state.accept_tokens(tok.encode("Name: Cy\nAge: 1"))
    assert grammar.state.text() == "Name: Bo"  # independent of the grammar's own state


def test_a_grammar_wraps_a_state_it_is_given_where_it_is(tiny_backend: GuidanceBackend) -> None:
    tok = tiny_backend.tokenizer
    program = tiny_backend.compile_template(TEMPLATE)
    state = program.create_state()
    assert state.accept_tokens(tok.encode("Name: A"))
    grammar = GuidanceGrammar(program, tok, state)
    assert grammar.state is state and grammar.state.tokens == tok.encode("Name: A")
    fresh = GuidanceGrammar(program, tok)
    assert fresh.accept_tokens(tok.encode("Name: A")) and mask_of(grammar) == mask_of(fresh)
    assert grammar.accept_tokens(tok.encode("da\nAge: 3"))
    assert state.tokens == tok.encode("Name: Ada\nAge: 3")  # one state, moved through the grammar
    copy = grammar.fork()
    assert copy.state is not state and copy.state.tokens == state.tokens


def test_a_grammar_refuses_a_state_of_another_program(tiny_backend: GuidanceBackend) -> None:
    program = tiny_backend.compile_template(TEMPLATE)
    other = tiny_backend.compile_template("{{select 'x' options=['yes', 'no']}}")
    with pytest.raises(ValueError, match="another program"):
        GuidanceGrammar(program, state=other.create_state())


def test_the_original_public_names_keep_their_signatures() -> None:
    assert list(inspect.signature(GuidanceGrammar).parameters) == ["program", "tokenizer", "state"]
    assert list(inspect.signature(CompiledGuidanceProgram.fill_bitmask).parameters) == [
        "self",
        "state",
        "bitmask",
        "index",
    ]
    assert list(inspect.signature(CompiledGuidanceProgram.is_terminated).parameters) == ["self", "state"]
    for name in (
        "accept_token",
        "accept_tokens",
        "validate_tokens",
        "rollback",
        "fill_next_token_bitmask",
        "is_terminated",
        "reset",
        "fork",
        "get_variable_values",
        "create_state",
    ):
        assert callable(getattr(GuidanceGrammar, name)), name

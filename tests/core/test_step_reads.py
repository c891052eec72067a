"""What a step reads of a session (forced tokens, variables, partial values, text) is computed once
per step and follows every move of the state: accepts, rollbacks, resets and forks."""

from __future__ import annotations

from typing import Any

from core import GuidanceBackend

TEMPLATE = "Name: {{gen 'name' regex='[A-Z][a-z]+'}}\nAge: {{gen 'age' regex='[0-9]{1,3}'}}."


class _CountingMatcher:
    """An LLMatcher that counts the forced-token computations made through it."""

    def __init__(self, matcher: Any) -> None:
        self.matcher = matcher
        self.forced = 0

    def compute_ff_tokens(self) -> Any:
        self.forced += 1
        return self.matcher.compute_ff_tokens()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.matcher, name)


def test_a_step_computes_its_forced_tokens_once_whatever_is_read(tekken_backend: GuidanceBackend) -> None:
    tok = tekken_backend.tokenizer
    state = tekken_backend.compile_template(TEMPLATE).create_state()
    counting = _CountingMatcher(state._matcher)
    state._matcher = counting  # type: ignore[assignment]
    state.advance(tok.encode("Name: Ada\nAge"))
    first = (state.forced_tokens(), state.variables, state.partial_variables(parse_json=True))
    again = (state.forced_tokens(), state.variables, state.partial_variables(parse_json=True))
    assert first == again
    assert first[1] == {"name": "Ada"}
    assert counting.forced == 1
    state.advance(tok.encode(": 4"))
    assert state.partial_variables()["age"] == {"value": "4", "complete": False}
    assert counting.forced == 2  # a new step: read afresh


def test_what_a_caller_gets_back_is_its_own(tekken_backend: GuidanceBackend) -> None:
    tok = tekken_backend.tokenizer
    state = tekken_backend.compile_template(TEMPLATE).create_state()
    state.advance(tok.encode("Name: Ada\nAge: 4"))
    state.forced_tokens().append(99)
    state.variables["name"] = "changed"
    state.partial_variables()["extra"] = {}
    assert 99 not in state.forced_tokens()
    assert state.variables == {"name": "Ada"}
    assert "extra" not in state.partial_variables()


def test_the_text_follows_rollbacks_resets_and_forks(tekken_backend: GuidanceBackend) -> None:
    tok = tekken_backend.tokenizer
    program = tekken_backend.compile_template(TEMPLATE)
    state = program.create_state()
    tokens = tok.encode("Name: Ada\nAge: 42.")

    def decoded(s: Any) -> bytes:
        body = s.tokens[:-1] if s.is_terminated() else s.tokens
        return tok.decode_bytes(body)

    state.advance(tokens[:-2])
    assert state.data() == decoded(state)
    state.rollback(3)
    assert state.data() == decoded(state)
    fork = state.fork()
    state.advance(tokens[-5:-1])
    assert state.data() == decoded(state)
    assert fork.data() == decoded(fork) != state.data()
    fork.advance(tokens[-5:-2])
    assert fork.data() == decoded(fork)
    state.advance(tokens[-1:] + [tok.eos_token_id])
    assert state.is_terminated()
    assert state.data() == decoded(state) == b"Name: Ada\nAge: 42."
    assert state.variables == {"name": "Ada", "age": "42"}
    state.rollback(2)  # over the end token: replayed from the start
    assert state.data() == decoded(state)
    state.reset()
    assert state.data() == b""
    assert state.partial_variables() == {}

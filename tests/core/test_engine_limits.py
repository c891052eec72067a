"""llguidance limits met while a session walks: never a wrong mask, never a broken session.

A stopped llguidance matcher answers masks that allow EOS only; those are never served. The lexer
that the sessions of one parser share only grows: when it runs out, the parser is rebuilt and
the sessions replay onto it. A limit met again on a fresh parser is this step's own: the request
gets :class:`EngineLimitReached` naming the limit and the session stays as it was.
"""

from __future__ import annotations

import random
import re

import pytest

from core import EngineLimitReached, GuidanceBackend, Limits, Tokenizer
from core.bitmask import allowed_tokens
from core.errors import classify_llguidance_error

# A real-world shape (MaskBench): a pattern of up to 100 words intersected with maxLength 5000.
# Its lexer needs more expressions than the default step_lexer_fuel allows a few tokens in.
WORDY = {
    "type": "object",
    "properties": {
        "q": {"type": "string", "minLength": 1, "maxLength": 5000, "pattern": "^$|(^(?:\\S+\\s+){0,99}\\S+$)"}
    },
    "required": ["q"],
    "additionalProperties": False,
}
WORDY_TEXT = '{"q":"What is it"}'


def test_llguidance_limit_messages_name_their_settings() -> None:
    assert classify_llguidance_error("lexer error: too many expressions constructed") == "step_lexer_fuel"
    assert classify_llguidance_error("lexer error: too many states: 250000 >= 250000") == "max_lexer_states"
    assert classify_llguidance_error('token "x" doesn\'t satisfy the grammar') is None


def _walk_until_limit(backend: GuidanceBackend, text: str) -> tuple[int, EngineLimitReached]:
    program = backend.compile_json_schema(WORDY)
    state = program.create_state()
    row = backend.allocate_bitmask(1)
    for i, token in enumerate(backend.tokenizer.encode(text)):
        try:
            state.fill_bitmask(row, 0)
        except EngineLimitReached as e:
            assert not row.any(), "the mask of a stopped matcher was served"
            assert state.tokens == backend.tokenizer.encode(text)[:i]
            return i, e
        state.advance([token])
    pytest.fail("the walk never met the limit")


def test_a_limit_mid_walk_is_reported_by_name_and_leaves_the_session_as_it_was(default_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(default_tokenizer)
    at, error = _walk_until_limit(backend, WORDY_TEXT)
    assert error.limit == "step_lexer_fuel" and error.code == "engine-limit" and error.status == 413
    program = backend.compile_json_schema(WORDY)
    note = program.stats.engine_limit
    assert note is not None and note["limit"] == "step_lexer_fuel"
    # A new session of the same cached program starts cleanly (its parser was rebuilt).
    fresh = program.create_state()
    row = backend.allocate_bitmask(1)
    fresh.fill_bitmask(row, 0)
    assert row.any()
    assert fresh.accept_tokens(default_tokenizer.encode(WORDY_TEXT)[:at])


def test_the_limit_is_a_setting(default_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(default_tokenizer, limits=Limits(step_lexer_fuel=5_000_000))
    program = backend.compile_json_schema(WORDY)
    grammar = program.create_state()
    row = backend.allocate_bitmask(1)
    for token in default_tokenizer.encode(WORDY_TEXT):
        grammar.fill_bitmask(row, 0)
        grammar.advance([token])
    assert grammar.accept_tokens([default_tokenizer.eos_token_id])


def test_a_spent_shared_lexer_is_rebuilt_and_every_walk_stays_exact(default_tokenizer: Tokenizer) -> None:
    # 120 lexer states are spent by the walks together after a few of them: each session that
    # meets the error replays onto the rebuilt parser, and every text still matches the regex.
    pattern = "[a-z ]{0,30}(foo|bar)[0-9]{2,5}"
    backend = GuidanceBackend(default_tokenizer, limits=Limits(max_lexer_states=120))
    program = backend.compile_regex(pattern)
    row = backend.allocate_bitmask(1)
    rng = random.Random(7)
    eos = default_tokenizer.eos_token_id
    for _ in range(12):
        state = program.create_state()
        while not state.is_terminated():
            state.fill_bitmask(row, 0)
            state.advance([int(rng.choice(list(allowed_tokens(row[0], program.vocab_size))))])
        assert state.tokens[-1] == eos
        assert re.fullmatch(pattern, state.text()), state.text()
    assert program.stats.shard_renewals > 0


def test_batched_fills_report_the_failing_state_and_fill_the_others(default_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(default_tokenizer)
    wordy = backend.compile_json_schema(WORDY)
    plain = backend.compile_regex("[0-9]+")
    stuck = wordy.create_state()
    tokens = default_tokenizer.encode(WORDY_TEXT)
    row = backend.allocate_bitmask(1)
    while True:  # walk to the step whose mask meets the limit
        try:
            stuck.fill_bitmask(row, 0)
        except EngineLimitReached:
            break
        stuck.advance([tokens[len(stuck.tokens)]])
    states = [plain.create_state(), stuck, plain.create_state()]
    bitmask = backend.allocate_bitmask(3)
    bitmask[:] = -1
    failed = backend.fill_next_token_bitmasks(states, bitmask)
    assert list(failed) == [1] and isinstance(failed[1], EngineLimitReached)
    assert not bitmask[1].any() and bitmask[0].any() and (bitmask[0] == bitmask[2]).all()


def test_a_computation_past_max_mask_ms_is_an_engine_limit_once_the_program_is_timed(
    default_tokenizer: Tokenizer,
) -> None:
    # Cheap at its start; after one digit each forced-token computation costs about 0.4 s.
    backend = GuidanceBackend(default_tokenizer, limits=Limits(max_mask_ms=50))
    program = backend.compile_regex("[0-9](ab|ab){20000}")
    state = program.create_state()
    state.advance(default_tokenizer.encode("7"))
    assert not program.stats.cpu_timed
    # Timed by the wall clock at first: past the limit by it, served, and timed in CPU time after.
    state.forced_tokens()
    assert program.stats.cpu_timed
    # A state keeps its forced tokens until it moves: another state at the same place computes them.
    state = program.create_state()
    state.advance(default_tokenizer.encode("7"))
    with pytest.raises(EngineLimitReached) as e:
        state.forced_tokens()
    assert e.value.limit == "max_mask_ms"
    assert state.tokens == default_tokenizer.encode("7")  # nothing moved
    assert program.stats.engine_limit is not None and program.stats.engine_limit["limit"] == "max_mask_ms"
    row = backend.allocate_bitmask(1)
    with pytest.raises(EngineLimitReached):
        for _ in range(2):  # llguidance caches every other mask of this state
            state.fill_bitmask(row, 0)
    assert not row.any()  # a refused mask is never served


def test_a_cheap_programs_masks_stay_within_max_mask_ms_untimed(default_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(default_tokenizer, limits=Limits(max_mask_ms=50))
    program = backend.compile_regex("[0-9](ab|cd){20000}")
    state = program.create_state()
    state.advance(default_tokenizer.encode("7"))
    row = backend.allocate_bitmask(1)
    for _ in range(3):
        state.fill_bitmask(row, 0)
        state.forced_tokens()
    assert not program.stats.cpu_timed and program.stats.engine_limit is None

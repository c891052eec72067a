"""Matcher shards and a program's run-time figures: the mutable parts beside an immutable program."""

from __future__ import annotations

import pytest

from core import GuidanceBackend, Tokenizer
from core.stats import ProgramStats


def test_sessions_are_dealt_over_the_shards_once_they_are_built(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, num_threads=3)
    program = backend.compile_regex("[a-z]+")
    program.build_shards()  # now, not when the program gets its second session
    shards = program.shards
    assert shards.count == 3
    dealt = [program.create_state().shard for _ in range(6)]
    assert sorted(dealt) == [0, 0, 1, 1, 2, 2]
    assert len({id(shards.root(i)) for i in range(3)}) == 3  # caches of their own
    backend.close()


def test_a_program_used_once_never_builds_its_other_shards(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, num_threads=2)
    program = backend.compile_regex("[a-z]+")
    state = program.create_state()  # a one-off request: compile, one session
    assert state.accept_tokens(tiny_tokenizer.encode("abc"))
    backend.close()  # waits for anything scheduled in the background
    assert program.shards.built == 1


def test_the_second_session_builds_the_other_shards_in_the_background(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, num_threads=3)
    program = backend.compile_regex("[a-z]+")
    first, second = program.create_state(), program.create_state()
    assert first.shard == second.shard == 0  # dealt before the other shards exist
    backend.close()  # waits for the background build
    assert program.shards.built == 3
    assert sorted(program.create_state().shard for _ in range(3)) == [0, 1, 2]


def test_a_spent_shard_is_renewed_once(tiny_tokenizer: Tokenizer) -> None:
    program = GuidanceBackend(tiny_tokenizer).compile_regex("[a-z]+")
    shards = program.shards
    spent = shards.root(0)
    assert shards.renew(0, spent)
    fresh = shards.root(0)
    assert fresh is not spent
    assert not shards.renew(0, spent)  # a second session meeting the same error: already done
    assert shards.root(0) is fresh
    state = program.create_state()  # new sessions copy the new parser
    assert state.accept_tokens(tiny_tokenizer.encode("abc") + [tiny_tokenizer.eos_token_id])


def test_program_stats_fold_mask_times_and_keep_the_last_engine_limit() -> None:
    stats = ProgramStats()
    assert stats.mask_seconds == 0.0 and stats.engine_limit is None and stats.shard_renewals == 0
    stats.note_mask_seconds(1.0)
    assert stats.mask_seconds == 1.0  # the first batch is the average
    stats.note_mask_seconds(0.0)
    assert abs(stats.mask_seconds - 0.8) < 1e-12  # then a moving average
    stats.note_engine_limit("step_lexer_fuel", "first")
    stats.note_engine_limit("max_lexer_states", "second")
    note = stats.engine_limit
    assert note == {"limit": "max_lexer_states", "detail": "second"}
    note["limit"] = "changed"  # a copy: readers cannot change the record
    assert stats.engine_limit == {"limit": "max_lexer_states", "detail": "second"}
    stats.note_shard_renewal()
    assert stats.shard_renewals == 1


def test_the_backend_records_the_first_mask_time(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer)
    program = backend.compile_regex("[0-9]+")
    seconds = backend.first_mask_seconds(program)
    assert seconds is not None and seconds >= 0
    assert program.stats.first_mask_seconds == seconds


def test_a_compiled_program_cannot_be_changed_after_it_is_built(tiny_tokenizer: Tokenizer) -> None:
    program = GuidanceBackend(tiny_tokenizer).compile_regex("[a-z]+")
    for name, value in (("vocab_size", 3), ("shards", None), ("stats", ProgramStats()), ("anything", 1)):
        with pytest.raises(AttributeError, match="immutable"):
            setattr(program, name, value)
    assert program.vocab_size == tiny_tokenizer.vocab_size

"""The program cache resists scans: programs used once cannot evict programs in steady use."""

from __future__ import annotations

from typing import Any

from core import GuidanceBackend, Tokenizer
from core.cache import ProgramCache


class _Program:
    """Stands in for a compiled program: the cache reads only ``size_bytes``."""

    size_bytes = 100


def _fill(cache: ProgramCache, key: str) -> Any:
    return cache.get_or_compile(key, _Program)[0]  # type: ignore[arg-type]


def test_a_burst_of_one_off_programs_does_not_evict_a_program_in_steady_use() -> None:
    cache = ProgramCache(max_entries=16)
    steady = _fill(cache, "steady")
    assert cache.segment("steady") == "probation"
    assert cache.join("steady") is steady  # a second use protects it
    assert cache.segment("steady") == "protected"
    for i in range(1000):
        _fill(cache, f"one-off-{i}")
        if i % 50 == 0:
            assert cache.join("steady") is steady
    assert cache.get("steady") is steady
    stats = cache.stats()
    assert stats["entries"] == 16 and stats["protected_entries"] == 1 and stats["probation_entries"] == 15
    assert stats["evictions"] == 1001 - 16 and stats["promotions"] == 1
    assert stats["hits"] == 1 + 20


def test_plain_lru_would_have_lost_it_and_probation_is_lru() -> None:
    # Without a second use a program is a one-off like the others: the burst evicts it.
    cache = ProgramCache(max_entries=16)
    _fill(cache, "once")
    for i in range(20):
        _fill(cache, f"one-off-{i}")
    assert cache.get("once") is None


def test_protected_overflow_demotes_its_least_recent_to_probation() -> None:
    cache = ProgramCache(max_entries=5, probation_share=0.4)  # 3 protected, 2 probation
    assert cache.max_protected == 3
    for key in "abcd":
        _fill(cache, key)
        cache.get(key)
    # a was the least recently used of a..d when d came in: back in probation, one use saves it
    assert cache.segment("a") == "probation" and cache.stats()["demotions"] == 1
    assert {cache.segment(k) for k in "bcd"} == {"protected"}
    cache.get("a")
    assert cache.segment("a") == "protected" and cache.segment("b") == "probation"


def test_protected_programs_are_evicted_when_the_byte_bound_needs_it() -> None:
    cache = ProgramCache(max_entries=10, max_bytes=350)
    for key in "abc":
        _fill(cache, key)
        cache.get(key)
    _fill(cache, "d")  # 400 bytes: the oldest protected program goes, the newest stays
    assert cache.get("a") is None and cache.get("d") is not None
    assert cache.stats()["bytes"] <= 350


def test_backend_reports_the_cache_segments(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, max_cache_size=5)
    steady = backend.compile_regex("[a-z]+")
    backend.compile_regex("[a-z]+")
    for i in range(30):
        backend.compile_choice([f"x{i}"])
    assert backend.get_program(steady.program_id) is steady
    stats = backend.get_stats()["cache"]
    assert stats["protected_entries"] == 1 and stats["entries"] == 5 and stats["max_protected_entries"] == 4

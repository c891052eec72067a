"""The session store: cap (refuse, never evict), idle TTL, 410 for expired ids, random ids."""

from __future__ import annotations

import pytest

from core import CompiledGuidanceProgram, GuidanceBackend, SessionExpired, Tokenizer, UnknownSession
from service.errors import TooManySessions
from service.sessions import SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def program(default_tokenizer: Tokenizer) -> CompiledGuidanceProgram:
    return GuidanceBackend(default_tokenizer).compile_regex("a+")


def test_ids_are_random_and_unique(program: CompiledGuidanceProgram) -> None:
    store = SessionStore()
    ids = {store.create(program, "default").id for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) >= 20 for i in ids)


def test_cap_refuses_new_sessions_and_keeps_live_ones(program: CompiledGuidanceProgram) -> None:
    store = SessionStore(max_sessions=2, retry_after=7)
    a = store.create(program, "default")
    b = store.create(program, "default")
    with pytest.raises(TooManySessions) as info:
        store.create(program, "default")
    assert info.value.status == 429 and info.value.extra["retry_after"] == 7
    assert store.get(a.id) is a and store.get(b.id) is b
    assert store.refused == 1
    store.delete(a.id)
    store.create(program, "default")


def test_cap_sweeps_expired_sessions_before_refusing(program: CompiledGuidanceProgram) -> None:
    clock = Clock()
    store = SessionStore(max_sessions=1, ttl_seconds=10, clock=clock)
    old = store.create(program, "default")
    clock.now += 11
    store.create(program, "default")
    with pytest.raises(SessionExpired):
        store.get(old.id)


def test_idle_sessions_expire_and_answer_410(program: CompiledGuidanceProgram) -> None:
    clock = Clock()
    store = SessionStore(ttl_seconds=10, clock=clock)
    s = store.create(program, "default")
    clock.now += 9
    assert store.get(s.id) is s  # use refreshes the idle timer
    clock.now += 9
    assert store.get(s.id) is s
    clock.now += 10.5
    with pytest.raises(SessionExpired):
        store.get(s.id)
    with pytest.raises(SessionExpired):  # still 410 on later calls
        store.get(s.id)
    assert len(store) == 0 and store.expired == 1


def test_sweep_skips_sessions_in_use(program: CompiledGuidanceProgram) -> None:
    import asyncio

    async def run() -> None:
        clock = Clock()
        store = SessionStore(ttl_seconds=1, clock=clock)
        busy = store.create(program, "default")
        idle = store.create(program, "default")
        clock.now += 5
        async with busy.lock:
            assert store.sweep() == 1
        assert busy.id in store and idle.id not in store

    asyncio.run(run())


def test_expired_ids_are_remembered_in_a_bounded_set(program: CompiledGuidanceProgram) -> None:
    clock = Clock()
    store = SessionStore(ttl_seconds=1, expired_ids_remembered=3, clock=clock)
    ids = [store.create(program, "default").id for _ in range(5)]
    clock.now += 2
    assert store.sweep() == 5
    for old in ids[:2]:
        with pytest.raises(UnknownSession) as info:
            store.get(old)
        assert not isinstance(info.value, SessionExpired)
    for recent in ids[2:]:
        with pytest.raises(SessionExpired):
            store.get(recent)


def test_deleted_sessions_are_404(program: CompiledGuidanceProgram) -> None:
    store = SessionStore()
    s = store.create(program, "default")
    store.delete(s.id)
    with pytest.raises(UnknownSession) as info:
        store.get(s.id)
    assert info.value.status == 404
    with pytest.raises(UnknownSession):
        store.delete(s.id)

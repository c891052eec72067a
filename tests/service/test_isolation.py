"""Compiles in worker processes over HTTP: a crashed worker is one clean problem; cache figures."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.workers import CompileWorkers
from service.dependencies import ServiceResources
from tests.core.test_workers import _CRASH, crash_on_marker
from tests.service.helpers import AppFactory, assert_problem, serve

pytestmark = pytest.mark.asyncio


async def test_a_crashed_compile_worker_is_a_problem_for_that_compile_only(make_app: AppFactory) -> None:
    app = make_app(compile_processes=True, compile_workers=1)
    async with serve(app) as client:
        state: ServiceResources = app.state.service
        backend = state.backend
        backend._workers.close()  # type: ignore[union-attr]
        backend._workers = CompileWorkers(1, backend.limits, task=crash_on_marker)
        try:
            ok = await client.post("/compile", json={"regex": "[0-9]+"})
            assert ok.status_code == 200
            body = assert_problem(await client.post("/compile", json={"regex": _CRASH}), 422, "compile-crashed")
            assert "other compiles are not affected" in body["detail"]
            again = assert_problem(await client.post("/compile", json={"regex": _CRASH}), 422, "compile-crashed")
            assert again["detail"] == body["detail"]  # from the negative cache, no second crash
            after = await client.post("/compile", json={"regex": "[a-z]+", "open_session": True})
            assert after.status_code == 200
            stats = (await client.get("/stats")).json()
            assert stats["compile_workers"]["crashes"] == 1
            assert stats["cache"]["negative_hits"] == 1
            families = {f.name: f for f in text_string_to_metric_families((await client.get("/metrics")).text)}
            assert families["guidance_compile_worker_crashes"].samples[0].value == 1
        finally:
            backend._workers.close()


async def test_stats_and_metrics_show_the_protected_programs(make_app: AppFactory) -> None:
    async with serve(make_app(cache_max_entries=5)) as client:
        steady = {"regex": "[a-z]+"}
        for _ in range(2):
            assert (await client.post("/compile", json=steady)).status_code == 200
        for i in range(20):
            assert (await client.post("/compile", json={"choice": [f"one-off-{i}"]})).status_code == 200
        again = await client.post("/compile", json=steady)
        assert again.json()["cached"] is True
        cache = (await client.get("/stats")).json()["cache"]
        assert cache["protected_entries"] == 1 and cache["entries"] == 5 and cache["promotions"] == 1
        families = {f.name: f for f in text_string_to_metric_families((await client.get("/metrics")).text)}
        assert families["guidance_cache_protected_entries"].samples[0].value == 1
        assert families["guidance_cache_promotions"].samples[0].value == 1

"""``/metrics`` counts exactly what clients did, with Prometheus names and closed label sets."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core import Tokenizer
from core.spec import PROGRAM_KINDS
from service.metrics import COMPILE_RESULTS, MASK_FORMATS
from tests.service.helpers import TEMPLATE, AppFactory, serve

pytestmark = pytest.mark.asyncio

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _scrape(client: httpx.AsyncClient) -> tuple[Samples, dict[str, str]]:
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(resp.text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_count_exactly_what_the_client_did(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    async with serve(make_app(session_ttl_seconds=600)) as client:
        compiled = (await client.post("/compile", json={"template": TEMPLATE, "open_session": True})).json()
        await client.post("/compile", json={"template": TEMPLATE})  # a cache hit
        await client.post("/compile", json={"regex": "[0-9]+"})
        await client.post("/compile", json={"regex": "("})  # an error
        sid = compiled["session_id"]
        ids = tok.encode("Name: Ada\nAge: 36")
        await client.post(f"/sessions/{sid}/accept", json={"tokens": ids[:3]})
        await client.post(f"/sessions/{sid}/accept", json={"tokens": ids[3:]})
        assert (await client.post(f"/sessions/{sid}/accept", json={"tokens": tok.encode("x")})).status_code == 409
        for _ in range(3):
            await client.get(f"/sessions/{sid}/mask")
        await client.get(f"/sessions/{sid}/mask", headers={"accept": "application/json"})
        fork = (await client.post(f"/sessions/{sid}/fork")).json()["session_id"]
        await client.delete(f"/sessions/{fork}")
        await client.get("/sessions/unknown")

        samples, types = await _scrape(client)

    assert _value(samples, "guidance_compiles_total", kind="template", result="compiled") == 1
    assert _value(samples, "guidance_compiles_total", kind="template", result="cached") == 1
    assert _value(samples, "guidance_compiles_total", kind="regex", result="compiled") == 1
    assert _value(samples, "guidance_compiles_total", kind="regex", result="error") == 1
    assert _value(samples, "guidance_compile_duration_seconds_count", kind="template") == 1
    assert _value(samples, "guidance_compiles_pending") == 0
    assert _value(samples, "guidance_cache_hits_total") == 1
    assert _value(samples, "guidance_cache_misses_total") == 3
    assert _value(samples, "guidance_cache_evictions_total") == 0
    assert _value(samples, "guidance_cache_entries") == 2
    assert _value(samples, "guidance_tokens_accepted_total") == len(ids)
    assert _value(samples, "guidance_tokens_rejected_total") == 1
    assert _value(samples, "guidance_masks_served_total", format="binary") == 3
    assert _value(samples, "guidance_masks_served_total", format="json") == 1
    assert _value(samples, "guidance_mask_duration_seconds_count") == 4
    assert _value(samples, "guidance_sessions_created_total") == 2
    assert _value(samples, "guidance_sessions_deleted_total") == 1
    assert _value(samples, "guidance_sessions_active") == 1
    assert _value(samples, "guidance_sessions_expired_total") == 0
    assert _value(samples, "guidance_step_batch_size_count") == 0
    assert _value(samples, "guidance_errors_total", code="token-rejected") == 1
    assert _value(samples, "guidance_errors_total", code="grammar-invalid") == 1
    assert _value(samples, "guidance_errors_total", code="session-not-found") == 1

    # Prometheus conventions: counters end in _total, durations are _seconds histograms.
    for name, kind in types.items():
        assert name.startswith("guidance_"), name
        if kind == "histogram":
            assert name.endswith(("_seconds", "_size")), name
    assert types["guidance_compiles"] == "counter" and types["guidance_mask_duration_seconds"] == "histogram"


async def test_metric_labels_come_from_closed_sets(client: httpx.AsyncClient) -> None:
    await client.post("/compile", json={"choice": ["a"], "open_session": True})
    await client.get("/sessions/some-id-that-must-not-become-a-label/mask")
    samples, _ = await _scrape(client)
    allowed = {
        "kind": set(PROGRAM_KINDS),
        "result": set(COMPILE_RESULTS),
        "format": set(MASK_FORMATS),
    }
    for name, labels in samples:
        for key, value in labels:
            assert "some-id" not in value
            if key in allowed:
                assert value in allowed[key], (name, key, value)
            elif key == "code":
                assert value.replace("-", "").isalpha(), value
            else:
                assert key == "le", (name, key)

"""A real server process on loopback: bounded load and soak from this (second) process, raw
client disconnects, and SIGTERM under load. Long versions: ``-m slow`` and ``load.py``."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.reliability import load
from tests.server import Server, start, stop


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start()
    try:
        yield srv
    finally:
        code, err = stop(srv)
        assert code in (0, -signal.SIGTERM), err[-2000:]
        assert "Traceback" not in err, err[-2000:]


def _settle(server: Server, fds: int) -> int:
    """Open fds once the closed client connections are gone (polls up to 2 s)."""
    deadline = time.monotonic() + 2
    while server.open_fds() > fds and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.open_fds()


def test_load_has_no_5xx_no_wrong_mask_and_bounded_metrics(server: Server) -> None:
    # Bounded by work, not time (the deadline only guards against a hang): on a loaded machine
    # the same test makes the same requests, just more slowly.
    first = asyncio.run(load.run_load(server.url, sessions=8, seconds=120.0, max_requests=300, seed=1))
    second = asyncio.run(load.run_load(server.url, sessions=8, seconds=120.0, max_requests=200, seed=2))
    for result, wanted in ((first, 300), (second, 200)):
        assert result["server_errors"] == 0, result
        assert result["wrong_masks"] == 0, result
        assert result["requests"] >= wanted, result
        assert result["sessions_active_after"] == 0
    # Labels come from closed sets: a second run adds no series.
    assert first["metric_series_after"] < 200
    assert second["metric_series_after"] == first["metric_series_after"]


@pytest.mark.slow
def test_load_long(server: Server) -> None:
    result = asyncio.run(load.run_load(server.url, sessions=64, seconds=30.0))
    assert result["server_errors"] == 0 and result["wrong_masks"] == 0, result
    assert result["metric_series_after"] < 200


def _soak(server: Server, cycles: int) -> dict[str, Any]:
    result = load.run_soak(server.url, server, cycles=cycles, concurrency=4)
    assert set(result["statuses"]) <= {"200", "201", "204"}, result
    assert result["after"]["sessions_active"] == result["before"]["sessions_active"] == 0
    return result


def _workers_started(server: Server) -> None:
    """Until the compile workers have all started (in the background after readiness)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = httpx.get(server.url + "/stats").json()["compile_workers"]
        if not workers["warming"] and workers["running"] == workers["processes"]:
            return
        time.sleep(0.1)
    raise AssertionError("compile workers did not start")


def test_soak_returns_to_baseline(server: Server) -> None:
    _workers_started(server)  # their pipes are the server's fds too
    fds = server.open_fds()
    result = _soak(server, 60)
    assert result["rss_drift_ratio"] < 0.05, result
    assert _settle(server, fds) <= fds
    assert result["after"]["threads"] <= result["before"]["threads"] + 2


@pytest.mark.slow
def test_soak_long(server: Server) -> None:
    fds = server.open_fds()
    result = _soak(server, 3000)
    assert result["rss_drift_ratio"] < 0.05, result
    assert _settle(server, fds) <= fds


def test_clients_that_disconnect_mid_request_cost_nothing(server: Server) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with httpx.Client(base_url=server.url) as http:
        sid = http.post("/sessions", json={"regex": "[a-z]{0,50}"}).json()["session_id"]
        mask = http.get(f"/sessions/{sid}/mask").content
        fds = server.open_fds()
        for raw in [
            b'POST /compile HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"re',
            b'POST /compile HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"reg',
            b"GET /sessions/" + sid.encode() + b"/mask HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /sessions/" + sid.encode() + b'/accept HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{"tok',
            b"GET /metr",
        ]:
            for _ in range(5):
                with socket.create_connection((host, int(port))) as s:
                    s.sendall(raw)  # and gone, before the answer (or the rest of the body)
        assert http.get("/healthz").status_code == 200
        assert http.get(f"/sessions/{sid}/mask").content == mask
        assert http.get(f"/sessions/{sid}").json()["tokens"] == []
        assert _settle(server, fds) <= fds
        assert 'guidance_errors_total{code="internal-error"}' not in http.get("/metrics").text


def test_sigterm_under_load_drains_within_the_bound() -> None:
    # Worker 0's 20,000-character template is slow on purpose (its masks run in the slow lane);
    # its first mask took 1.05-1.5 s on a loaded machine, past the default budget the compile
    # enforces, which is not what this test is about.
    srv = start(["--shutdown-timeout", "5"], env={"GUIDANCE_SERVER_MAX_FIRST_MASK_MS": "30000"})
    url = srv.url
    outcomes: dict[str, int] = {}
    stop_load = threading.Event()

    def note(key: str) -> None:
        outcomes[key] = outcomes.get(key, 0) + 1

    def worker(k: int) -> None:
        # Keep-alive connections, in-flight requests when SIGTERM lands.
        with httpx.Client(base_url=url, timeout=10) as http:
            try:
                opened = http.post("/sessions", json={"template": "ab" * 10_000 if k == 0 else "[a-z]{0,9}"})
            except httpx.HTTPError:
                note("refused")
                return
            if opened.status_code != 201:  # reached the server after SIGTERM: 503 not-ready, nothing else
                note("refused" if opened.status_code == 503 else f"status {opened.status_code}")
                return
            sid = opened.json()["session_id"]
            while not stop_load.is_set():
                try:
                    resp = http.get(f"/sessions/{sid}/mask")
                except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                    note("closed")  # a new connection after the listener closed, or an idle one closed
                    return
                if resp.status_code >= 500 and resp.status_code != 503:
                    note(f"status {resp.status_code}")
                elif resp.status_code == 503:
                    assert resp.headers["content-type"] == "application/problem+json"
                    note("503")
                else:
                    note(str(resp.status_code))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    with httpx.Client(base_url=url, timeout=5) as probe:
        assert probe.get("/readyz").status_code == 200
        sent = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        # Readiness flips at once (on this already open connection, if the server still answers).
        try:
            ready = probe.get("/readyz")
            assert ready.status_code == 503 and ready.json()["code"] == "not-ready"
        except httpx.HTTPError:
            pass
    code, err = stop(srv, timeout=30)
    exited = time.monotonic() - sent
    stop_load.set()
    for t in threads:
        t.join(timeout=10)
    assert code in (0, -signal.SIGTERM), err[-2000:]
    assert exited < 5 + 3, exited
    assert "Traceback" not in err, err[-2000:]
    assert not any(k.startswith("status") for k in outcomes), outcomes
    assert outcomes.get("200", 0) > 10, outcomes

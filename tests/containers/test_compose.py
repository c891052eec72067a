"""docker-compose.yml brought up for real: three replicas of the image behind the nginx of
``deploy/nginx/guidance.conf``, Prometheus scraping them (both stand-ins built by .ci/containers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from core import Tokenizer
from guidance_client import GuidanceClient, RemoteGrammar
from tests.containers.conftest import KEY, ROOT, docker, health, wait_for
from tests.server import free_port

pytestmark = pytest.mark.containers

PROJECT = "guidance-ci"
REPLICAS = ("guidance-1", "guidance-2", "guidance-3")
AUTH = {"Authorization": f"Bearer {KEY}"}


@dataclass
class Stack:
    url: str
    prometheus: str
    env: dict[str, str]
    up_seconds: float
    first_answers: list[int]


def compose(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        [os.environ.get("COMPOSE", "docker-compose"), "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert done.returncode == 0, f"docker-compose {' '.join(args)}:\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def stack(image: str) -> Iterator[Stack]:
    port, prometheus = free_port(), free_port()
    env = {
        **os.environ,
        "GUIDANCE_API_KEYS": KEY,
        "GUIDANCE_PORT": f"127.0.0.1:{port}",
        "PROMETHEUS_PORT": f"127.0.0.1:{prometheus}",
    }
    compose(env, "down", "-v", "--timeout", "5")
    start = time.monotonic()
    # `up` returns once the balancer has started, which waits for the replicas' health checks
    compose(env, "up", "-d", "--no-build")
    up_seconds = time.monotonic() - start
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=10) as http:
        first = []
        for _ in range(20):
            try:
                first.append(http.get("/readyz").status_code)
            except httpx.TransportError:  # nginx not listening yet: no answer, not a 502
                time.sleep(0.1)
    try:
        yield Stack(url, f"http://127.0.0.1:{prometheus}", env, up_seconds, first)
    finally:
        compose(env, "down", "-v", "--timeout", "10")


def _container(stack: Stack, service: str) -> str:
    return compose(stack.env, "ps", "-q", service).strip()


def _active_sessions(stack: Stack) -> dict[str, int]:
    """Open sessions of each replica, asked from inside its container (replicas publish no port)."""
    probe = (
        "import json, urllib.request; "
        f"r = urllib.request.Request('http://127.0.0.1:8000/stats', headers={{'Authorization': 'Bearer {KEY}'}}); "
        "print(json.load(urllib.request.urlopen(r, timeout=5))['sessions']['active'])"
    )
    return {name: int(docker("exec", _container(stack, name), "python", "-c", probe)) for name in REPLICAS}


def _delta(before: dict[str, int], after: dict[str, int]) -> list[int]:
    return sorted(after[name] - before[name] for name in REPLICAS)


def test_the_balancer_answers_only_once_the_replicas_are_healthy(stack: Stack) -> None:
    assert stack.first_answers and all(status == 200 for status in stack.first_answers), stack.first_answers
    for name in REPLICAS:
        assert health(_container(stack, name)) == "healthy"
    print(f"\ncompose up (replicas healthy, balancer started) in {stack.up_seconds:.1f} s")


def test_workers_are_spread_over_the_replicas_and_stick_to_theirs(stack: Stack) -> None:
    before = _active_sessions(stack)
    sessions: list[tuple[str, str]] = []
    with httpx.Client(base_url=stack.url, timeout=30, headers=AUTH) as http:
        for w in range(30):
            opened = http.post("/sessions", json={"regex": "[a-z]{1,8}"}, headers={"X-Worker-Id": f"worker-{w}"})
            assert opened.status_code == 201, opened.text
            sessions.append((f"worker-{w}", opened.json()["session_id"]))
        for _ in range(5):
            for worker, sid in reversed(sessions):
                assert http.get(f"/sessions/{sid}/mask", headers={"X-Worker-Id": worker}).status_code == 200
        spread = _delta(before, _active_sessions(stack))
        for worker, sid in sessions:
            http.delete(f"/sessions/{sid}", headers={"X-Worker-Id": worker})
    assert sum(spread) == 30 and min(spread) > 0, spread
    print(f"\n30 workers over 3 replicas: {spread}")


def test_requests_without_a_worker_id_stick_to_one_replica(stack: Stack) -> None:
    before = _active_sessions(stack)
    with httpx.Client(base_url=stack.url, timeout=30, headers=AUTH) as http:
        sids = []
        for _ in range(12):
            opened = http.post("/sessions", json={"regex": "[0-9]{1,4}"})
            assert opened.status_code == 201, opened.text
            sids.append(opened.json()["session_id"])
        for _ in range(3):
            for sid in reversed(sids):
                mask = http.get(f"/sessions/{sid}/mask")
                assert mask.status_code == 200, mask.text
        spread = _delta(before, _active_sessions(stack))
        for sid in sids:
            http.delete(f"/sessions/{sid}")
    assert spread == [0, 0, 12]


def _opens_on(stack: Stack, http: httpx.Client, worker: str, replica: str) -> bool:
    """Open a session as ``worker``: whether it landed on ``replica`` (then it is closed again)."""
    before = _active_sessions(stack)[replica]
    opened = http.post("/sessions", json={"regex": "[a-z]+"}, headers={"X-Worker-Id": worker})
    assert opened.status_code == 201, opened.text
    landed = _active_sessions(stack)[replica] == before + 1
    http.delete(f"/sessions/{opened.json()['session_id']}", headers={"X-Worker-Id": worker})
    return landed


def test_a_replica_restarted_at_a_new_address_gets_its_workers_back_without_a_reload(stack: Stack) -> None:
    replica = "guidance-2"
    with httpx.Client(base_url=stack.url, timeout=30, headers=AUTH) as http:
        worker = next(w for w in (f"mover-{i}" for i in range(60)) if _opens_on(stack, http, w, replica))
        container = _container(stack, replica)
        network = f"{PROJECT}_default"
        address = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        old = docker("inspect", "-f", address, container).strip()
        # re-created elsewhere: stopped (its connections closed), then started at another address,
        # as a placeholder holds the old one
        docker("stop", "-t", "10", container)
        docker("network", "disconnect", network, container)
        docker("network", "connect", "--alias", replica, network, container)
        placeholder = "guidance-ci-placeholder"
        docker("run", "-d", "--rm", "--name", placeholder, "--network", network, "python:3.11-slim", "sleep", "300")
        try:
            docker("start", container)
        finally:
            docker("rm", "-f", placeholder, check=False)
        new = docker("inspect", "-f", address, container).strip()
        assert new != old

        # nginx looks the name up again (resolver valid=10s, `resolve`): resolved once at start,
        # the worker would stay on another replica for good
        def back() -> bool:
            try:
                return _opens_on(stack, http, worker, replica)
            except AssertionError:  # the replica still starting: its /stats does not answer yet
                return False

        took = wait_for(f"{worker} back on {replica} at {new}", back, 90)
    print(f"\n{replica} restarted at {new} (was {old}): its worker back {took:.1f} s later, nginx not reloaded")


def test_prometheus_scrapes_every_replica(stack: Stack) -> None:
    def all_up() -> bool:
        try:
            answer = httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": "up"}, timeout=5).json()
        except (httpx.HTTPError, json.JSONDecodeError):
            return False
        up = {r["metric"]["instance"]: r["value"][1] for r in answer["data"]["result"]}
        return up == {f"{name}:8000": "1" for name in REPLICAS}

    wait_for("Prometheus scraping the three replicas", all_up, timeout=90)


def test_a_killed_replica_is_replayed_by_the_client_and_restarted(stack: Stack, default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    before = _active_sessions(stack)
    with GuidanceClient(stack.url, api_key=KEY, retries=8, backoff=0.2) as client:
        grammars = [RemoteGrammar.open(client, {"regex": "[a-z]{2,6}-[0-9]{2}"}) for _ in range(8)]
        for g in grammars:
            assert g.accept_tokens(tok.encode("ab"))
        masks = np.zeros((len(grammars), grammars[0].mask_words), dtype=np.int32)
        for i, g in enumerate(grammars):
            g.fill_next_token_bitmask(masks, i)
        holders = [name for name, n in zip(REPLICAS, _delta_by_name(before, _active_sessions(stack))) if n]
        assert len(holders) == 1, holders  # a client's sessions live on one replica
        victim = _container(stack, holders[0])
        pid = int(docker("inspect", "-f", "{{.State.Pid}}", victim).strip())
        os.kill(pid, signal.SIGKILL)  # a crash, not `docker kill` (which a restart policy honours)

        replayed = np.zeros_like(masks)
        for i, g in enumerate(grammars):
            g.fill_next_token_bitmask(replayed, i)
            assert g.accept_tokens(tok.encode("c-4"))
        assert np.array_equal(replayed, masks)
        assert client.replays >= len(grammars)
        for g in grammars:
            assert g.text() == "abc-4"
            g.close()
    took = wait_for(f"{holders[0]} restarted and healthy", lambda: health(victim) == "healthy", timeout=120)
    restarts = int(docker("inspect", "-f", "{{.RestartCount}}", victim).strip())
    assert restarts >= 1
    print(f"\nkilled {holders[0]}: {client.replays} sessions replayed; healthy again {took:.1f} s later")


def _delta_by_name(before: dict[str, int], after: dict[str, int]) -> list[int]:
    return [after[name] - before[name] for name in REPLICAS]

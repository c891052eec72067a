"""Replicas behind a real nginx, one killed mid-run: every session completes, output unchanged.

Runs the real thing on loopback: three ``guidance-server`` processes, nginx with the routing of
``deploy/nginx/guidance.conf`` (consistent hash on ``X-Worker-Id``), and a worker driving 32
sessions with seeded sampling from the served masks. The replica holding the worker's sessions is
killed (SIGKILL) mid-run; the client replays each session on the replica nginx picks next. The
outputs must equal a reference run against a single server with the same seeds.

Needs nginx (Debian package ``nginx-light``; ``.ci/run`` installs it); skipped without it.
Run alone: ``.venv/bin/python -m pytest tests/service/test_replicas.py -s``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from core import Tokenizer
from guidance_client import GrammarBatch, GuidanceClient, RemoteGrammar
from tests.server import free_port, start, stop
from tests.service.helpers import sample_next

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")

TEMPLATE = (
    "Name: {{gen 'name' regex='[A-Z][a-z]{1,6}'}}\nAge: {{gen 'age' regex='[0-9]{1,2}'}}\n"
    "OK: {{select 'ok' options=['yes', 'no']}}"
)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999}, "tag": {"enum": ["a", "bb", "ccc"]}},
    "required": ["id", "tag"],
    "additionalProperties": False,
}
SESSIONS = 32
KILL_AT_STEP = 6


@contextlib.contextmanager
def _servers(n: int) -> Iterator[list[tuple[int, subprocess.Popen[str]]]]:
    running = [start() for _ in range(n)]
    try:
        yield [(int(r.url.rsplit(":", 1)[1]), r.proc) for r in running]
    finally:
        for r in running:
            stop(r, timeout=15)


def nginx_config(listen: int, upstreams: list[int], prefix: Path) -> str:
    """deploy/nginx/guidance.conf with loopback upstreams, in a minimal main config."""
    site = (ROOT / "deploy" / "nginx" / "guidance.conf").read_text()
    servers = "".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;\n" for p in upstreams)
    site, n = re.subn(r"(?m)^    server guidance-\d+:8000[^\n]*\n", "", site)
    assert n == 3, "deploy/nginx/guidance.conf changed shape"
    site = site.replace("    keepalive 64;", servers + "    keepalive 64;")
    site = re.sub(r"(?m)^    listen 8000;", f"    listen 127.0.0.1:{listen};", site)
    temp = prefix / "tmp"
    return f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{site}
}}
"""


@contextlib.contextmanager
def _nginx(upstreams: list[int]) -> Iterator[int]:
    assert NGINX is not None
    prefix = Path(tempfile.mkdtemp(prefix="guidance-nginx-"))
    (prefix / "tmp").mkdir()
    os.chmod(prefix, 0o777)
    os.chmod(prefix / "tmp", 0o777)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(port, upstreams, prefix))
    check = subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf)])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(prefix, ignore_errors=True)


def _drive(client: GuidanceClient, tok: Tokenizer, kill: Any = None) -> tuple[list[list[int]], list[float]]:
    """32 sessions (half template, half schema) walked to EOS with seeded sampling; one batch step
    per decoding step. ``kill(step)`` runs before each step. Returns tokens and step latencies."""
    eos = tok.eos_token_id
    grammars = [
        RemoteGrammar.open(client, {"template": TEMPLATE} if i % 2 == 0 else {"json_schema": SCHEMA})
        for i in range(SESSIONS)
    ]
    rngs = [np.random.default_rng(1000 + i) for i in range(SESSIONS)]
    batch = GrammarBatch(client, grammars)
    bitmask = np.zeros((SESSIONS, grammars[0].mask_words), dtype=np.int32)
    pending: list[list[int]] = [[] for _ in grammars]
    latencies: list[float] = []
    for step in range(200):
        if kill is not None:
            kill(step)
        start = time.perf_counter()
        statuses = batch.step(pending, bitmask)
        latencies.append(time.perf_counter() - start)
        assert all(s.status == "ok" for s in statuses), [s for s in statuses if s.status != "ok"]
        if all(g.is_terminated() for g in grammars):
            break
        pending = sample_next([g.is_terminated() for g in grammars], bitmask, tok.vocab_size, eos, rngs, 0.4)
    assert all(g.is_terminated() for g in grammars)
    for g in grammars:
        g.close()
    return [list(g.tokens) for g in grammars], latencies


def _sessions_on(port: int) -> int:
    stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()
    return int(stats["sessions"]["active"])


def test_killing_a_replica_loses_nothing_but_time(default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    with _servers(3) as replicas:
        # the reference: one server, no balancer, nothing killed
        ref_port = replicas[0][0]
        with GuidanceClient(f"http://127.0.0.1:{ref_port}") as direct:
            reference, _ = _drive(direct, tok)

        with _nginx([p for p, _ in replicas]) as lb_port:
            client = GuidanceClient(f"http://127.0.0.1:{lb_port}", worker_id="worker-7", retries=6)
            killed: list[int] = []

            def kill(step: int) -> None:
                if step == KILL_AT_STEP:
                    holders = [(p, proc) for p, proc in replicas if _sessions_on(p) > 0]
                    assert len(holders) == 1, "the worker's sessions should all live on one replica"
                    port, proc = holders[0]
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=10)
                    killed.append(port)

            outputs, latencies = _drive(client, tok, kill)
            client.close()

        assert killed, "no replica was killed"
        assert outputs == reference
        texts = [tok.decode([t for t in ts if t != tok.eos_token_id]) for ts in outputs]
        assert all(re.fullmatch(r"Name: [A-Z][a-z]{1,6}\nAge: [0-9]{1,2}\nOK: (yes|no)", t) for t in texts[0::2])
        assert client.replays >= SESSIONS
        typical = float(np.median(latencies))
        worst = max(latencies)
        print(
            f"\nreplicas: killed 127.0.0.1:{killed[0]} at step {KILL_AT_STEP}; "
            f"sessions replayed {client.replays}; step median {typical * 1e3:.1f} ms, "
            f"the step with the failover {worst * 1e3:.1f} ms"
        )


def test_requests_without_a_worker_id_stick_to_one_replica() -> None:
    # curl, or a client built without guidance_client: nginx hashes the client address instead
    # (round-robin would send most masks to replicas that never saw the session: 404)
    with _servers(3) as replicas, _nginx([p for p, _ in replicas]) as lb_port:
        with httpx.Client(base_url=f"http://127.0.0.1:{lb_port}", timeout=30) as http:
            sids = []
            for i in range(12):
                opened = http.post("/sessions", json={"regex": f"[a-z]{{{i + 1}}}"})
                assert opened.status_code == 201, opened.text
                sids.append(opened.json()["session_id"])
            for _ in range(3):
                for sid in reversed(sids):
                    mask = http.get(f"/sessions/{sid}/mask")
                    assert mask.status_code == 200, mask.text
        assert sorted(_sessions_on(p) for p, _ in replicas) == [0, 0, 12]

"""A real ``python -m service`` process on a free loopback port, for the tests that need one
(and ``tests/reliability/load.py``)."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        """Resident set size of the server process (Linux ``/proc``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))


def _limit_descriptors(n: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def start(
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 90,
    port: int | None = None,
    python: str | None = None,
    descriptors: int | None = None,
) -> Server:
    """Start ``python -m service`` on ``port`` (default: a free one; give the port of a server
    that died to restart it in its place) and wait until ``/readyz`` answers 200. ``python``: the
    interpreter to run it with (default: this one; another venv's, for tests whose own packages
    cannot share the server's venv). ``descriptors``: the server's descriptor limit (soft and hard)."""
    port = free_port() if port is None else port
    proc = subprocess.Popen(
        [
            python or sys.executable,
            "-m",
            "service",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *args,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        preexec_fn=None if descriptors is None else lambda: _limit_descriptors(descriptors),
    )
    # A server a test kills with SIGSEGV leaves no core file behind (in the checkout, or anywhere).
    with contextlib.suppress(ProcessLookupError):  # gone already: the readiness wait says why
        resource.prlimit(proc.pid, resource.RLIMIT_CORE, (0, 0))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=2) as http:
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"server did not become ready:\n{proc.communicate(timeout=5)[1][-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if http.get("/readyz").status_code == 200:
                    return Server(proc, url)
            time.sleep(0.1)


def stop(server: Server, timeout: float = 30) -> tuple[int, str]:
    """SIGTERM (graceful), then wait; returns the exit status and stderr."""
    if server.proc.poll() is None:
        server.proc.terminate()
    try:
        _, err = server.proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        _, err = server.proc.communicate(timeout=10)
    return server.proc.returncode, err


@contextlib.contextmanager
def running(args: Sequence[str] = (), env: dict[str, str] | None = None, python: str | None = None) -> Iterator[Server]:
    server = start(args, env, python=python)
    try:
        yield server
    finally:
        stop(server)

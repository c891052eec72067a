"""Shared machinery of the benchmarks: servers in subprocesses, RSS, statistics, machine facts.

Servers are started the way an operator starts them (``python -m service --port N``) on a free
loopback port, awaited on ``/readyz`` and terminated at the end; nothing here reaches past
loopback.
"""

from __future__ import annotations

import datetime
import http.client
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bench.cases import Case

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "ROOT",
    "Server",
    "free_port",
    "machine",
    "median",
    "open_grammars",
    "percentile",
    "rss_bytes",
    "server_metrics",
    "slow_lane_calls",
    "wait_ready",
]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from ``/proc/<pid>/status`` (``VmRSS``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_ready(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 60.0, path: str = "/readyz") -> float:
    """Poll ``path`` every 10 ms until it answers 200; returns the seconds waited."""
    start = time.perf_counter()
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return time.perf_counter() - start
        except OSError:
            pass
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"server on port {port} not ready after {timeout} s")
        time.sleep(0.01)


class Server:
    """A subprocess serving HTTP on loopback, terminated on exit.

    Args:
        args: the module and its arguments after ``python -m`` (``--port`` is appended);
            defaults to the constraint server itself, quiet.
        ready_path: the path that answers 200 once the server is ready.
        env: extra environment variables of the server process.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        pid: the server's process id (the Python process itself: no reloader, no workers).
        startup_seconds: from spawning the process to the first 200 on ``ready_path``.
    """

    def __init__(
        self, args: Sequence[str] | None = None, ready_path: str = "/readyz", env: Mapping[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.args = list(args) if args is not None else ["service", "--log-level", "warning"]
        self.ready_path = ready_path
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Self:
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.args, "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_ready(self.port, self.proc, path=self.ready_path)
        except (RuntimeError, TimeoutError, OSError):
            err = self.stop()
            raise RuntimeError(f"{' '.join(self.args)} failed to start:\n{err[-2000:]}") from None
        self.startup_seconds = time.perf_counter() - start
        return self

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stop(self) -> str:
        """Terminate (SIGTERM, then SIGKILL after 10 s); returns what the server wrote to stderr."""
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        return err.decode("utf-8", "replace")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def open_grammars(client: Any, case: Case, n: int) -> tuple[Any, list[Any]]:
    """Compile ``case`` once and open ``n`` sessions on it; returns ``(program_info, grammars)``."""
    from guidance_client import RemoteGrammar

    info = client.compile_spec(case.body)
    grammars = [RemoteGrammar(client, case.body, info, client.create_session(info.program_id)) for _ in range(n)]
    return info, grammars


def server_metrics(
    url: str, names: Sequence[str] = ("guidance_slow_lane_programs", "guidance_slow_lane_calls_total")
) -> dict[str, float]:
    """Unlabelled samples of the server's ``/metrics`` by name (names it does not export are left out)."""
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode("utf-8", "replace")
    finally:
        conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            out[name] = float(value)
    return out


def slow_lane_calls(url: str) -> int | None:
    """Requests the server ran in its slow lane (a thread pool) so far; None if not exported."""
    value = server_metrics(url).get("guidance_slow_lane_calls_total")
    return None if value is None else int(value)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def percentile(xs: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    ordered = sorted(xs)
    return float(ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))])


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "nproc": usable,
        "cpu_model": model,
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llguidance": _version("llguidance"),
        "numpy": _version("numpy"),
        "uvicorn": _version("uvicorn"),
        "starlette": _version("starlette"),
        "fastapi": _version("fastapi"),
        "xgrammar": _version("xgrammar"),
        "outlines_core": _version("outlines-core") or _version("outlines_core"),
    }

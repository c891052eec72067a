"""The container tier: the Dockerfile and docker-compose.yml built and run for real.

Run by ``.ci/containers``, which installs Docker, starts a daemon of its own, builds the base and
stand-in images locally (no registry is reached for images) and then runs
``pytest -m containers tests/containers``. Without a reachable daemon every test here is skipped.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "guidance-server:latest"
KEY = "containers-key-0123456789abcdef"


def run_docker(*args: str, timeout: float = 600, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the Docker CLI (``$DOCKER``, default ``docker``), whatever its exit code."""
    return subprocess.run(
        [os.environ.get("DOCKER", "docker"), *args], capture_output=True, text=True, timeout=timeout, input=stdin
    )


def docker(*args: str, check: bool = True, timeout: float = 600, stdin: str | None = None) -> str:
    """Run the Docker CLI; its standard output (AssertionError on a failure when ``check``)."""
    done = run_docker(*args, timeout=timeout, stdin=stdin)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done.stdout


def wait_for(what: str, ready: Callable[[], bool], timeout: float) -> float:
    """Poll ``ready`` until it is true; the seconds it took (AssertionError after ``timeout``)."""
    start = time.monotonic()
    while not ready():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - start


def health(container: str) -> str:
    """The Docker health status of a container (``starting``, ``healthy``, ``unhealthy``)."""
    return docker("inspect", "-f", "{{.State.Health.Status}}", container, check=False).strip()


@pytest.fixture(scope="session")
def daemon() -> None:
    try:
        reachable = run_docker("info", timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        reachable = False
    if not reachable:
        pytest.skip("no Docker daemon reachable (.ci/containers starts one)")


@pytest.fixture(scope="session")
def image(daemon: None) -> Iterator[str]:
    """The Dockerfile, unchanged, built on the locally built base image (pip reaches the index
    through the host's network)."""
    docker("build", "--network", "host", "-t", IMAGE, str(ROOT), timeout=1800)
    yield IMAGE

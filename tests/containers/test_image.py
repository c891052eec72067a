"""The image of the Dockerfile: what goes into it, and one container of it serving for real."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from packaging.utils import canonicalize_name

from core import GuidanceBackend, GuidanceGrammar, Tokenizer
from core.bitmask import from_bytes, mask_words
from tests.containers.conftest import KEY, ROOT, docker, health, run_docker, wait_for
from tests.service.helpers import PERSON_SCHEMA

pytestmark = pytest.mark.containers

CONTEXT_PROBE = "guidance-ci/context-probe:latest"


def test_the_build_context_holds_only_what_the_image_installs(image: str) -> None:
    # the checkout has .git and .venv (CI made it), maybe an .env with keys: none reaches the daemon
    docker("build", "-q", "-t", CONTEXT_PROBE, "-f", "-", str(ROOT), stdin="FROM python:3.11-slim\nCOPY . /context\n")
    try:
        listing = docker("run", "--rm", CONTEXT_PROBE, "find", "/context", "-mindepth", "1", "-maxdepth", "2")
    finally:
        docker("rmi", CONTEXT_PROBE, check=False)
    paths = {line.removeprefix("/context/") for line in listing.split()}
    top = {p for p in paths if "/" not in p}
    assert top == {"pyproject.toml", "README.md", "LICENSE", "core", "service", "client", "deploy"}
    assert {p for p in paths if p.startswith("deploy/")} == {"deploy/requirements.lock"}
    assert not any(p.endswith(("__pycache__", ".egg-info")) or "/.env" in p for p in paths), paths


def _size(ref: str) -> int:
    return int(docker("image", "inspect", "-f", "{{.Size}}", ref).strip())


def test_the_image_adds_the_venv_and_nothing_else(image: str) -> None:
    # every byte the image adds to its base is its venv: no copied wheels deleted in a later layer
    added = _size(image) - _size("python:3.11-slim")
    venv = int(docker("run", "--rm", image, "du", "-sb", "/opt/guidance").split()[0])
    assert 0.97 * venv <= added <= 1.03 * venv, (added, venv)
    layers = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image)
    assert "rm -rf" not in layers


def test_the_image_holds_the_locked_versions_exactly(image: str) -> None:
    def pins(lines: list[str]) -> dict[str, str]:
        # "name==version", or "name @ file:///src" for the project itself
        pairs = (re.split(r"==| @ ", line) for line in lines if line and not line.startswith("#"))
        return {canonicalize_name(name): version for name, version in pairs}

    pinned = pins((ROOT / "deploy" / "requirements.lock").read_text().splitlines())
    installed = pins(docker("run", "--rm", image, "pip", "freeze", "--all").splitlines())
    assert "guidance-server" in installed
    del installed["guidance-server"]
    installed.pop("pip", None)  # the venv's own installer
    assert installed == pinned


def test_without_keys_the_image_refuses_to_serve_an_open_api(image: str) -> None:
    refused = run_docker("run", "--rm", image, timeout=120)
    assert refused.returncode == 2, refused
    assert "refusing to serve without API keys on 0.0.0.0" in refused.stderr


@pytest.fixture(scope="module")
def replica(image: str) -> Iterator[tuple[str, str]]:
    """One container of the image, with a key, published on a loopback port: (name, url)."""
    name = "guidance-ci-replica"
    docker("rm", "-f", name, check=False)
    docker("run", "-d", "--name", name, "-p", "127.0.0.1::8000", "-e", f"GUIDANCE_SERVER_API_KEYS={KEY}", image)
    try:
        port = docker("port", name, "8000/tcp").split()[0].rsplit(":", 1)[1]
        yield name, f"http://127.0.0.1:{port}"
    finally:
        docker("rm", "-f", name, check=False)


def test_the_container_runs_unprivileged_and_its_health_check_passes(replica: tuple[str, str]) -> None:
    name, _ = replica
    took = wait_for("the image's HEALTHCHECK", lambda: health(name) == "healthy", timeout=120)
    assert docker("exec", name, "id", "-u").strip() == "10001"
    assert docker("exec", name, "id", "-un").strip() == "guidance"
    print(f"\ncontainer healthy {took:.1f} s after start")


def test_the_container_compiles_and_masks_as_the_engine_does_in_process(
    replica: tuple[str, str], default_tokenizer: Tokenizer
) -> None:
    name, url = replica
    wait_for("the image's HEALTHCHECK", lambda: health(name) == "healthy", timeout=120)
    tok = default_tokenizer
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("/compile", json={"regex": "[a-z]+"}).status_code == 401
        compiled = http.post("/compile", json={"json_schema": PERSON_SCHEMA, "open_session": True}, headers=auth)
        assert compiled.status_code == 200, compiled.text
        sid = compiled.json()["session_id"]
        local = GuidanceGrammar(GuidanceBackend(tok).compile_json_schema(PERSON_SCHEMA), tok)
        expected = np.zeros((1, mask_words(tok.vocab_size)), dtype=np.int32)
        for piece in ['{"name":"', "Bob", '","age":', "4"]:
            ids = tok.encode(piece)
            accepted = http.post(f"/sessions/{sid}/accept", json={"tokens": ids}, headers=auth)
            assert accepted.status_code == 200, accepted.text
            assert local.accept_tokens(ids)
            local.fill_next_token_bitmask(expected, 0)
            mask = http.get(f"/sessions/{sid}/mask", headers=auth)
            assert mask.status_code == 200, mask.text
            assert np.array_equal(from_bytes(mask.content, tok.vocab_size), expected)


def test_the_container_stops_cleanly_on_sigterm(replica: tuple[str, str]) -> None:
    name, _ = replica
    wait_for("the image's HEALTHCHECK", lambda: health(name) == "healthy", timeout=120)
    docker("stop", "-t", "30", name, timeout=60)
    state = json.loads(docker("inspect", "-f", "{{json .State}}", name))
    assert state["ExitCode"] == 0 and not state["OOMKilled"], state

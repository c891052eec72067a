"""The ``guidance-client`` distribution: what it installs, imports and exports."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

import guidance_client

_ROOT = Path(__file__).resolve().parents[2]
_SERVER_STACK = ("fastapi", "starlette", "uvicorn", "pydantic", "pydantic_core", "llguidance", "tiktoken", "orjson")

# A fresh interpreter in which the server's stack cannot be imported at all (as on a worker that
# ran `pip install ./client`), with the client package found from client/ only.
_ISOLATED = f"""
import importlib.abc, sys
BLOCKED = {(*_SERVER_STACK, "prometheus_client", "core", "service")!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not installed on a worker")
        return None

sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(_ROOT / "client")!r})
import numpy
import guidance_client
from guidance_client import *
from guidance_client import protocol, transports, wire
assert guidance_client.__file__.startswith({str(_ROOT / "client")!r}), guidance_client.__file__
client = GuidanceClient("http://127.0.0.1:9", api_key="k")
client.close()
AsyncGuidanceClient("http://127.0.0.1:9")
row = wire.pack_tokens([1, 40], 64)
from guidance_client import alignment, vocabulary
assert vocabulary.sample_ids(10) == list(range(10))
assert wire.allowed_tokens(row, 64).tolist() == [1, 40]
loaded = sorted(m for m in BLOCKED if m in sys.modules)
assert not loaded, loaded
print("ok")
"""


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match is not None, requirement
    return match.group().lower()


def test_the_client_imports_without_the_server_stack() -> None:
    result = subprocess.run(
        [sys.executable, "-I", "-c", _ISOLATED], capture_output=True, text=True, timeout=60, check=False, cwd="/"
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_the_wire_module_needs_numpy_only() -> None:
    code = (
        "import sys, guidance_client.wire\n"
        "assert 'httpx' not in sys.modules\n"
        "assert 'guidance_client._sync.client' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_distribution_depends_on_numpy_and_httpx_only() -> None:
    project = tomllib.loads((_ROOT / "client" / "pyproject.toml").read_text(encoding="utf-8"))
    requirements = {_name(r) for r in project["project"]["dependencies"]}
    assert requirements == {"numpy", "httpx"}
    assert project["project"]["name"] == "guidance-client"
    packages = set(project["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.relative_to(_ROOT / "client").parent.parts)
        for p in (_ROOT / "client" / "guidance_client").rglob("__init__.py")
    }
    assert packages == found  # no subpackage left out of the wheel
    assert project["tool"]["setuptools"]["package-data"]["guidance_client"] == ["py.typed"]
    assert (_ROOT / "client" / "guidance_client" / "py.typed").is_file()


def test_the_servers_install_includes_the_client() -> None:
    project = tomllib.loads((_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    find = project["tool"]["setuptools"]["packages"]["find"]
    assert "client" in find["where"] and "guidance_client*" in find["include"]
    server = {_name(r) for r in project["project"]["dependencies"]}
    client = tomllib.loads((_ROOT / "client" / "pyproject.toml").read_text(encoding="utf-8"))
    assert {_name(r) for r in client["project"]["dependencies"]} <= server
    assert Path(guidance_client.__file__).resolve().is_relative_to(_ROOT / "client")


def test_the_sync_client_is_generated_from_the_async_source() -> None:
    result = subprocess.run(
        [sys.executable, str(_ROOT / "scripts" / "unasync_client.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "module",
    ["guidance_client"]
    + [
        f"guidance_client.{m}"
        for m in (
            *("aligned", "alignment", "errors", "events", "protocol"),
            *("replay", "transports", "vocab_gguf", "vocabulary", "wire"),
        )
    ],
)
def test_all_is_sorted_and_importable(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__all__ == sorted(mod.__all__)
    for name in mod.__all__:
        assert getattr(mod, name) is not None
    with pytest.raises(AttributeError):
        getattr(mod, "nonexistent")


def test_service_client_is_a_deprecated_re_export() -> None:
    sys.modules.pop("service.client", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("service.client")
    assert any(issubclass(w.category, DeprecationWarning) and "guidance_client" in str(w.message) for w in caught)
    for name in old.__all__:
        assert getattr(old, name) is getattr(guidance_client, name)
    import service

    assert service.GuidanceClient is guidance_client.GuidanceClient

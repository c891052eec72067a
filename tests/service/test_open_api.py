"""``guidance-server`` refuses to serve an open API on a network address unless told to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import service.cli
from service.cli import main as cli_main

KEY = "open-test-0123456789abcdef"


class _Bound:
    """Stands in for uvicorn's server: records where the app would be served, serves nothing."""

    hosts: list[str] = []

    def __init__(self, config: Any) -> None:
        self.config = config
        self.started = False

    def run(self) -> None:
        self.hosts.append(self.config.host)
        self.started = True


@pytest.fixture
def bound(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    for name in ("API_KEYS", "API_KEYS_FILE", "ADMIN_API_KEYS", "ADMIN_API_KEYS_FILE", "ALLOW_OPEN", "HOST"):
        monkeypatch.delenv(f"GUIDANCE_SERVER_{name}", raising=False)
    hosts: list[str] = []
    monkeypatch.setattr(_Bound, "hosts", hosts)
    monkeypatch.setattr(service.cli, "_DrainingServer", _Bound)
    return hosts


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "guidance.internal"])
def test_without_keys_a_network_address_is_refused(
    bound: list[str], capsys: pytest.CaptureFixture[str], host: str
) -> None:
    assert cli_main(["--host", host, "--port", "0"]) == 2
    assert bound == []
    err = capsys.readouterr().err
    assert f"refusing to serve without API keys on {host}" in err and "GUIDANCE_SERVER_ALLOW_OPEN=true" in err


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_without_keys_loopback_is_served(bound: list[str], host: str) -> None:
    assert cli_main(["--host", host, "--port", "0"]) == 0
    assert bound == [host]


def test_allow_open_serves_without_keys_from_the_environment_or_the_flag(
    bound: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli_main(["--host", "0.0.0.0", "--port", "0", "--allow-open"]) == 0
    monkeypatch.setenv("GUIDANCE_SERVER_HOST", "0.0.0.0")
    monkeypatch.setenv("GUIDANCE_SERVER_ALLOW_OPEN", "true")
    assert cli_main(["--port", "0"]) == 0
    assert bound == ["0.0.0.0", "0.0.0.0"]


def test_keys_listed_or_in_a_file_serve_a_network_address(
    bound: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GUIDANCE_SERVER_HOST", "0.0.0.0")
    monkeypatch.setenv("GUIDANCE_SERVER_ADMIN_API_KEYS", KEY)
    assert cli_main(["--port", "0"]) == 0
    monkeypatch.delenv("GUIDANCE_SERVER_ADMIN_API_KEYS")
    (tmp_path / "keys").write_text(f"# the workers' key\n{KEY}\n")
    monkeypatch.setenv("GUIDANCE_SERVER_API_KEYS_FILE", str(tmp_path / "keys"))
    assert cli_main(["--port", "0"]) == 0
    # a key file with no key in it leaves the API open: refused
    (tmp_path / "keys").write_text("# none yet\n")
    assert cli_main(["--port", "0"]) == 2
    assert bound == ["0.0.0.0", "0.0.0.0"]

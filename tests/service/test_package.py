"""The package's surface: exports, the committed OpenAPI schema, settings and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import service
from service import Settings, create_app
from service.cli import _overrides, _parser, main, openapi_text, page_url
from tests.server import start, stop

_ROOT = Path(__file__).resolve().parents[2]


def test_all_is_sorted_and_importable() -> None:
    assert service.__all__ == sorted(service.__all__)
    for name in service.__all__:
        assert getattr(service, name) is not None
    with pytest.raises(AttributeError):
        service.nonexistent  # noqa: B018


def test_committed_openapi_yaml_is_the_apps_schema() -> None:
    committed = yaml.safe_load((_ROOT / "openapi.yaml").read_text(encoding="utf-8"))
    assert committed == create_app(Settings()).openapi(), "regenerate: python -m service openapi > openapi.yaml"
    assert yaml.safe_load(openapi_text()) == committed


def test_openapi_documents_the_mask_layout_and_problems() -> None:
    schema = create_app(Settings()).openapi()
    mask = schema["paths"]["/sessions/{session_id}/mask"]["get"]
    content = mask["responses"]["200"]["content"]
    assert content["application/octet-stream"]["schema"]["format"] == "binary"
    assert "little-endian int32" in mask["responses"]["200"]["description"]
    assert mask["x-mask-layout"]["byte_order"] == "little"
    assert {p["name"] for p in mask["parameters"]} == {"session_id"}
    assert set(mask["responses"]["200"]["headers"]) == {"X-Vocab-Size", "X-Mask-Words", "X-Terminated"}
    for path, operations in schema["paths"].items():
        for op in operations.values():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"], (path, status)
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUIDANCE_SERVER_PORT", "9123")
    monkeypatch.setenv("GUIDANCE_SERVER_TOKENIZERS", "default, gpt2=/models/gpt2/tokenizer.json")
    monkeypatch.setenv("GUIDANCE_SERVER_MAX_TOKENS_PER_ACCEPT", "77")
    settings = Settings()
    assert settings.port == 9123
    assert settings.tokenizers == ["default", "gpt2=/models/gpt2/tokenizer.json"]
    assert settings.limits().max_tokens_per_accept == 77
    monkeypatch.setenv("GUIDANCE_SERVER_TOKENIZERS", '["default"]')
    assert Settings().tokenizers == ["default"]


def test_defaults_are_the_documented_ones() -> None:
    s = Settings()
    assert (s.host, s.port, s.tokenizers) == ("127.0.0.1", 8000, ["default"])
    assert (s.max_body_bytes, s.max_sessions, s.session_ttl_seconds) == (8 * 1024 * 1024, 10_000, 600.0)
    assert s.compile_workers == 2
    assert s.limits() == type(s.limits())()


def test_cli_options_override_settings() -> None:
    args = _parser().parse_args(["--port", "9000", "--tokenizer", "gpt2=/x/tokenizer.json", "--max-sessions", "5"])
    overrides = _overrides(args)
    assert overrides == {"port": 9000, "max_sessions": 5, "tokenizers": ["default", "gpt2=/x/tokenizer.json"]}
    assert Settings(**overrides).max_sessions == 5


def test_cli_prints_the_openapi_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["openapi"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == create_app(Settings()).openapi()


def test_python_m_service_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "--tokenizer" in result.stdout


def test_the_usage_line_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert "{serve,openapi,check}" in usage, usage


def test_check_after_other_options_says_it_comes_first(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "9000", "check"])
    assert exit_info.value.code == 2
    assert "check comes first" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("::", "http://[::1]:8000"),
        ("fe80::1", "http://[fe80::1]:8000"),
        ("example.org", "http://example.org:8000"),
    ],
)
def test_page_url_is_where_a_local_browser_reaches_the_server(host: str, url: str) -> None:
    assert page_url(host, 8000) == url


def test_the_start_up_log_names_the_playground_and_the_api_docs() -> None:
    server = start(["--log-level", "info"])
    _, err = stop(server)
    assert f"playground: {server.url}/ui, API docs: {server.url}/docs" in err, err[-2000:]


def test_the_distributions_carry_the_mit_licence() -> None:
    from importlib import metadata

    licence = (_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License\n")
    assert (_ROOT / "client" / "LICENSE").read_text(encoding="utf-8") == licence
    dist = metadata.distribution("guidance-server")
    # an SPDX expression (PEP 639), which setuptools writes as License-Expression
    assert dist.metadata["License-Expression"] == "MIT"
    assert "LICENSE" in (dist.metadata.get_all("License-File") or [])

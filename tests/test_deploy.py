"""The deployment files are consistent with each other (Docker runs them in tests/containers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_runs_replicas_behind_the_tested_nginx_config() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    replicas = sorted(name for name in services if name.startswith("guidance-"))
    assert replicas == ["guidance-1", "guidance-2", "guidance-3"]
    for name in replicas:
        assert services[name]["build"] == "."
    mounts = {m.split(":")[0] for s in services.values() for m in s.get("volumes", [])}
    for mount in mounts:
        assert (ROOT / mount).exists(), mount
    nginx = (ROOT / "deploy/nginx/guidance.conf").read_text()
    # the worker id, or the client address when there is none (never an empty, round-robin key)
    assert "hash $guidance_worker consistent;" in nginx
    assert re.search(r'map \$http_x_worker_id \$guidance_worker \{\s*""\s+\$remote_addr;', nginx)
    # names looked up again (a restarted replica's new address), state shared by nginx's workers
    assert re.search(r"(?m)^\s*resolver 127\.0\.0\.11 ", nginx) and re.search(r"(?m)^\s*zone guidance ", nginx)
    servers = re.findall(r"server (guidance-\d+):8000 resolve ", nginx)
    assert sorted(servers) == replicas
    # the balancer starts once the replicas pass the image's health check
    assert services["balancer"]["depends_on"] == {name: {"condition": "service_healthy"} for name in replicas}
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(t.split(":")[0] for t in targets) == replicas


def test_dockerfile_runs_unprivileged_with_a_health_check() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"(?m)^USER guidance$", text)
    assert "HEALTHCHECK" in text and "/readyz" in text
    assert re.search(r"(?m)^FROM python:3\.\d+-slim", text)


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:?message}`` and ``${VAR:-default}``, for the variables in ``env``."""

    def one(m: re.Match[str]) -> str:
        name, op, rest = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise LookupError(f"{name}: {rest}")
        return rest

    return re.sub(r"\$\{(\w+)(:\?|:-)([^}]*)\}", one, value)


def test_compose_restarts_dead_replicas_and_requires_an_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from service import Settings

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    key = "compose-key-0123456789abcdef"
    for name, service in compose["services"].items():
        # a server that dies (a crash included) is started again
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name
        if not name.startswith("guidance-"):
            continue
        env = {k: str(v) for k, v in service["environment"].items()}
        with pytest.raises(LookupError, match="GUIDANCE_API_KEYS"):
            _interpolate(env["GUIDANCE_SERVER_API_KEYS"], {})
        for k in list(env):
            env[k] = _interpolate(env[k], {"GUIDANCE_API_KEYS": key})
            monkeypatch.setenv(k, env[k])
        settings = Settings()
        assert [k.get_secret_value() for k in settings.api_keys] == [key]
        assert settings.admin_api_keys == [] and settings.public_health_and_metrics  # probes stay open


def test_the_build_context_is_what_the_dockerfile_copies_and_nothing_else() -> None:
    # .dockerignore excludes everything, then lets in exactly the Dockerfile's COPY sources (a
    # local .venv, .git or an .env with keys never reaches the daemon; tests/containers checks the
    # context a real daemon receives)
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*"
    allowed = {r[1:] for r in rules if r.startswith("!")}
    copies = re.findall(r"(?m)^COPY (?!--from)(.+)$", (ROOT / "Dockerfile").read_text())
    sources = {src.rstrip("/") for line in copies for src in line.split()[:-1]}
    assert allowed == sources
    for excluded in ("**/.env*", "**/.venv*", "**/__pycache__"):
        assert excluded in rules


def test_the_image_lock_pins_every_runtime_dependency() -> None:
    # The image installs the lock, then the project with --no-deps: a dependency missing from the
    # lock fails the image's `pip check` (or, worse, the server at start).
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lock = (ROOT / "deploy" / "requirements.lock").read_text(encoding="utf-8").splitlines()
    pinned = {canonicalize_name(line.split("==")[0]) for line in lock if "==" in line and not line.startswith("#")}
    needed = {canonicalize_name(Requirement(dep).name) for dep in project["dependencies"]}
    assert needed <= pinned, f"not in deploy/requirements.lock: {sorted(needed - pinned)}"

"""``guidance-server`` (and ``python -m service``): run the server, or print its OpenAPI schema.

    guidance-server                                  # 127.0.0.1:8000, the embedded tekken tokenizer
    guidance-server --port 9000 --tokenizer gpt2=/models/gpt2/tokenizer.json
    guidance-server openapi > openapi.yaml           # regenerate the committed schema
    guidance-server check person.hbs --text 'Name: Ada'  # check texts, in-process (service/check.py)

Command-line options override ``GUIDANCE_SERVER_*`` environment variables, which override the
defaults of :class:`~service.settings.Settings`.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import json
import logging
import socket
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

__all__ = ["main", "openapi_text", "page_url"]

log = logging.getLogger("service")

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class _DrainingServer(uvicorn.Server):
    """A uvicorn server that turns ``/readyz`` to 503 as soon as shutdown is requested, and ends
    the event streams (uvicorn waits for open connections before it stops)."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        state = getattr(getattr(self.config.app, "state", None), "service", None)
        if state is not None:
            state.draining = True
            # event streams end now, not at the shutdown timeout: watchers get their last event
            state.events.close_all("shutdown")
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and getattr(self, "servers", None):
            # uvicorn names the address only: say where a person starts.
            port = self.servers[0].sockets[0].getsockname()[1]
            url = page_url(self.config.host, port)
            log.info("playground: %s/ui, API docs: %s/docs", url, url)


def page_url(host: str, port: int) -> str:
    """The base URL a browser on this machine reaches a server bound to ``host``:``port`` at."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="guidance-server",
        description="A constraint server for LLM inference: token masks from templates, JSON schemas, regexes "
        "and grammars.",
        epilog="guidance-server check --help: check texts against a constraint file, without a server.",
    )
    p.add_argument(
        "command",
        nargs="?",
        choices=("serve", "openapi", "check"),
        default="serve",
        help="serve (default); openapi: print the OpenAPI schema as YAML; check: check texts against a "
        "constraint file, without a server (guidance-server check --help)",
    )
    p.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default 8000)")
    p.add_argument(
        "--allow-open",
        action="store_true",
        default=None,
        help="serve without API keys on a non-loopback address (refused by default)",
    )
    p.add_argument(
        "--tokenizer",
        action="append",
        metavar="NAME=PATH",
        dest="tokenizers",
        help="load a tokenizer.json as NAME (repeatable; 'default' is always loaded first "
        "unless given as default=PATH)",
    )
    p.add_argument("--log-level", choices=_LOG_LEVELS, help="log level (default info)")
    p.add_argument("--access-log", action="store_true", default=None, help="log every request")
    p.add_argument("--max-sessions", type=int, help="most open sessions; more are refused with 429 (default 10000)")
    p.add_argument(
        "--session-ttl", type=float, dest="session_ttl_seconds", help="seconds an idle session lives (default 600)"
    )
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default 8 MiB)")
    p.add_argument(
        "--max-connections", type=int, help="most client connections open at once; more are refused (default 2048)"
    )
    p.add_argument("--compile-workers", type=int, help="compile threads (default 2)")
    p.add_argument(
        "--cache-entries", type=int, dest="cache_max_entries", help="programs kept in the cache (default 256)"
    )
    p.add_argument(
        "--shutdown-timeout",
        type=int,
        dest="shutdown_timeout_seconds",
        help="on SIGTERM, seconds in-flight requests may take before the process exits (default 10)",
    )
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = (
        "host",
        "port",
        "allow_open",
        "log_level",
        "access_log",
        "max_sessions",
        "session_ttl_seconds",
        "max_body_bytes",
        "max_connections",
        "compile_workers",
        "cache_max_entries",
        "shutdown_timeout_seconds",
    )
    out: dict[str, Any] = {f: getattr(args, f) for f in fields if getattr(args, f) is not None}
    if args.tokenizers:
        named = list(args.tokenizers)
        if not any(t.partition("=")[0] == "default" for t in named):
            named.insert(0, "default")
        out["tokenizers"] = named
    return out


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another name: it may resolve to any address
        return False


def openapi_text() -> str:
    """The app's OpenAPI schema as YAML (JSON, which is YAML too, when PyYAML is missing)."""
    from service.app import create_app
    from service.settings import Settings

    schema = create_app(Settings()).openapi()
    try:
        # Imported by name: PyYAML is a test extra, and typed as Any whether or not stubs exist.
        yaml: Any = importlib.import_module("yaml")
    except ImportError:  # pragma: no cover - PyYAML is a test extra
        return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"

    dumper: Any = type("_Dumper", (yaml.SafeDumper,), {})  # a private subclass: the global stays as is

    def _str(dumper: Any, value: str) -> Any:
        # Multi-line descriptions as literal blocks: the file stays readable and diffable.
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    dumper.add_representer(str, _str)
    text: str = yaml.dump(schema, Dumper=dumper, sort_keys=False, allow_unicode=True, width=100)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``guidance-server``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:
        from service.check import main as check_main

        return check_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "check":
        parser.error("check comes first and takes its own options: guidance-server check --help")
    if args.command == "openapi":
        sys.stdout.write(openapi_text())
        return 0

    from pydantic import ValidationError
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    from service.app import create_app
    from service.auth import KeyConfigError, KeyRing
    from service.connections import ConnectionGuard, fit_descriptor_limit, guarded_protocol
    from service.settings import Settings

    try:
        settings = Settings(**_overrides(args))
    except ValidationError as exc:
        print(f"guidance-server: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        open_api = not len(KeyRing.from_settings(settings))
        if open_api and not settings.allow_open and not _is_loopback(settings.host):
            print(
                f"guidance-server: refusing to serve without API keys on {settings.host}: set "
                "GUIDANCE_SERVER_API_KEYS (or GUIDANCE_SERVER_API_KEYS_FILE), bind 127.0.0.1, or "
                "set GUIDANCE_SERVER_ALLOW_OPEN=true to serve an open API",
                file=sys.stderr,
            )
            return 2
        app = create_app(settings, freeze_gc=True)
    except KeyConfigError as exc:
        print(f"guidance-server: invalid settings: {exc}", file=sys.stderr)
        return 2
    max_connections = fit_descriptor_limit(settings.max_connections)
    if max_connections < settings.max_connections:
        logging.getLogger("service").warning(
            "the descriptor limit holds %d connections, not max_connections=%d: raise LimitNOFILE (ulimit -n)",
            max_connections,
            settings.max_connections,
        )
    guard = ConnectionGuard(max_connections, settings.header_timeout_seconds)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        lifespan="on",
        # Connections: a cap and a deadline on request heads (service/connections.py); bodies
        # have theirs in the app. No WebSocket route: an upgrade is an ordinary (404) request.
        http=guarded_protocol(AutoHTTPProtocol, guard),
        ws="none",
        timeout_keep_alive=settings.keep_alive_seconds,
        # SIGTERM: /readyz answers 503 at once (_DrainingServer), new connections are refused,
        # in-flight requests get this long, then are cancelled and the process exits.
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
    )
    server = _DrainingServer(config)
    server.run()
    return 0 if server.started else 1

"""``GET /ui``: the playground and status page, static files kept in ``service/ui/``; ``GET /`` leads there.

The page is plain HTML, CSS and JavaScript modules (no build step) and talks to the server only
through the public HTTP API (see ``docs/playground.md``). It is not part of the workers' API, so
its routes stay out of ``openapi.yaml``.

Every URL in the page is relative: the page lives at ``/ui`` and its files at ``/ui/<name>``, so
the same files work behind a reverse proxy that mounts the server under a path prefix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from service.problems import http_problem_response

__all__ = ["UI_FILES", "router"]

router = APIRouter(tags=["ui"], include_in_schema=False)

# The files served, by name: nothing else under service/ui/ is reachable.
UI_FILES = {
    "index.html": "text/html; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "sessions.js": "text/javascript; charset=utf-8",
    "status.js": "text/javascript; charset=utf-8",
}

# Scripts and styles from this origin only (no inline script); the page fetches this origin only.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (cheap: an ETag), so a server upgrade never runs a stale script.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class _File:
    body: bytes
    media_type: str
    etag: str


_loaded: dict[str, _File] = {}


def _load(name: str) -> _File:
    cached = _loaded.get(name)
    if cached is None:
        body = resources.files("service").joinpath("ui", name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        cached = _loaded[name] = _File(body, UI_FILES[name], etag)
    return cached


def _serve(name: str, request: Request) -> Response:
    file = _load(name)
    headers = {**_HEADERS, "ETag": file.etag}
    if file.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
async def root() -> RedirectResponse:
    """The server's root leads a person to the playground (relative, as ``/ui/``)."""
    return RedirectResponse("ui", status_code=307)


@router.api_route("/ui", methods=["GET", "HEAD"])
async def ui_page(request: Request) -> Response:
    """The playground and status page."""
    return _serve("index.html", request)


@router.api_route("/ui/", methods=["GET", "HEAD"])
async def ui_slash() -> RedirectResponse:
    """``/ui/`` is ``/ui`` (relative, so a path prefix in front of the server is kept)."""
    return RedirectResponse("../ui", status_code=308)


@router.api_route("/ui/{name}", methods=["GET", "HEAD"])
async def ui_file(name: str, request: Request) -> Response:
    """One of the page's files (404 for any other name)."""
    if name not in UI_FILES or name == "index.html":
        return http_problem_response(request.app, 404, f"no such file of the page: {name[:64]!r}")
    return _serve(name, request)

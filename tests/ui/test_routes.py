"""``GET /ui`` and its files, in-process; and that the page calls only the documented API."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import httpx
import pytest

from core import Tokenizer
from service import Settings, create_app
from service.routes.ui import UI_FILES
from tests.service.helpers import assert_problem, serve

UI_DIR = Path(str(resources.files("service").joinpath("ui")))


@pytest.fixture()
async def client(default_tokenizer: Tokenizer) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(Settings(), tokenizers={"default": default_tokenizer})) as c:
        yield c


async def test_ui_serves_the_page_with_a_strict_content_security_policy(client: httpx.AsyncClient) -> None:
    resp = await client.get("/ui")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    # Relative URLs only: the page works under a path prefix.
    assert 'src="ui/app.js"' in resp.text and 'href="ui/playground.css"' in resp.text
    assert "<script>" not in resp.text and " style=" not in resp.text  # nothing inline (CSP)


async def test_every_file_of_the_page_is_served_with_its_type(client: httpx.AsyncClient) -> None:
    on_disk = {p.name for p in UI_DIR.iterdir() if p.is_file()}
    assert on_disk == set(UI_FILES), "service/ui/ and UI_FILES must list the same files"
    for name, media_type in UI_FILES.items():
        if name == "index.html":
            continue
        resp = await client.get(f"/ui/{name}")
        assert resp.status_code == 200, name
        assert resp.headers["content-type"] == media_type
        assert resp.content == (UI_DIR / name).read_bytes()


async def test_unchanged_files_answer_304_to_their_etag(client: httpx.AsyncClient) -> None:
    first = await client.get("/ui/app.js")
    again = await client.get("/ui/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert first.headers["cache-control"] == "no-cache"
    head = await client.head("/ui")
    assert head.status_code == 200


async def test_ui_with_a_slash_redirects_relatively(client: httpx.AsyncClient) -> None:
    resp = await client.get("/ui/")
    assert resp.status_code == 308
    assert resp.headers["location"] == "../ui"


async def test_the_root_leads_to_the_playground(client: httpx.AsyncClient) -> None:
    resp = await client.get("/")
    assert resp.status_code == 307
    assert resp.headers["location"] == "ui"
    followed = await client.get("/", follow_redirects=True)
    assert followed.status_code == 200 and str(followed.url).endswith("/ui")
    assert followed.content == (UI_DIR / "index.html").read_bytes()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_api_description_pages_load_every_file_from_this_server(client: httpx.AsyncClient, page: str) -> None:
    resp = await client.get(page)
    assert resp.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", resp.text)
    urls += re.findall(r"""url: ?["']([^"']+)["']""", resp.text)
    assert urls and not [u for u in urls if not u.startswith("/")], urls
    assert "https://" not in resp.text and "http://" not in resp.text
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 0, url
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts, "the page names no script"


async def test_root_and_api_description_need_no_key(default_tokenizer: Tokenizer) -> None:
    app = create_app(Settings(api_keys=["key-0123456789abcdefghij"]), tokenizers={"default": default_tokenizer})
    async with serve(app) as keyed:
        assert (await keyed.get("/")).status_code == 307
        docs = await keyed.get("/docs")
        assert docs.status_code == 200
        for url in re.findall(r"""(?:src|href)=["']([^"']+)["']""", docs.text):
            assert (await keyed.get(url)).status_code == 200, url
        assert_problem(await keyed.get("/sessions/x/mask"), 401, "unauthorized")


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/index.html", "/ui/..%2Fapp.py", "/ui/%2e%2e/cli.py", "/ui/a/b"])
async def test_anything_else_under_ui_is_a_404_problem(client: httpx.AsyncClient, path: str) -> None:
    assert_problem(await client.get(path), 404, "not-found")


def test_the_page_is_not_part_of_the_openapi_schema() -> None:
    schema = create_app(Settings()).openapi()
    assert not [p for p in schema["paths"] if p.startswith("/ui")]


def _api_calls() -> set[tuple[str, str]]:
    """(METHOD, OpenAPI path) of every API call the page's scripts make."""
    methods = {"get": "GET", "post": "POST", "del": "DELETE"}
    calls: set[tuple[str, str]] = set()
    for script in UI_DIR.glob("*.js"):
        code = script.read_text(encoding="utf-8")
        for verb, path in re.findall(r'(?<![.\w])(get|post|del)\("([^"]+)"', code):
            calls.add((methods[verb], "/" + path))
        for verb, suffix in re.findall(r'(?<![.\w])(get|post|del)\(sessionPath\("([^"]*)"\)', code):
            calls.add((methods[verb], "/sessions/{session_id}" + suffix))
        for verb, suffix in re.findall(r"(?<![.\w])(get|post|del)\(`sessions/\$\{[^}]*\}([^`]*)`", code):
            calls.add((methods[verb], "/sessions/{session_id}" + suffix))
        for suffix in re.findall(r'fetch\(new URL\(sessionPath\("([^"]*)"\)[^)]*\)\), \{ method: "DELETE"', code):
            calls.add(("DELETE", "/sessions/{session_id}" + suffix))
        for suffix in re.findall(r"fetch\(new URL\(`sessions/\$\{[^}]*\}([^`]*)`, BASE\), \{\s*headers", code):
            calls.add(("GET", "/sessions/{session_id}" + suffix))  # the event stream
    return calls


def test_the_page_calls_only_documented_endpoints() -> None:
    schema = create_app(Settings()).openapi()
    calls = _api_calls()
    expected = {
        ("GET", "/tokenizers"),
        ("POST", "/compile"),
        ("POST", "/sessions"),
        ("POST", "/tokenize"),
        ("POST", "/detokenize"),
        ("GET", "/stats"),
        ("GET", "/metrics"),
        ("GET", "/sessions/{session_id}"),
        ("DELETE", "/sessions/{session_id}"),
        ("POST", "/sessions/{session_id}/accept"),
        ("GET", "/sessions/{session_id}/mask"),
        ("POST", "/sessions/{session_id}/rollback"),
        ("GET", "/sessions"),
        ("GET", "/sessions/{session_id}/events"),
    }
    assert calls == expected
    for method, path in calls:
        assert method.lower() in schema["paths"].get(path, {}), f"{method} {path} is not in openapi.yaml"


def test_the_page_files_are_package_data() -> None:
    """A wheel must carry service/ui/: pyproject's package-data for ``service`` lists ``ui/*``."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    assert "ui/*" in pyproject["tool"]["setuptools"]["package-data"]["service"], (
        'add "ui/*" to [tool.setuptools.package-data] service in pyproject.toml'
    )

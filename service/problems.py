"""Every error the service answers with, as RFC 9457 ``application/problem+json``, in one place.

A problem document has ``type`` (``urn:guidance:problem:<code>``), ``title``, ``status``,
``detail`` and the stable ``code``, plus extras where they help (``index`` and ``token`` of a
rejected token, ``line``/``column`` of a template error, ``limit``, ``errors`` of a validation
failure, ``retry_after``); :func:`problem` builds every one. Sources, most specific first:

    core.errors.GuidanceError            its .status / .code: core's errors and the service's
                                         (``service/errors.py``), one tree, one handler
    fastapi RequestValidationError       422  validation-error (json-invalid: body is not JSON;
                                              content-type-invalid: sent without application/json)
    fastapi's body-parsing HTTPException 422  json-invalid (e.g. JSON nested too deeply to parse)
    starlette HTTPException              404 not-found, 405 method-not-allowed
    any other exception                  500  internal-error (logged; nothing of it is sent)

429 and 503 answers carry a ``Retry-After`` header; 401 and 403 answers a ``WWW-Authenticate``
header. Nothing a client sends yields a 500, and writing a problem never fails: whatever it echoes
(a lone surrogate, an integer past 64 bits, an object of any type) is made printable first if the
document does not serialise as it is.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from core.errors import GuidanceError, excerpt

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "count_error",
    "document_problems",
    "error_problem",
    "guidance_error_response",
    "http_problem_response",
    "install_problem_handlers",
    "internal_error_response",
    "problem",
    "problem_response",
    "problem_responses",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_PREFIX = "urn:guidance:problem:"

log = logging.getLogger("service")

# Codes and titles of plain HTTP errors (routing); the rest have a GuidanceError code.
_HTTP_PROBLEMS = {
    404: ("not-found", "Not Found"),
    405: ("method-not-allowed", "Method Not Allowed"),
}


def problem(status: int, code: str, title: str, detail: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A problem document: every problem the service writes is built here.

    ``extra`` adds fields (those that are None are left out; it never replaces the five above).
    """
    body: dict[str, Any] = {
        "type": _TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if extra:
        body.update((k, v) for k, v in extra.items() if v is not None and k not in body)
    return body


def error_problem(exc: GuidanceError) -> dict[str, Any]:
    """The problem document of a domain error (also embedded in a ``/step`` answer's statuses)."""
    return problem(exc.status, exc.code, exc.title, exc.detail, exc.extra)


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An ``application/problem+json`` response (``Retry-After`` set from ``retry_after``)."""
    return _respond(problem(status, code, title, detail, extra), headers)


def _respond(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    out_headers = dict(headers or {})
    retry_after = body.get("retry_after")
    if retry_after is not None:
        out_headers["Retry-After"] = str(retry_after)
    return Response(_dump(body), status_code=body["status"], media_type=PROBLEM_MEDIA_TYPE, headers=out_headers)


def _dump(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body, default=str)
    except (orjson.JSONEncodeError, TypeError, ValueError):
        # A lone surrogate or an integer past 64 bits somewhere in what the problem echoes.
        return orjson.dumps(_printable(body), default=str)


def _printable(value: Any) -> Any:
    """``value`` with every string UTF-8 can encode and every integer JSON parsers can read."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else excerpt(str(value), 64)
    if isinstance(value, dict):
        return {str(_printable(str(k))): _printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(v) for v in value]
    try:
        return _printable(str(value))
    except Exception:  # an object whose str() fails: name its type instead
        return f"<{type(value).__name__}>"


def count_error(request_app: Any, code: str) -> None:
    """Count an answered error in the app's metrics, if the app is running."""
    state = getattr(getattr(request_app, "state", None), "service", None)
    if state is not None:
        state.metrics.errors.labels(code).inc()


def guidance_error_response(app: Any, exc: GuidanceError) -> Response:
    """The problem answer to a domain error (counted in ``app``'s metrics)."""
    count_error(app, exc.code)
    headers: dict[str, str] | None = getattr(exc, "headers", None)
    return _respond(error_problem(exc), headers)


async def _guidance_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GuidanceError)
    return guidance_error_response(request.app, exc)


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    # Only where and what: pydantic's "input" and "ctx" would echo the client's data back.
    return [
        {
            "loc": [excerpt(str(p), 64) for p in e.get("loc", ())],
            "msg": excerpt(str(e.get("msg", ""))),
            "type": str(e.get("type", "")),
        }
        for e in list(errors)[:20]
    ]


def _not_json(request: Request, errors: list[dict[str, Any]]) -> str | None:
    """The request's content type when a JSON body was expected and the body was not read as JSON."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not media or media == "application/json" or media.endswith("+json"):
        return None
    if any(e["loc"] == ["body"] for e in errors):
        return media
    return None


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = _clean_errors(exc.errors())
    media = _not_json(request, errors)
    if media is not None:
        code, title = "content-type-invalid", "Body is not JSON"
        detail = (
            f"the body must be JSON sent with content-type: application/json; this request has content-type: "
            f"{excerpt(media, 64)}"
        )
    elif any(e["type"] == "json_invalid" for e in errors):
        code, title, detail = "json-invalid", "Malformed JSON", "the request body is not valid JSON"
    else:
        code, title = "validation-error", "Invalid request"
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(first['loc']) or 'request'}: {first['msg']}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
    count_error(request.app, code)
    return problem_response(422, code, title, detail, {"errors": errors})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 400:
        # FastAPI's only 400: a body its JSON parser gave up on (e.g. nested too deeply).
        count_error(request.app, "json-invalid")
        return problem_response(422, "json-invalid", "Malformed JSON", "the request body could not be parsed as JSON")
    detail = exc.detail if isinstance(exc.detail, str) else ""
    return http_problem_response(request.app, status, detail, dict(exc.headers or {}))


def http_problem_response(app: Any, status: int, detail: str = "", headers: dict[str, str] | None = None) -> Response:
    """The problem answer to a plain HTTP error (unknown route, wrong method)."""
    code, title = _HTTP_PROBLEMS.get(status, ("http-error", ""))
    if not title:
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "HTTP error"
    count_error(app, code)
    return problem_response(status, code, title, detail or title, headers=headers)


def internal_error_response() -> Response:
    """The 500 answer: says nothing about the failure (it is logged instead)."""
    return problem_response(
        500, "internal-error", "Internal Server Error", "an internal error occurred; it has been logged"
    )


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    count_error(request.app, "internal-error")
    return internal_error_response()


def install_problem_handlers(app: FastAPI) -> None:
    """Register every error handler of the service on ``app``."""
    app.add_exception_handler(GuidanceError, _guidance_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Reached only for errors escaping the middleware below it (see service/middleware.py).
    app.add_exception_handler(Exception, _unhandled)


# -- OpenAPI ------------------------------------------------------------------------------------

_STATUS_DOCS = {
    400: "Invalid template, schema, regex, grammar, structural tag, tools or tokenizer (`template-invalid` has "
    "`line`, `column`; `schema-invalid` a `pointer` where known), or a malformed request form (`form-invalid`, "
    "with the `pointer` of the fault in it).",
    401: "`unauthorized`: the server has API keys and the request has none, or not one of them "
    "(`Authorization: Bearer <key>`).",
    403: "`forbidden`: a server-wide change (or the list of sessions) by a key that is not an admin key.",
    404: "Unknown session, program or tokenizer (a session opened with another API key is unknown too).",
    409: "`token-rejected` (with `index`; the session is unchanged) or `tokenizer-exists`.",
    410: "`session-expired`: closed after its idle TTL.",
    413: "`body-too-large`, or `limit-exceeded` (names the `limit`).",
    422: (
        "Malformed request (`validation-error`, `json-invalid`, `content-type-invalid` (a JSON body sent without "
        "`content-type: application/json`), `token-out-of-range`, `rollback-out-of-range`, "
        "`unicode-invalid`: a string UTF-8 cannot encode, with `location` and `field`), or "
        "`compile-crashed`: the compile worker died compiling this constraint (that compile only)."
    ),
    429: "`too-many-sessions`: the session cap (or the key's session quota) is reached, or "
    "`too-many-watchers`: a bound on event streams is (`Retry-After`).",
    503: "`compile-queue-full`, `memory-exhausted` or `not-ready` (`Retry-After`).",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route answering these error statuses (documented as problems)."""
    return {status: {"description": _STATUS_DOCS[status]} for status in statuses}


def document_problems(schema: dict[str, Any], problem_schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite an OpenAPI document so every error response is ``application/problem+json``."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status[0] in "45":
                    if status == "422" and response.get("description") == "Validation Error":
                        response["description"] = _STATUS_DOCS[422]
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components["Problem"] = problem_schema
    return schema

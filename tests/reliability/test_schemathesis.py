"""Contract fuzzing: schemathesis generates requests from the app's own OpenAPI schema
(``openapi.yaml`` equals it, see tests/service/test_package.py) and runs them in-process (ASGI).

Checks: no 5xx, every status code documented, content types as documented, and every response
body valid against its schema (problem documents included). A small run is in the default test
run; ``-m slow`` runs a long one.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from core import load_default_tokenizer
from service import Settings, create_app

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis>=4 is a test extra (pip install schemathesis)")

# After the skip on purpose: without schemathesis the module skips rather than fails to import.
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# One app for the module; schemathesis's ASGI client runs its lifespan around each call.
_APP: FastAPI = create_app(
    Settings(max_sessions=100_000, max_body_bytes=256 * 1024), tokenizers={"default": load_default_tokenizer()}
)
_SCHEMA = schemathesis.openapi.from_dict(_APP.openapi())
_SCHEMA.app = _APP  # the requests go to the app in-process (ASGI)
_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# The UI page (if any) is HTML for people, not part of the API contract.
_API = _SCHEMA.exclude(path_regex=r"^/(ui|static)")


def _check(case: Any) -> None:
    case.call_and_validate(checks=_CHECKS)


@_API.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_contract_quick(case: Any) -> None:
    _check(case)


@pytest.mark.slow
@_API.parametrize()
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_contract_long(case: Any) -> None:
    _check(case)

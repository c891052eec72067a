"""Layers point one way, and the public surface is curated."""

from __future__ import annotations

import subprocess
import sys

import core


def test_core_imports_no_web_or_metrics_code() -> None:
    code = (
        "import sys, core, core.backend, core.session, core.template, core.compiler; "
        "bad = [m for m in ('fastapi', 'starlette', 'uvicorn', 'prometheus_client', 'service') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_all_is_sorted_and_complete() -> None:
    assert core.__all__ == sorted(core.__all__)
    for name in core.__all__:
        assert hasattr(core, name), name
    for required in (
        "GuidanceTemplateType",
        "GuidanceVariable",
        "GuidanceTemplate",
        "GuidanceState",
        "CompiledGuidanceProgram",
        "GuidanceGrammar",
        "GuidanceBackend",
        "AsyncGuidanceBackend",
    ):
        assert required in core.__all__

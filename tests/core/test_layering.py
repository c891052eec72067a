"""Layers point one way, and the public surface is curated."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import core
import core.session


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


def test_a_session_sees_its_program_only_through_a_protocol() -> None:
    # The program builds sessions (create_state); a session never reaches back into the program's
    # module, not even for types: it depends on StateProgram, which the program implements
    # (mypy checks that where the program passes itself to GuidanceState).
    tree = ast.parse(Path(core.session.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "core.bitmask" in imported  # the walk sees the module's imports
    assert not imported & {"core.program", "core.backend", "core.cache"}, imported

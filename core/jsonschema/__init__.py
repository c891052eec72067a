"""JSON schemas for llguidance: exact rewrites of what it refuses, and ``format`` handling.

:func:`rewrite_schema_report` (and :func:`rewrite_schema`) is the entry point the compiler calls;
:mod:`core.jsonschema.rewrite` lists the rewrites and where each lives.
"""

from core.jsonschema.formats import DEFAULT_FORMAT_MODE, FORMAT_MODES, FormatMode, format_hint
from core.jsonschema.rewrite import RewriteReport, rewrite_schema, rewrite_schema_report

__all__ = [
    "DEFAULT_FORMAT_MODE",
    "FORMAT_MODES",
    "FormatMode",
    "RewriteReport",
    "format_hint",
    "rewrite_schema",
    "rewrite_schema_report",
]

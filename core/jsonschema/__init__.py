"""JSON schemas for llguidance: exact rewrites of what it refuses, and ``format`` handling.

:func:`schema_grammar` is the entry point the compiler calls for a JSON schema, direct or in a
template's slot (limits, rewrites, output format, llguidance's verdict;
:mod:`core.jsonschema.prepare`); :func:`rewrite_schema_report` (and :func:`rewrite_schema`) the
rewrites alone. :mod:`core.jsonschema.rewrite` lists the rewrites and
where each lives.
"""

from core.jsonschema.formats import DEFAULT_FORMAT_MODE, FORMAT_MODES, FormatMode, format_hint
from core.jsonschema.prepare import (
    MAX_WHITESPACE,
    PreparedSchema,
    prepare_json_schema,
    prepare_schema,
    schema_grammar,
)
from core.jsonschema.rewrite import RewriteReport, rewrite_schema, rewrite_schema_report

__all__ = [
    "DEFAULT_FORMAT_MODE",
    "FORMAT_MODES",
    "FormatMode",
    "MAX_WHITESPACE",
    "PreparedSchema",
    "RewriteReport",
    "format_hint",
    "prepare_json_schema",
    "prepare_schema",
    "rewrite_schema",
    "rewrite_schema_report",
    "schema_grammar",
]

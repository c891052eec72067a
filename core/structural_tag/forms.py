"""The forms of a structural tag, and which formats we compile.

The older form (xgrammar before 0.1.2x, vLLM's ``structural_tag`` with ``structures`` and
``triggers``) is rewritten into the newer one: a ``triggered_tags`` whose tags are
``tag(begin, json_schema(schema), end)``. The newer form is ``{"type": "structural_tag", "format":
{...}}``; a bare format object is taken too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import GrammarError

__all__ = ["SUPPORTED_FORMATS", "UNSUPPORTED_FORMATS", "structural_tag_format"]

#: The format types compiled (xgrammar's names).
SUPPORTED_FORMATS = (
    "const_string",
    "json_schema",
    "regex",
    "grammar",
    "any_text",
    "sequence",
    "or",
    "optional",
    "plus",
    "star",
    "repeat",
    "tag",
    "triggered_tags",
    "tags_with_separator",
    "token",
)
#: xgrammar's format types refused with a 400 that names them.
UNSUPPORTED_FORMATS = ("dispatch", "exclude_token", "any_tokens", "token_triggered_tags", "token_dispatch")


def structural_tag_format(tag: Mapping[str, Any]) -> Mapping[str, Any]:
    """The newer form's ``format`` object of a structural tag in either form.

    Raises:
        GrammarError: neither form.
    """
    if "structures" in tag or "triggers" in tag:
        return _legacy(tag)
    fmt = tag.get("format")
    if tag.get("type", "structural_tag") == "structural_tag" and isinstance(fmt, Mapping):
        return fmt
    if isinstance(tag.get("type"), str) and tag.get("type") != "structural_tag":
        return tag
    raise GrammarError('a structural tag is {"type": "structural_tag", "format": {...}} or has structures and triggers')


def _legacy(tag: Mapping[str, Any]) -> Mapping[str, Any]:
    structures, triggers = tag.get("structures"), tag.get("triggers")
    if not isinstance(structures, list) or not structures:
        raise GrammarError("structural tag: structures must be a non-empty list")
    if not isinstance(triggers, list) or not triggers or not all(isinstance(t, str) and t for t in triggers):
        raise GrammarError("structural tag: triggers must be a non-empty list of strings")
    tags = []
    for i, s in enumerate(structures):
        if not isinstance(s, Mapping) or not isinstance(s.get("begin"), str) or not isinstance(s.get("end"), str):
            raise GrammarError(f"structural tag: structures[{i}] needs begin and end strings and a schema")
        schema = s.get("schema", s.get("json_schema", {}))
        tags.append(
            {
                "type": "tag",
                "begin": s["begin"],
                "end": s["end"],
                "content": {"type": "json_schema", "json_schema": schema},
            }
        )
    return {"type": "triggered_tags", "triggers": list(triggers), "tags": tags}

"""llguidance's top-level grammar object, taken as the library and older ``guidance`` write it.

``{"grammars": [{"lark_grammar": "..."}, {"json_schema": {...}, "name": "..."}], "max_tokens"?}``:
the first grammar is where generation starts, the others are reached from Lark with ``@name``
(or ``@1``). Each grammar has the semantics llguidance gives it, unchanged: a JSON schema's
whitespace is what its ``x-guidance`` says (llguidance's default is flexible), unlike the
``json_schema`` kind, which is compact by default. Captures (``name[capture]`` rules of its Lark
grammars) become variables.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from core.errors import FormError
from core.jsonschema.locate import json_pointer
from core.lark_text import lark_capture_names

__all__ = ["llguidance_grammar"]

_TOP = ("grammars", "max_tokens")
_ENTRY = ("name", "lark_grammar", "json_schema")


def llguidance_grammar(source: Any) -> tuple[str, list[str]]:
    """The object (or its JSON text) as llguidance's JSON text, and the capture names it declares.

    Raises:
        FormError: not such an object; the fault named by its JSON pointer.
    """
    if isinstance(source, str):
        try:
            source = json.loads(source)
        except ValueError as e:
            raise FormError(f"llguidance grammar is not valid JSON: {e}", pointer="") from None
    if not isinstance(source, Mapping) or not isinstance(source.get("grammars"), list) or not source["grammars"]:
        raise FormError(
            'llguidance must be a grammar object: {"grammars": [{"lark_grammar": ...} or {"json_schema": ...}, ...]}',
            pointer="",
        )
    for key in source:
        if key not in _TOP:
            raise FormError(f"llguidance grammar object has no member {str(key)[:64]!r}", pointer=json_pointer([key]))
    names: dict[str, None] = {}
    for i, entry in enumerate(source["grammars"]):
        at: list[str | int] = ["grammars", i]
        if not isinstance(entry, Mapping):
            raise FormError("each grammar must be an object", pointer=json_pointer(at))
        for key in entry:
            if key not in _ENTRY:
                raise FormError(
                    f"a grammar has name, lark_grammar or json_schema, not {str(key)[:64]!r}",
                    pointer=json_pointer([*at, key]),
                )
        given = [k for k in ("lark_grammar", "json_schema") if entry.get(k) is not None]
        if len(given) != 1:
            raise FormError("each grammar has exactly one of lark_grammar, json_schema", pointer=json_pointer(at))
        if given == ["lark_grammar"]:
            if not isinstance(entry["lark_grammar"], str):
                raise FormError("lark_grammar must be a string", pointer=json_pointer([*at, "lark_grammar"]))
            names.update(dict.fromkeys(lark_capture_names(entry["lark_grammar"])))
    return json.dumps(source, ensure_ascii=False), list(names)

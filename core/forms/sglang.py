"""SGLang's ``ebnf`` request field: a grammar in GBNF (llama.cpp's, the EBNF SGLang's default
xgrammar backend reads) or in Lark (what its llguidance backend also takes), told apart as
llguidance's own ``grammar_from("ebnf", ...)`` does.

SGLang's other fields need no form: ``json_schema`` (a schema, or its JSON text) and ``regex`` are
this server's kinds of those names. Where this differs from SGLang: JSON is compact by default
(SGLang's xgrammar backend allows any whitespace), and xgrammar's own EBNF extensions (lookahead
assertions, ``TagDispatch``) are not GBNF and are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from llguidance.gbnf_to_lark import is_lark_syntax

from core.errors import FormError
from core.forms.fields import only_json_options
from core.spec import ProgramSpec

__all__ = ["grammar_kind", "lower_ebnf"]


def grammar_kind(text: str) -> Literal["grammar", "gbnf"]:
    """``grammar`` for Lark text (``%llguidance`` or a ``start:`` rule), else ``gbnf``."""
    return "grammar" if is_lark_syntax(text) else "gbnf"


def lower_ebnf(source: Any, options: Mapping[str, Any]) -> ProgramSpec:
    """The spec of SGLang's ``ebnf``: a ``gbnf`` or ``grammar`` one.

    Raises:
        FormError: not a non-empty string, or JSON options given.
    """
    if not isinstance(source, str) or not source.strip():
        raise FormError("ebnf must be a non-empty grammar (GBNF `root ::= ...`, or Lark)", pointer="")
    only_json_options(options, "ebnf grammar")
    return ProgramSpec(grammar_kind(source), source)

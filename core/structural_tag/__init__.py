"""Structural tags as xgrammar and vLLM write them, compiled to llguidance's lazy lexemes.

:mod:`~core.structural_tag.forms` reads the two request forms (older ``structures`` +
``triggers``, newer ``format``) and says which formats are supported; :mod:`~core.structural_tag.lark`
writes the grammar.
"""

from __future__ import annotations

from core.structural_tag.forms import SUPPORTED_FORMATS, UNSUPPORTED_FORMATS, structural_tag_format
from core.structural_tag.lark import structural_tag_grammar

__all__ = ["SUPPORTED_FORMATS", "UNSUPPORTED_FORMATS", "structural_tag_format", "structural_tag_grammar"]

"""Structural tags inside another engine's form, compiled as the server's ``structural_tag`` kind.

vLLM's ``structured_outputs.structural_tag`` (xgrammar's format: its JSON text, or the object)
lowers here to a ``structural_tag`` spec, which :mod:`core.structural_tag` compiles in either form
(the older ``structures`` + ``triggers``, the newer ``format``). SGLang's ``structural_tag`` needs
no form: its adapter sends it as that kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import FormError
from core.spec import ProgramSpec

__all__ = ["lower_structural_tag"]


def lower_structural_tag(source: Any, form: str, pointer: str) -> ProgramSpec:
    """The spec of a structural tag given as ``form`` (e.g. ``structured_outputs.structural_tag``),
    found at ``pointer`` in the form's object.

    Raises:
        FormError: neither an object nor a non-empty string (its JSON text).
    """
    if isinstance(source, Mapping) or isinstance(source, str) and source.strip():
        return ProgramSpec("structural_tag", source)
    raise FormError(f"{form} must be a structural tag (an object, or its JSON text)", pointer=pointer)

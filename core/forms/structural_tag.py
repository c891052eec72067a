"""Structural tags asked for through another engine's form: not supported yet, said in one place.

vLLM's ``structured_outputs.structural_tag`` and SGLang's ``structural_tag`` (xgrammar's format,
as JSON text) reach the server here, and are refused with a 400 that names the form. This is the
one function to replace when structural tags are compiled.
"""

from __future__ import annotations

from typing import Any, NoReturn

from core.errors import UnsupportedForm

__all__ = ["lower_structural_tag"]


def lower_structural_tag(source: Any, form: str) -> NoReturn:
    """The spec of a structural tag given as ``form`` (e.g. ``structured_outputs.structural_tag``).

    Raises:
        UnsupportedForm: always, for now.
    """
    raise UnsupportedForm(f"{form}: structural tags are not supported yet", form=form)

"""Request forms of other engines, each lowered to one of the server's own kinds.

A form is a constraint as another engine's users write it: OpenAI's ``response_format``, vLLM's
``structured_outputs``, SGLang's ``ebnf``. :data:`FORMS` maps each form's kind to the function
that lowers its source to a :class:`~core.spec.ProgramSpec` of a base kind (``json_schema``,
``regex``, ``choice``, ``grammar``, ``gbnf``), keeping the form's documented semantics; the
compiler compiles that. A form's program id still hashes the form itself (``core.spec``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from core.forms.openai import lower_response_format
from core.forms.sglang import lower_ebnf
from core.forms.vllm import lower_structured_outputs
from core.spec import ProgramSpec

__all__ = ["FORMS", "lower_form"]

Lowering = Callable[[Any, Mapping[str, Any]], ProgramSpec]

FORMS: Mapping[str, Lowering] = {
    "ebnf": lower_ebnf,
    "response_format": lower_response_format,
    "structured_outputs": lower_structured_outputs,
}
"""Form kind -> its lowering ``(source, options) -> ProgramSpec`` of a base kind."""


def lower_form(spec: ProgramSpec) -> ProgramSpec:
    """The base-kind spec a form's spec stands for (a base kind's spec is returned as it is).

    Raises:
        FormError: the form is malformed.
        UnsupportedForm: the form asks for something not supported yet.
    """
    lowering = FORMS.get(spec.kind)
    return spec if lowering is None else lowering(spec.source, spec.options)

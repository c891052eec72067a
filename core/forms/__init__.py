"""Request forms of other engines, each lowered to one of the server's own kinds.

A form is a constraint as another engine's users write it: OpenAI's ``response_format``, vLLM's
``structured_outputs``, SGLang's ``ebnf``. Each has a function here that lowers its source to a
:class:`~core.spec.ProgramSpec` of a base kind (``json_schema``, ``regex``, ``choice``,
``grammar``, ``gbnf``, ``structural_tag``), keeping the form's documented semantics; the form's
entry in :data:`core.kinds.KINDS` compiles that. A form's program id still hashes the form itself
(``core.spec``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from core.forms.openai import lower_response_format
from core.forms.sglang import lower_ebnf
from core.forms.vllm import lower_structured_outputs
from core.spec import ProgramSpec

__all__ = ["Lowering", "lower_ebnf", "lower_response_format", "lower_structured_outputs"]

Lowering = Callable[[Any, Mapping[str, Any]], ProgramSpec]
"""A form's lowering: ``(source, options) -> ProgramSpec`` of a base kind.

Raises:
    FormError: the form is malformed.
"""

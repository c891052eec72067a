"""The Guidance constraint engine: templates, JSON schemas, regexes and grammars as token masks.

A plain library over llguidance, with no web code::

    from core import GuidanceBackend, GuidanceGrammar

    backend = GuidanceBackend()                      # embedded default tokenizer (tekken)
    program = backend.compile_template("Answer: {{select 'a' options=['yes', 'no']}}")
    grammar = GuidanceGrammar(program, backend.tokenizer)
    bitmask = backend.allocate_bitmask(1)
    grammar.fill_next_token_bitmask(bitmask, 0)
"""

from core.backend import AsyncGuidanceBackend, GuidanceBackend
from core.bitmask import allocate_bitmask, allowed_tokens, mask_words
from core.errors import (
    CompileCrashed,
    EngineLimitReached,
    FormError,
    GrammarError,
    GuidanceError,
    InvalidTokens,
    LimitExceeded,
    NotFound,
    SchemaError,
    SessionExpired,
    TemplateError,
    TokenizerError,
    TokenRejected,
    UnknownProgram,
    UnknownSession,
    UnknownTokenizer,
)
from core.grammar import GuidanceGrammar
from core.limits import Limits
from core.program import CompiledGuidanceProgram
from core.session import GuidanceState
from core.spec import ProgramSpec
from core.template import GuidanceTemplate, GuidanceTemplateType, GuidanceVariable
from core.tokenizers import Tokenizer, load_default_tokenizer, load_tokenizer

__all__ = [
    "AsyncGuidanceBackend",
    "CompileCrashed",
    "CompiledGuidanceProgram",
    "EngineLimitReached",
    "FormError",
    "GrammarError",
    "GuidanceBackend",
    "GuidanceError",
    "GuidanceGrammar",
    "GuidanceState",
    "GuidanceTemplate",
    "GuidanceTemplateType",
    "GuidanceVariable",
    "InvalidTokens",
    "LimitExceeded",
    "Limits",
    "NotFound",
    "ProgramSpec",
    "SchemaError",
    "SessionExpired",
    "TemplateError",
    "TokenRejected",
    "Tokenizer",
    "TokenizerError",
    "UnknownProgram",
    "UnknownSession",
    "UnknownTokenizer",
    "allocate_bitmask",
    "allowed_tokens",
    "load_default_tokenizer",
    "load_tokenizer",
    "mask_words",
]

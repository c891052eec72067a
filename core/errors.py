"""Domain errors of the engine: what a client can get wrong.

Everything a caller sends that we refuse raises a subclass of :class:`GuidanceError`.
Each class carries a stable ``code`` (a short kebab-case string, part of the API) and the
HTTP status the service answers with; ``service/problems.py`` maps them to RFC 9457 responses
in one place. Misuse of the library by our own code raises ``TypeError``/``ValueError`` instead:
those are bugs, not client errors.

    GuidanceError                    code                 status
    ├── TemplateError                template-invalid     400   (line, column)
    ├── GrammarError                 grammar-invalid      400   regex, Lark, GBNF, choice, compile failures
    │   ├── SchemaError              schema-invalid       400   JSON schema refused (names the keyword, pointer)
    │   └── FormError                form-invalid         400   an engine's request form that is malformed
    ├── TokenizerError               tokenizer-invalid    400   a tokenizer that cannot be loaded
    ├── CompileCrashed               compile-crashed      422   the compile worker died compiling it
    ├── LimitExceeded                limit-exceeded       413   a configured limit (names it)
    │   └── EngineLimitReached       engine-limit         413   an llguidance limit hit mid-generation
    ├── InvalidTokens                token-out-of-range   422   ids outside the vocabulary
    ├── TokenRejected                token-rejected       409   the constraint forbids a token (index)
    └── NotFound                     not-found            404
        ├── UnknownTokenizer         tokenizer-not-found  404
        ├── UnknownProgram           program-not-found    404
        └── UnknownSession           session-not-found    404
            └── SessionExpired       session-expired      410

Where foreign errors enter: llguidance answers a grammar with a verdict (an error string from a
matcher or ``validate_grammar``), its converters raise ``ValueError`` (``grammar_from_json_schema``)
or bare exceptions (``gbnf_to_lark``), and our own walks of a deep constraint can raise
``RecursionError``. They become the tree above here, and nowhere else:

    llguidance's prose              :func:`classify_llguidance_error`   which limit a message reports
    a compile's verdict             :func:`refusal`                 LimitExceeded, or the kind's error
    a session's verdict             :func:`engine_failure`          EngineLimitReached, or GrammarError
    a converter's exception         :func:`map_errors`              the error its mapping makes
    RecursionError, and an engine   :func:`compile_boundary`        LimitExceeded (max_nesting_depth,
    limit met while compiling                                       or the limit the engine reached)
    an error sent between threads   :func:`replica`                 a fresh copy, fields and all
    or processes

``core.validation.require_valid``, ``core.jsonschema.prepare_json_schema``, ``core.program`` and
``core.session`` read llguidance's verdicts through these; ``core.jsonschema``, ``core.gbnf`` and
``core.structural_tag`` call the converters inside :func:`map_errors`; ``core.kinds.compile_spec``
and ``core.backend`` compile inside :func:`compile_boundary`; ``core.cache`` and ``core.workers``
copy errors with :func:`replica`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import CancelledError
from contextlib import AbstractContextManager, contextmanager
from typing import Any

__all__ = [
    "CompileCancelled",
    "CompileCrashed",
    "EngineLimitReached",
    "ErrorMap",
    "FormError",
    "GrammarError",
    "GuidanceError",
    "InvalidTokens",
    "LimitExceeded",
    "NotFound",
    "SchemaError",
    "SessionExpired",
    "TemplateError",
    "TokenRejected",
    "TokenizerError",
    "UnknownProgram",
    "UnknownSession",
    "UnknownTokenizer",
    "classify_llguidance_error",
    "compile_boundary",
    "engine_failure",
    "excerpt",
    "map_errors",
    "refusal",
    "replica",
]

_EXCERPT_CHARS = 200


def excerpt(text: str, limit: int = _EXCERPT_CHARS) -> str:
    """Quote at most ``limit`` characters of user input in a message."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


class GuidanceError(Exception):
    """Base of every error a client can cause."""

    code = "guidance-error"
    status = 400
    title = "Request refused"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: dict[str, Any] = extra

    def to_dict(self) -> dict[str, Any]:
        """Fields for a problem document (``code``, ``title``, ``detail`` and extras)."""
        return {"code": self.code, "title": self.title, "detail": self.detail, **self.extra}


class TemplateError(GuidanceError):
    """A template that does not parse or compile; carries ``line`` and ``column`` (1-based)."""

    code = "template-invalid"
    title = "Invalid template"

    def __init__(self, detail: str, line: int | None = None, column: int | None = None) -> None:
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(detail + where, line=line, column=column)
        self.line = line
        self.column = column


class GrammarError(GuidanceError):
    """A regex, Lark grammar or choice list that llguidance refuses."""

    code = "grammar-invalid"
    title = "Invalid grammar"


class SchemaError(GrammarError):
    """A JSON schema that cannot be compiled (unsupported or contradictory keywords)."""

    code = "schema-invalid"
    title = "Invalid JSON schema"


class FormError(GrammarError):
    """An engine's request form (``response_format``, ``structured_outputs``, ``llguidance``) that is
    malformed; its ``pointer`` extra is the JSON pointer of the fault inside the form."""

    code = "form-invalid"
    title = "Invalid request form"


class TokenizerError(GuidanceError):
    """A tokenizer definition that cannot be loaded."""

    code = "tokenizer-invalid"
    title = "Invalid tokenizer"


class CompileCrashed(GuidanceError):
    """The compile worker process died while compiling this constraint (422).

    Only this compile fails; a fresh worker serves the next. Remembered by the negative cache like
    any failed compile, so an input that kills workers cannot do so in a loop.
    """

    code = "compile-crashed"
    status = 422
    title = "Compile crashed"


class CompileCancelled(CancelledError):
    """Every caller waiting for a compile has gone, and it was stopped (nobody is told: not a problem).

    Not a :class:`GuidanceError`: the input was not found at fault, so it is not remembered.
    """


class LimitExceeded(GuidanceError):
    """A configured limit was reached; ``limit`` names it."""

    code = "limit-exceeded"
    status = 413
    title = "Limit exceeded"

    def __init__(self, detail: str, limit: str) -> None:
        super().__init__(detail, limit=limit)
        self.limit = limit


class EngineLimitReached(LimitExceeded):
    """An llguidance limit reached while a session walks (lexer states, fuel, Earley items).

    The session is left as it was before the request; ``limit`` names the setting that bounds it.
    """

    code = "engine-limit"
    title = "Engine limit reached"


# llguidance reports its limits in prose; which setting each message belongs to (first match wins).
# "too many expressions constructed" is the regex-derivative budget of one step: measured here,
# raising step_lexer_fuel is what lets such a step through.
_ENGINE_LIMITS: tuple[tuple[str, str], ...] = (
    ("too many states", "max_lexer_states"),
    ("too many expressions", "step_lexer_fuel"),
    ("initial lexer", "initial_lexer_fuel"),
    ("precomputation", "initial_lexer_fuel"),
    ("fuel", "step_lexer_fuel"),
    ("items in row", "max_items_in_row"),
    ("too many items", "step_max_items"),
    ("grammar size", "max_grammar_size"),
    ("too complex", "parser"),
    ("too large", "parser"),
    ("too big", "parser"),
    ("too many", "parser"),
    ("exceeded", "parser"),
    ("limit", "parser"),
)


# Messages that match a limit's words above but are plain errors in the input (400): a token id
# past the vocabulary (``<[999999]>``), a number that does not fit the engine's integers.
_NOT_LIMITS: tuple[str, ...] = ("token range", "number too large to fit", "number too small to fit")


def classify_llguidance_error(message: str) -> str | None:
    """The limit an llguidance error message reports, or None when it is not about a limit.

    The one place that reads llguidance's error prose; compile-time and run-time errors both go
    through it.
    """
    lowered = message.lower()
    if any(words in lowered for words in _NOT_LIMITS):
        return None
    for words, limit in _ENGINE_LIMITS:
        if words in lowered:
            return limit
    return None


def refusal(message: str, invalid: Callable[[str], GuidanceError], subject: str = "constraint") -> GuidanceError:
    """The error for llguidance's refusal of a grammar being compiled.

    Args:
        message: llguidance's message, as the client reads it (trimmed by the caller).
        invalid: makes the kind's own error (``GrammarError``, ``SchemaError``...) of the message.
        subject: what the grammar is, in the message of a refusal that reports a limit.

    Returns:
        :class:`LimitExceeded` naming the limit when the message reports one, else ``invalid(message)``.
    """
    limit = classify_llguidance_error(message)
    if limit is None:
        return invalid(message)
    return LimitExceeded(f"{subject} too complex: {message}", limit)


def engine_failure(message: str, doing: str = "this step") -> GuidanceError:
    """The error for a session's matcher that stopped in llguidance's error state.

    Args:
        message: the matcher's error (cut to 500 characters here).
        doing: what the session was doing, for the message (``"this step"``, ``"computing the mask"``).

    Returns:
        :class:`EngineLimitReached` naming the limit when the message reports one, else
        :class:`GrammarError`.
    """
    message = message.strip()[:500] or "the matcher stopped"
    limit = classify_llguidance_error(message)
    if limit is None:
        return GrammarError(message)
    return EngineLimitReached(f"the constraint reached the engine limit {limit} at {doing}: {message}", limit)


ErrorMap = Mapping[type[Exception], Callable[[Any], GuidanceError]]
"""Foreign exception classes, each with what makes the project's error of one (first match wins)."""


@contextmanager
def map_errors(mapping: ErrorMap) -> Iterator[None]:
    """Raise the project's error for an exception of a class in ``mapping`` (its context dropped).

    Any other exception passes unchanged: it is a bug of ours, reported as one (a 500).
    """
    try:
        yield
    except Exception as exc:
        for cls, make in mapping.items():
            if isinstance(exc, cls):
                raise make(exc) from None
        raise


# RecursionError: a constraint nested deeper than our walks go. EngineLimitReached: a session limit
# met by the compile's own first steps; the constraint's fault, refused at compile time, not a session's.
_COMPILING: ErrorMap = {
    RecursionError: lambda _: LimitExceeded("the constraint is nested too deeply", "max_nesting_depth"),
    EngineLimitReached: lambda e: LimitExceeded(e.detail, e.limit),
}


def compile_boundary() -> AbstractContextManager[None]:
    """Run a compile, turning what escapes it into the project's errors.

    ``RecursionError`` becomes :class:`LimitExceeded` for ``max_nesting_depth``; an
    :class:`EngineLimitReached` becomes a plain :class:`LimitExceeded` naming the same limit.
    """
    return map_errors(_COMPILING)


def replica(cls: type[GuidanceError], args: tuple[Any, ...], fields: dict[str, Any]) -> GuidanceError:
    """A fresh error of ``cls`` with these ``args`` and attributes (``exc.args``, ``exc.__dict__``).

    Raising one object from many threads mixes tracebacks, and the classes' own ``__init__``
    signatures differ (pickle's call of the class with ``args`` would fail): an error remembered or
    sent between processes is rebuilt field by field.
    """
    exc = BaseException.__new__(cls)
    exc.args = args
    exc.__dict__.update(fields)
    return exc


class InvalidTokens(GuidanceError):
    """Token ids that are not in the vocabulary at all (negative or too large)."""

    code = "token-out-of-range"
    status = 422
    title = "Token id out of range"

    def __init__(self, detail: str, index: int) -> None:
        super().__init__(detail, index=index)
        self.index = index


class TokenRejected(GuidanceError):
    """The constraint forbids a token; ``index`` is its position in the request. State unchanged."""

    code = "token-rejected"
    status = 409
    title = "Token rejected"

    def __init__(self, detail: str, index: int, token: int) -> None:
        super().__init__(detail, index=index, token=token)
        self.index = index
        self.token = token


class NotFound(GuidanceError):
    """Something named by the request does not exist."""

    code = "not-found"
    status = 404
    title = "Not found"


class UnknownTokenizer(NotFound):
    code = "tokenizer-not-found"
    title = "Unknown tokenizer"


class UnknownProgram(NotFound):
    code = "program-not-found"
    title = "Unknown program"


class UnknownSession(NotFound):
    code = "session-not-found"
    title = "Unknown session"


class SessionExpired(UnknownSession):
    code = "session-expired"
    status = 410
    title = "Session expired"

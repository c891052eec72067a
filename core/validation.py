"""The checks every grammar passes before a matcher is built from it.

Our own checks come first, where llguidance would fail badly: a source over the size limit, and a
derivation deeper than ``Limits.max_derivation_depth`` (the engine's parse recurses through it
and would overflow its native stack, see :mod:`core.derivation`). Then llguidance's own
verdict, whose message becomes a clear 400, or a 413 when it reports a limit
(:func:`~core.errors.refusal`). With a tokenizer, the verdict is the matcher's own:
the grammar is built once, into the matcher the program keeps (llguidance's separate validation
builds the same grammar, and would be followed by a second build for the matcher).
"""

from __future__ import annotations

from collections.abc import Callable

import llguidance

from core.derivation import derivation_depth
from core.errors import GuidanceError, LimitExceeded, refusal
from core.limits import Limits

__all__ = ["build", "check_size", "require_valid", "too_deep", "trimmed", "validate"]

# An engine message can quote a whole grammar; what a client reads is cut to this many characters.
_MESSAGE_CHARS = 1000


def trimmed(message: str) -> str:
    """An engine error message as a client reads it: stripped, and cut when very long."""
    message = message.strip()
    return message if len(message) <= _MESSAGE_CHARS else message[:_MESSAGE_CHARS] + "..."


def too_deep(limits: Limits) -> LimitExceeded:
    """The error for a constraint whose references chain deeper than ``limits`` allow."""
    return LimitExceeded(
        f"the constraint chains references (subschemas, $refs or Lark rules) more than "
        f"{limits.max_derivation_depth} levels deep",
        "max_derivation_depth",
    )


def check_size(text: str, what: str, limits: Limits) -> None:
    """Refuse a source (``what``: "regex", "grammar"...) larger than ``limits.max_source_bytes``."""
    if len(text.encode("utf-8")) > limits.max_source_bytes:
        raise LimitExceeded(f"{what} is larger than {limits.max_source_bytes} bytes", "max_source_bytes")


def validate(grammar: str, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> str:
    """llguidance's verdict on a top-level grammar: "" when it is valid, else the error message.

    Every grammar reaches llguidance through here or :func:`build` first, so the derivation depth
    is checked here.

    Raises:
        LimitExceeded: the grammar's derivations are deeper than ``limits.max_derivation_depth``.
    """
    return build(grammar, tokenizer, limits)[1]


def build(
    grammar: str, tokenizer: llguidance.LLTokenizer | None, limits: Limits, *, shallow: bool = False
) -> tuple[llguidance.LLMatcher | None, str]:
    """The grammar built once: ``(matcher, "")``, or ``(None, message)`` when llguidance refuses it.

    Without a tokenizer nothing can be built for sessions: only the verdict is given (``(None, "")``
    when the grammar is valid). ``shallow``: the caller has shown that the grammar's derivations
    are no deeper than its nesting, within the limits, so they are not walked again.

    Raises:
        LimitExceeded: the grammar's derivations are deeper than ``limits.max_derivation_depth``.
    """
    if not shallow and derivation_depth(grammar, limits.max_derivation_depth) > limits.max_derivation_depth:
        raise too_deep(limits)
    if tokenizer is None:
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
            grammar, None, limits=limits.parser_limits()
        )
        return None, messages[0] if is_error and messages else ""
    # The same parser limits and log level as every matcher of the program (core.program).
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0, limits=limits.parser_limits())
    if matcher.is_error():
        return None, matcher.get_error()
    return matcher, ""


def require_valid(
    grammar: str,
    tokenizer: llguidance.LLTokenizer | None,
    limits: Limits,
    invalid: Callable[[str], GuidanceError],
    subject: str = "constraint",
) -> llguidance.LLMatcher | None:
    """:func:`build`, raising on a refusal; returns the matcher (None without a tokenizer).

    Args:
        grammar: llguidance's top-level grammar (JSON text).
        tokenizer: the vocabulary it is for (None: checked without one).
        limits: the limits it must stay within.
        invalid: makes the error for a refusal from the engine's (trimmed) message.
        subject: what the grammar is, in the message of a refusal that reports a limit.

    Raises:
        LimitExceeded: the engine refused it for a limit, or it derives too deep.
        GuidanceError: what ``invalid`` makes, for any other refusal.
    """
    matcher, message = build(grammar, tokenizer, limits)
    if message:
        raise refusal(trimmed(message), invalid, subject)
    return matcher

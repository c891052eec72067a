"""End tokens: the set of ids any of which ends a constraint, and how each source names them.

A chat model ends its turns on more than one token (Llama 3 Instruct: ``<|eot_id|>`` and
``<|eom_id|>``, with ``<|end_of_text|>`` for base text; Qwen: ``<|im_end|>`` and
``<|endoftext|>``), so a tokenizer carries a set. Each source has its own default; a caller's
explicit list replaces it (:func:`checked_end_tokens`). The first id is the primary one
(``Tokenizer.eos_token_id``); the order never changes a mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from core.errors import TokenizerError

__all__ = [
    "BOS_CANDIDATES",
    "EOS_CANDIDATES",
    "MAX_END_TOKENS",
    "candidate_tokens",
    "checked_end_tokens",
    "config_bos",
    "config_end_tokens",
]

#: Added tokens of a ``tokenizer.json`` taken as end tokens when no configuration names them:
#: every one the file has, in this order (the first found is the primary one).
EOS_CANDIDATES: Final = (
    "</s>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<eos>",
    "<end_of_turn>",
    "<|end|>",
)
#: Added tokens taken as BOS of a ``tokenizer.json`` without configuration, in order of preference.
BOS_CANDIDATES: Final = ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>")

#: Most end tokens a tokenizer may have (real ones have one to four).
MAX_END_TOKENS: Final = 32


def checked_end_tokens(
    ids: Iterable[int], vocab_size: int, special_ids: Iterable[int] | None = None
) -> tuple[int, ...]:
    """``ids`` once each, in order, checked against the vocabulary.

    Args:
        ids: The end tokens.
        vocab_size: Ids must be below it.
        special_ids: When given, every end token must be one of them: an ordinary token (text)
            as an end token would end constraints in the middle of text.

    Raises:
        TokenizerError: No id, too many, an id outside the vocabulary or not a control token.
    """
    out: list[int] = []
    specials = None if special_ids is None else frozenset(special_ids)
    for token_id in ids:
        if not isinstance(token_id, int) or isinstance(token_id, bool) or not 0 <= token_id < vocab_size:
            raise TokenizerError(f"end token {token_id!r} is not an id of this vocabulary (0 to {vocab_size - 1})")
        if specials is not None and token_id not in specials:
            raise TokenizerError(f"end token {token_id} is an ordinary (text) token, not a control token")
        if token_id not in out:
            out.append(token_id)
    if not out:
        raise TokenizerError("a tokenizer needs at least one end token")
    if len(out) > MAX_END_TOKENS:
        raise TokenizerError(f"{len(out)} end tokens, more than the {MAX_END_TOKENS} allowed")
    return tuple(out)


def config_end_tokens(
    tokenizer_config: Mapping[str, Any] | None,
    generation_config: Mapping[str, Any] | None,
    by_content: Mapping[str, int],
) -> list[int]:
    """The end tokens a Hugging Face model's configuration names: the generation config's
    ``eos_token_id`` (an id or a list), then the tokenizer config's ``eos_token`` (a string or an
    ``{"content": ...}`` object, looked up among the added tokens). Empty if neither names one."""
    out: list[int] = []
    if generation_config is not None:
        value = generation_config.get("eos_token_id")
        for token_id in value if isinstance(value, list) else [] if value is None else [value]:
            if not isinstance(token_id, int) or isinstance(token_id, bool):
                raise TokenizerError(f"generation_config.json: eos_token_id {token_id!r} is not an integer")
            out.append(token_id)
    if tokenizer_config is not None:
        content = _token_content(tokenizer_config.get("eos_token"), "eos_token")
        if content is not None:
            if content not in by_content:
                raise TokenizerError(
                    f"tokenizer_config.json: eos_token {content[:64]!r} is not a token of the tokenizer.json"
                )
            out.append(by_content[content])
    return out


def config_bos(
    tokenizer_config: Mapping[str, Any] | None,
    generation_config: Mapping[str, Any] | None,
    by_content: Mapping[str, int],
) -> int | None:
    """BOS as a Hugging Face model's configuration names it, or None."""
    if tokenizer_config is not None:
        content = _token_content(tokenizer_config.get("bos_token"), "bos_token")
        if content is not None and content in by_content:
            return by_content[content]
    if generation_config is not None:
        value = generation_config.get("bos_token_id")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def candidate_tokens(names: Sequence[str], by_content: Mapping[str, int]) -> list[int]:
    """The ids of those of ``names`` the tokenizer has, in the order of ``names``."""
    return [by_content[name] for name in names if name in by_content]


def _token_content(value: object, key: str) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    if value is None:
        return None
    if not isinstance(value, str):
        raise TokenizerError(f'tokenizer_config.json: {key} must be a string or an object with a "content"')
    return value

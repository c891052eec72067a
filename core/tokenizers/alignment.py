"""Does a model agree with a tokenizer? The checks an adapter runs before its first forward pass.

A mask is right only for the vocabulary the model samples from. A worker describes what it knows
of its model (the logits' width, its end tokens, the bytes of a sample of its tokens) and
:func:`vocabulary_differences` names everything that differs from a tokenizer:

* the logits must be at least as wide as the vocabulary (wider is padding, masked off);
* the end tokens must be the same set (a model stopping on a token the constraint does not end
  on never stops; the other way round, it runs on after the constraint has ended);
* each sampled token must have the same bytes (a special token's bytes are its name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from core.tokenizers.tokenizer import Tokenizer

__all__ = ["vocabulary_differences"]

#: Tokens whose bytes differ quoted in a difference, at most.
_SHOWN: Final = 5


def vocabulary_differences(
    tokenizer: Tokenizer,
    *,
    vocab_size: int | None = None,
    eos_token_ids: Sequence[int] | None = None,
    token_bytes: Mapping[int, bytes] | None = None,
    name: str | None = None,
) -> list[str]:
    """Everything in which a model's view of its vocabulary differs from ``tokenizer``.

    Args:
        tokenizer: The server-side tokenizer.
        vocab_size: The width of the model's logits; None: not checked.
        eos_token_ids: The model's end tokens; None: not checked.
        token_bytes: Some of the model's token ids with their bytes; None: not checked.
        name: The tokenizer's name in the differences (default: its own).

    Returns:
        One sentence per difference (empty: aligned).
    """
    name = tokenizer.name if name is None else name
    out: list[str] = []
    if vocab_size is not None and vocab_size < tokenizer.vocab_size:
        out.append(
            f"vocabulary size: the model's logits have {vocab_size} ids, tokenizer {name!r} has {tokenizer.vocab_size}"
        )
    if eos_token_ids is not None and set(eos_token_ids) != set(tokenizer.eos_token_ids):
        out.append(
            f"end tokens: the model ends on {sorted(set(eos_token_ids))}, tokenizer {name!r} on "
            f"{sorted(tokenizer.eos_token_ids)}"
        )
    if token_bytes:
        differ: list[str] = []
        for token_id in sorted(token_bytes):
            theirs = token_bytes[token_id]
            if not 0 <= token_id < tokenizer.vocab_size:
                differ.append(f"{token_id}: model {theirs[:40]!r}, not an id of the tokenizer")
                continue
            ours = tokenizer.token_bytes(token_id)
            if ours != theirs:
                differ.append(f"{token_id}: model {theirs[:40]!r}, tokenizer {ours[:40]!r}")
        if differ:
            out.append(
                f"token strings: {len(differ)} of {len(token_bytes)} sampled tokens differ from tokenizer "
                f"{name!r}, e.g. " + "; ".join(differ[:_SHOWN])
            )
    return out

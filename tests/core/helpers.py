"""Helpers of the engine's tests: a tiny synthetic vocabulary, walks over served masks, oracles."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from core import GuidanceState, Tokenizer, allowed_tokens

# Every byte, plus a few multi-byte pieces so tokens straddle slot boundaries, plus EOS.
_PIECES = [b"Name", b": ", b"ab", b"the", b" is", b'{"', b'":', b'",', b"00", b"\n\n", "é".encode(), b"yes", b"no"]
TINY_EOS = 256 + len(_PIECES)


def make_tiny_tokenizer() -> Tokenizer:
    tokens = [bytes([i]) for i in range(256)] + _PIECES + [b"</s>"]
    return Tokenizer.from_vocabulary("tiny", tokens, eos_token_id=TINY_EOS, special_token_ids=[TINY_EOS])


Walk = Callable[..., tuple[str, dict[str, Any], list[int]]]


def random_walk(
    state: GuidanceState, rng: np.random.Generator, max_steps: int = 400, eos_bias: float = 0.3
) -> tuple[str, dict[str, Any], list[int]]:
    """Sample tokens only from the served masks until EOS; returns (text, variables, tokens).

    Each step checks the mask against llguidance's own answer for the chosen token: a token
    drawn from the mask must be accepted.
    """
    program = state.program
    eos = program.eos_token_id
    bitmask = np.zeros((1, program.mask_words), dtype=np.int32)
    for _ in range(max_steps):
        state.fill_bitmask(bitmask, 0)
        allowed = allowed_tokens(bitmask[0], program.vocab_size)
        assert allowed.size > 0, f"empty mask after {state.text()!r}"
        if eos in allowed and (allowed.size == 1 or rng.random() < eos_bias):
            token = eos
        else:
            choices = allowed[allowed != eos]
            token = int(choices[rng.integers(choices.size)])
        assert state.accept_token(token), f"token {token} from the mask was refused after {state.text()!r}"
        if state.is_terminated():
            return state.text(), state.variables, list(state.tokens)
    raise AssertionError(f"no EOS within {max_steps} steps: {state.text()!r}")


def accepts_text(state: GuidanceState, tokens: Sequence[int]) -> bool:
    """Feed ``tokens`` one by one, checking each is in the mask first; then EOS."""
    program = state.program
    bitmask = np.zeros((1, program.mask_words), dtype=np.int32)
    for t in [*tokens, program.eos_token_id]:
        state.fill_bitmask(bitmask, 0)
        if not (int(bitmask[0, t // 32]) >> (t % 32)) & 1:
            return False
        if not state.accept_token(t):
            raise AssertionError(f"token {t} set in the mask but refused")
    return state.is_terminated()


def is_base64(text: str) -> bool:
    """An oracle for OpenAPI's ``byte`` format, independent of core: decodes (alphabet checked),
    and has the length and padding of the encoding of its bytes (CPython's decoder alone takes
    ``"DDDD="``). Non-zero pad bits (``"QR=="``) are accepted, as RFC 4648 allows decoders to."""
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    canonical = base64.b64encode(decoded).decode()
    return len(canonical) == len(text) and canonical.count("=") == text.count("=")

"""The embedded default vocabulary, Mistral tekken, and tiktoken vocabularies in general.

Tekken has 131,072 ids: 1,000 control tokens, then ``id = 1000 + rank``; EOS 2, BOS 1. It is
stored as ``core/data/tekken_240911.tokens.gz``, derived from the Apache-2.0 ``mistral-common``
wheel by ``scripts/derive_tekken.py`` (see ``core/data/NOTICE``).
"""

from __future__ import annotations

import binascii
import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import llguidance.tiktoken
import tiktoken

from core.tokenizers.parts import TokenizerParts

__all__ = ["TEKKEN_FILE", "read_tekken", "tiktoken_parts"]

TEKKEN_FILE: Final = Path(__file__).resolve().parent.parent / "data" / "tekken_240911.tokens.gz"
_TEKKEN_FORMAT: Final = "guidance-tekken-v1"


def read_tekken(path: Path) -> TokenizerParts:
    """The parts of the tekken tokenizer stored at ``path``, as ``scripts/derive_tekken.py`` writes it."""
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    header: dict[str, Any] = json.loads(lines[0])
    if header.get("format") != _TEKKEN_FORMAT:
        raise ValueError(f"{path}: unexpected format {header.get('format')!r}")
    num_special = int(header["num_special_tokens"])
    num_ranks = int(header["num_ranks"])
    names = list(header["special_names"])
    template = str(header["special_name_template"])
    names.extend(template.format(id=i) for i in range(len(names), num_special))
    ranks = [binascii.a2b_base64(line) for line in lines[1 : 1 + num_ranks]]
    if len(ranks) != num_ranks or num_special + num_ranks != int(header["vocab_size"]):
        raise ValueError(f"{path}: truncated ({len(ranks)} of {num_ranks} ranks)")
    return tiktoken_parts(
        "tekken",
        pattern=str(header["pattern"]),
        ranks=ranks,
        special_names=names,
        eos_token_id=int(header["eos_token_id"]),
        bos_token_id=int(header["bos_token_id"]),
    )


def tiktoken_parts(
    name: str,
    *,
    pattern: str,
    ranks: Sequence[bytes],
    special_names: Sequence[str],
    eos_token_id: int,
    bos_token_id: int | None,
) -> TokenizerParts:
    """A tiktoken vocabulary: control ids ``0 .. len(special_names) - 1``, then ``len(special_names) + rank``.

    Encoding is tiktoken's byte-pair encoder; the ``LLTokenizer`` is llguidance's native tiktoken
    port, so llguidance never calls back into Python (nor takes the GIL) to tokenize.
    """
    offset = len(special_names)
    vocab_size = offset + len(ranks)
    encoding = tiktoken.Encoding(
        name=name,
        pat_str=pattern,
        mergeable_ranks={token: offset + rank for rank, token in enumerate(ranks)},
        special_tokens={special: i for i, special in enumerate(special_names)},
        explicit_n_vocab=vocab_size,
    )
    ll = llguidance.tiktoken.lltokenizer_from_encoding(encoding, n_vocab=vocab_size, eos_token=eos_token_id)
    tokens = [s.encode("utf-8") for s in special_names]
    tokens.extend(ranks)
    return TokenizerParts(
        tokens=tokens,
        eos_token_ids=(eos_token_id,),
        bos_token_id=bos_token_id,
        special_token_ids=frozenset(range(offset)),
        ll=ll,
        encoder=encoding.encode_ordinary,
        tokenize=lambda text, special: encoding.encode(
            text, allowed_special="all" if special else set(), disallowed_special=()
        ),
        tokenization=b"tiktoken\0" + pattern.encode("utf-8"),
    )

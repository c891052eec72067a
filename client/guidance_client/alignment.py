"""Aligning a model's vocabulary with a server tokenizer, without I/O.

A mask is defined against one vocabulary: bit ``t`` allows token ``t`` of the server's tokenizer.
Applied to the logits of a model whose ids mean something else, it allows the wrong tokens and
nothing says so. So before a worker applies any mask it aligns: it registers its model's own
tokenizer by content (``POST /tokenizers``; the same content again is not an error) and has the
server compare the model's side, :class:`~guidance_client.vocabulary.ModelVocabulary`, with that
tokenizer (``POST /tokenizers/{name}/check``). The rules live on the server, applied once: the
logits are at least as wide as the vocabulary (wider is padding, which masks never allow), the
end-token sets are equal, and each sampled token's bytes are the server's bytes for that id.

This module builds those requests and reads their answers; :func:`verdict` turns a check into the
tokenizer name to compile against, or :class:`~guidance_client.errors.VocabularyMismatch`. The
clients' ``align_vocabulary`` runs the steps: check the model's content-named tokenizer, register
it if the server does not hold it yet, check again, decide.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from guidance_client.errors import ProtocolError, RemoteError, VocabularyMismatch
from guidance_client.protocol import Answer, Request, check

__all__ = [
    "GGUF_MAGIC",
    "TokenizerInfo",
    "VocabularyCheck",
    "check_vocabulary",
    "content_type",
    "register_tokenizer",
    "unknown_tokenizer",
    "verdict",
]

GGUF_MAGIC = b"GGUF"
"""The first bytes of a GGUF file (a model, or a vocabulary alone)."""


@dataclass(frozen=True)
class TokenizerInfo:
    """A server tokenizer (``POST /tokenizers``, ``GET /tokenizers``).

    Attributes:
        tokenizer: its name (an alias of its content).
        digest: the digest of its content and settings (end tokens included).
        vocab_size: its number of ids: the masks' width in bits.
        eos_token_ids: its end tokens; any of them ends a constraint.
        bos_token_id: its beginning-of-sequence token, if any.
        created: the registration added it (201), rather than finding it already there (200).
    """

    tokenizer: str
    digest: str
    vocab_size: int
    eos_token_ids: list[int]
    bos_token_id: int | None
    created: bool = False


@dataclass(frozen=True)
class VocabularyCheck:
    """The server's comparison of a model's vocabulary with one of its tokenizers.

    Attributes:
        tokenizer: the server tokenizer compared with.
        digest: its digest.
        aligned: nothing differs: its masks may be applied to the model's logits.
        differences: what differs, one sentence each, naming the difference.
    """

    tokenizer: str
    digest: str
    aligned: bool
    differences: list[str]


def content_type(data: bytes) -> str:
    """How a tokenizer file is sent: a GGUF (by its magic) as bytes, anything else as JSON."""
    return "application/octet-stream" if data[:4] == GGUF_MAGIC else "application/json"


def _ids(values: Sequence[int] | None) -> list[int] | None:
    return None if values is None else sorted({int(v) for v in values})


def _parse_json(answer: Answer) -> Any:
    body = check(answer)
    try:
        return json.loads(body)
    except ValueError as e:
        raise ProtocolError(f"answer is not JSON: {body[:80]!r}") from e


def _tokenizer_info(answer: Answer) -> TokenizerInfo:
    data = _parse_json(answer)
    try:
        return TokenizerInfo(
            tokenizer=str(data["tokenizer"]),
            digest=str(data["digest"]),
            vocab_size=int(data["vocab_size"]),
            eos_token_ids=[int(t) for t in data["eos_token_ids"]],
            bos_token_id=None if data.get("bos_token_id") is None else int(data["bos_token_id"]),
            created=answer.status == 201,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"not a tokenizer description: {str(data)[:200]}") from e


def _vocabulary_check(answer: Answer) -> VocabularyCheck:
    data = _parse_json(answer)
    try:
        return VocabularyCheck(
            tokenizer=str(data["tokenizer"]),
            digest=str(data["digest"]),
            aligned=bool(data["aligned"]),
            differences=[str(d) for d in data["differences"]],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"not a vocabulary check: {str(data)[:200]}") from e


def register_tokenizer(data: bytes, name: str, eos_token_ids: Sequence[int] | None = None) -> Request[TokenizerInfo]:
    """``POST /tokenizers?name=...``: a ``tokenizer.json`` or a GGUF file, sent as it is.

    Args:
        data: the file's bytes; a GGUF is recognised by its magic, anything else is sent as JSON.
        name: the name to register it under (an alias; the tokenizer is its content).
        eos_token_ids: the end tokens, replacing the file's own.
    """
    if not data:
        raise ValueError("the tokenizer file is empty")
    query: dict[str, str] = {"name": name}
    ids = _ids(eos_token_ids)
    if ids is not None:
        if not ids:
            raise ValueError("a tokenizer needs at least one end token")
        query["eos_token_ids"] = ",".join(map(str, ids))
    path = "/tokenizers?" + urlencode(query, safe=",")
    return Request("POST", path, bytes(data), {"content-type": content_type(data)}, _tokenizer_info)


def check_vocabulary(
    tokenizer: str,
    vocab_size: int | None = None,
    eos_token_ids: Sequence[int] | None = None,
    token_bytes: Mapping[int, bytes] | None = None,
) -> Request[VocabularyCheck]:
    """``POST /tokenizers/{tokenizer}/check``: compare what is given of a model with the tokenizer.

    Args:
        tokenizer: the server tokenizer.
        vocab_size: the model's logits width (None: not compared).
        eos_token_ids: the model's end tokens (None: not compared).
        token_bytes: a sample of the model's ids with their bytes (None or empty: not compared).
    """
    body: dict[str, Any] = {
        "vocab_size": None if vocab_size is None else int(vocab_size),
        "eos_token_ids": _ids(eos_token_ids),
        "tokens": None
        if not token_bytes
        else {str(int(i)): base64.b64encode(bytes(b)).decode("ascii") for i, b in sorted(token_bytes.items())},
    }
    content = json.dumps(body, separators=(",", ":")).encode()
    path = "/tokenizers/" + quote(tokenizer, safe="") + "/check"
    return Request("POST", path, content, {"content-type": "application/json"}, _vocabulary_check)


def unknown_tokenizer(e: BaseException) -> bool:
    """Whether ``e`` says the server holds no tokenizer of that name (then register it)."""
    return isinstance(e, RemoteError) and e.code == "tokenizer-not-found"


def verdict(result: VocabularyCheck) -> str:
    """The tokenizer to compile against, if the check found the vocabularies aligned.

    Raises:
        VocabularyMismatch: anything differs; its message lists every difference.
    """
    if not result.aligned or result.differences:
        raise VocabularyMismatch(result.tokenizer, result.differences)
    return result.tokenizer

"""Tokenizers: list, upload (a Hugging Face ``tokenizer.json``), tokenize, detokenize."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from core.tokenizers import Tokenizer
from core.errors import LimitExceeded
from service.dependencies import AdminDep, SettingsDep, TokenizersDep
from service.problems import problem_responses
from service.schemas import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
    TokenizerList,
)
from service.tokenizers import TOKENIZER_NAME_PATTERN

__all__ = ["router"]

router = APIRouter(tags=["tokenizers"])

# Texts longer than this are encoded in a thread rather than on the event loop.
_INLINE_CHARS = 16_384

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A Hugging Face `tokenizer.json` file, as is (e.g. `curl --data-binary @tokenizer.json`).",
        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
    }
}


def _info(name: str, tok: Tokenizer) -> TokenizerInfo:
    return TokenizerInfo(
        tokenizer=name, vocab_size=tok.vocab_size, eos_token_id=tok.eos_token_id, fingerprint=tok.fingerprint
    )


@router.get("/tokenizers", summary="List tokenizers", response_model=TokenizerList)
async def list_tokenizers(tokenizers: TokenizersDep) -> TokenizerList:
    """Every tokenizer name this server compiles for (aliases such as `default` included)."""
    return TokenizerList(tokenizers=[_info(name, tok) for name, tok in tokenizers.items()])


@router.post(
    "/tokenizers",
    summary="Upload a tokenizer.json",
    status_code=201,
    response_model=TokenizerInfo,
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {"description": "Already loaded under that name.", "model": TokenizerInfo},
        **problem_responses(400, 403, 409, 413, 422),
    },
    dependencies=[AdminDep],
)
async def upload_tokenizer(
    request: Request,
    response: Response,
    tokenizers: TokenizersDep,
    settings: SettingsDep,
    name: Annotated[str, Query(pattern=TOKENIZER_NAME_PATTERN, description="The name to register it under.")],
) -> TokenizerInfo:
    """Load a Hugging Face `tokenizer.json` (the request body) under the name `?name=`.

    201 when added; 200 when that name already holds the same vocabulary; 409
    `tokenizer-exists` when it holds another one. A server-wide change: where admin keys are
    configured, other keys get 403 `forbidden`.
    """
    tokenizers.check_new(name)
    data = await request.body()
    async with tokenizers.upload_lock:
        tok = await asyncio.to_thread(Tokenizer.from_hf_json, name, data, settings.max_vocab_size)
        if not tokenizers.add(name, tok):
            response.status_code = 200
    return _info(name, tokenizers.get(name))


@router.post(
    "/tokenize", summary="Encode text", response_model=TokenizeResponse, responses=problem_responses(404, 413, 422)
)
async def tokenize(body: TokenizeRequest, tokenizers: TokenizersDep, settings: SettingsDep) -> TokenizeResponse:
    """Encode text with a tokenizer (no BOS/EOS; special-token text stays text).

    Texts longer than `max_tokenize_chars` answer 413 `limit-exceeded`.
    """
    tok = tokenizers.get(body.tokenizer)
    limit = settings.max_tokenize_chars
    if len(body.text) > limit:
        raise LimitExceeded(f"a text of {len(body.text)} characters, above the limit of {limit}", "max_tokenize_chars")
    if len(body.text) > _INLINE_CHARS:
        ids = await asyncio.to_thread(tok.encode, body.text)
    else:
        ids = tok.encode(body.text)
    return TokenizeResponse(tokens=ids)


@router.post(
    "/detokenize",
    summary="Decode tokens",
    response_model=DetokenizeResponse,
    responses=problem_responses(404, 413, 422),
)
async def detokenize(body: DetokenizeRequest, tokenizers: TokenizersDep, settings: SettingsDep) -> DetokenizeResponse:
    """Decode token ids into text (special tokens by name; ids outside the vocabulary: 422).

    More ids than a session may hold (`max_session_tokens`) answer 413 `limit-exceeded`.
    """
    tok = tokenizers.get(body.tokenizer)
    limit = settings.max_session_tokens
    if len(body.tokens) > limit:
        raise LimitExceeded(f"{len(body.tokens)} ids, above the limit of {limit}", "max_session_tokens")
    return DetokenizeResponse(text=tok.decode(body.tokens))

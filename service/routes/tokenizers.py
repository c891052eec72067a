"""Tokenizers: list, upload (a Hugging Face ``tokenizer.json`` or a GGUF file), check, tokenize, detokenize."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from core.tokenizers import vocabulary_differences
from service.dependencies import AdminDep, SettingsDep, TokenizersDep
from service.operations import tokenizers as operations
from service.problems import problem_responses
from service.schemas import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
    TokenizerList,
    VocabularyCheck,
    VocabularyCheckRequest,
)
from service.tokenizers import TOKENIZER_NAME_PATTERN

__all__ = ["router"]

router = APIRouter(tags=["tokenizers"])

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "The file as is (e.g. `curl --data-binary @tokenizer.json`): a Hugging Face `tokenizer.json`, "
            "or a GGUF file, a model or a vocab-only one (recognised by its magic)."
        ),
        "content": {
            "application/json": {"schema": {"type": "object", "additionalProperties": True}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_EOS_PATTERN = r"^[0-9]{1,10}(,[0-9]{1,10}){0,31}$"


@router.get("/tokenizers", summary="List tokenizers", response_model=TokenizerList)
async def list_tokenizers(tokenizers: TokenizersDep) -> TokenizerList:
    """Every tokenizer name this server compiles for (aliases such as `default` included)."""
    return operations.list_tokenizers(tokenizers)


@router.post(
    "/tokenizers",
    summary="Register a tokenizer",
    status_code=201,
    response_model=TokenizerInfo,
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {"description": "That content is already registered (the name now aliases it).", "model": TokenizerInfo},
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
    eos_token_ids: Annotated[
        str | None,
        Query(
            pattern=_EOS_PATTERN,
            description="The end tokens, comma-separated ids, replacing the file's own (control tokens of the file).",
        ),
    ] = None,
) -> TokenizerInfo:
    """Register the tokenizer in the request body (a `tokenizer.json` or a GGUF file) as `?name=`.

    A tokenizer is identified by its digest (vocabulary and settings, end tokens included): 201
    when new; 200 when that content is already registered (the name becomes an alias of it); 409
    `tokenizer-exists` when the name holds another one. At `max_tokenizers`, 413 `limit-exceeded`
    unless the same file (and `eos_token_ids`) was uploaded before. The end tokens are the file's own (a
    GGUF's EOS, EOT and EOM; a tokenizer.json's known end tokens) unless `eos_token_ids` names
    them. A server-wide change: where admin keys are configured, other keys get 403 `forbidden`.
    """
    ends = None if eos_token_ids is None else [int(t) for t in eos_token_ids.split(",")]
    info, new = await operations.register_tokenizer(tokenizers, settings, name, await request.body(), ends)
    if not new:
        response.status_code = 200
    return info


@router.post(
    "/tokenizers/{name}/check",
    summary="Check a model against a tokenizer",
    response_model=VocabularyCheck,
    responses=problem_responses(404, 413, 422),
)
async def check_tokenizer(
    body: VocabularyCheckRequest,
    tokenizers: TokenizersDep,
    name: Annotated[str, Path(description="The tokenizer's name.")],
) -> VocabularyCheck:
    """Compare what a worker knows of its model with the tokenizer `name`.

    Each part given is checked: the logits' width (`vocab_size`, at least the vocabulary), the
    end tokens (the same set), and a sample of token bytes (`tokens`, base64 by id). The answer
    lists every difference; `aligned` is true when there is none. Adapters call this before their
    first forward pass and refuse to run when anything differs.
    """
    tok = tokenizers.get(name)
    differences = vocabulary_differences(
        tok, vocab_size=body.vocab_size, eos_token_ids=body.eos_token_ids, token_bytes=body.token_bytes(), name=name
    )
    return VocabularyCheck(tokenizer=name, digest=tok.digest, aligned=not differences, differences=differences)


@router.post(
    "/tokenize", summary="Encode text", response_model=TokenizeResponse, responses=problem_responses(404, 413, 422)
)
async def tokenize(body: TokenizeRequest, tokenizers: TokenizersDep, settings: SettingsDep) -> TokenizeResponse:
    """Encode text with a tokenizer, as the model's own tokenizer does (no BOS/EOS).

    Special-token text stays text unless `special` is true.

    Texts longer than `max_tokenize_chars` answer 413 `limit-exceeded`.
    """
    return TokenizeResponse(
        tokens=await operations.tokenize(tokenizers, settings, body.tokenizer, body.text, body.special)
    )


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
    return DetokenizeResponse(text=operations.detokenize(tokenizers, settings, body.tokenizer, body.tokens))

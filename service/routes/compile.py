"""``POST /compile``: a constraint in, a shareable ``program_id`` out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.requests import ClientDisconnect

from service.dependencies import OwnerDep, ResourcesDep
from service.operations.compile import compile_and_open, compile_program, program_variables
from service.problems import problem_responses
from service.schemas import CompileRequest, CompileResponse, EngineLimitNote

__all__ = ["router"]

router = APIRouter(tags=["programs"])

# What servers log for a request whose client closed the connection first (nginx's convention).
_CLIENT_GONE = 499


@router.post(
    "/compile",
    summary="Compile a constraint",
    response_model=CompileResponse,
    response_model_exclude_none=True,
    responses=problem_responses(400, 404, 413, 422, 429, 503),
)
async def compile_endpoint(
    body: CompileRequest, state: ResourcesDep, owner: OwnerDep, request: Request
) -> CompileResponse | Response:
    """Compile a constraint for a vocabulary (or take it from the shared cache).

    Give exactly one kind: `template`, `json_schema`, `regex`, `grammar` (Lark), `gbnf`, `choice`,
    `llguidance`, `structural_tag`, `tools` (with `tool_format`), or another engine's request form
    as its users write it: `response_format` (OpenAI), `structured_outputs` (vLLM), `ebnf` (SGLang).
    Any of them may take `reasoning`.
    The `program_id` is a content hash, equal on every replica: keep it to open sessions later
    (`POST /sessions {program_id}`), and keep the spec to re-send if that answers 404.
    A compile past `max_compile_ms` of CPU time answers 413 `limit-exceeded`; one whose client
    goes away is stopped.
    """
    session_id = None
    try:
        if body.open_session:
            compiled, session = await compile_and_open(body, state, owner, request)
            session_id = session.id
        else:
            compiled = await compile_program(body, state, owner, request)
    except ClientDisconnect:
        return Response(status_code=_CLIENT_GONE)  # nobody reads it: nothing to log or count
    program = compiled.program
    return CompileResponse(
        program_id=program.program_id,
        cached=compiled.cached,
        vocab_size=program.vocab_size,
        mask_words=program.mask_words,
        variables=program_variables(program),
        compile_ms=round(compiled.compile_ms, 3),
        session_id=session_id,
        ignored=list(program.ignored),
        engine_limit=EngineLimitNote.of(program.stats.engine_limit),
    )

"""Bare Starlette endpoints: the floor the service's hot paths are compared with.

Run by the benchmarks in a subprocess with the same uvicorn settings as ``python -m service``
(``uvicorn.Config`` defaults: uvloop and httptools when installed, no access log, lifespan on)::

    python -m bench.floor [--mask-file M [--grammar-file G --tokens-file T]] [--step-bytes N] --port P

Routes:

* ``GET /sessions/{id}/mask``: with only ``--mask-file``, the fixed bytes of that file (the mask a
  session of the service answers), with the service's headers; with ``--grammar-file`` and
  ``--tokens-file``, computed at every request by an ``LLMatcher`` of that grammar advanced by those
  tokens (the same mask, computed the plainest way).
* ``POST /step``: reads the request body and answers ``--step-bytes`` bytes; with ``--fresh``
  a new ``np.empty`` buffer per answer (as the service builds one), else one fixed ``bytes``.
* ``WS /step``: a WebSocket answering every binary message with ``--step-bytes`` bytes (the
  fixed ones), to compare a persistent WebSocket with HTTP/1.1 keep-alive for the step exchange.
* ``POST /compile``: reads the request body and answers a fixed compile answer (the isolation
  benchmark's floor: a storm's requests cost their clients and this process, not the service).
* ``GET /readyz``: 200.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


def build_app(args: argparse.Namespace) -> Starlette:
    fixed_mask = b""
    if args.mask_file:
        with open(args.mask_file, "rb") as fb:
            fixed_mask = fb.read()
    words = len(fixed_mask) // 4
    headers = {"X-Vocab-Size": str(args.vocab_size), "X-Mask-Words": str(words), "X-Terminated": "false"}
    compute: Any = None
    if args.grammar_file:
        import llguidance

        from core import load_default_tokenizer

        tok = load_default_tokenizer()
        with open(args.grammar_file, encoding="utf-8") as f:
            grammar = f.read()
        with open(args.tokens_file, encoding="utf-8") as f:
            tokens = json.load(f)
        matcher = llguidance.LLMatcher(tok.ll, grammar, log_level=0)
        if tokens and not matcher.consume_tokens(tokens):
            raise SystemExit("floor: the tokens do not fit the grammar")

        def compute() -> bytes:
            row = np.zeros(words, dtype=np.int32)
            matcher.unsafe_compute_mask_ptr(row.ctypes.data, words * 4)
            return row.tobytes()

    async def mask(request: Request) -> Response:
        body = compute() if compute is not None else fixed_mask
        return Response(body, media_type="application/octet-stream", headers=headers)

    step_fixed = bytes(args.step_bytes)

    async def step(request: Request) -> Response:
        await request.body()
        if args.fresh:
            buf = np.empty(args.step_bytes, dtype=np.uint8)  # as the service builds its answers
            buf[:] = np.frombuffer(step_fixed, dtype=np.uint8)
            return Response(buf.data, media_type="application/vnd.guidance.step")
        return Response(step_fixed, media_type="application/vnd.guidance.step")

    async def step_ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.receive_bytes()
                await websocket.send_bytes(step_fixed)
        except WebSocketDisconnect:
            pass

    compiled = json.dumps({"program_id": "0" * 32, "cached": True, "vocab_size": args.vocab_size}).encode()

    async def compile_(request: Request) -> Response:
        await request.body()
        return Response(compiled, media_type="application/json")

    async def readyz(request: Request) -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/sessions/{session_id}/mask", mask, methods=["GET"]),
            Route("/step", step, methods=["POST"]),
            Route("/compile", compile_, methods=["POST"]),
            WebSocketRoute("/step", step_ws),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.floor")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mask-file")
    p.add_argument("--vocab-size", type=int, default=131072)
    p.add_argument("--grammar-file")
    p.add_argument("--tokens-file")
    p.add_argument("--step-bytes", type=int, default=0)
    p.add_argument("--fresh", action="store_true")
    args = p.parse_args()
    # The settings service/cli.py passes (host, port, log level, access log, lifespan); the rest
    # are uvicorn's defaults on both sides.
    config = uvicorn.Config(
        build_app(args), host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="on"
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()

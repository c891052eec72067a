"""A lone server killed with SIGSEGV mid-decode and restarted on its port: nothing is lost.

The recovery path of a single server (no replicas, no balancer): a supervisor (systemd's
``Restart=``, Docker's ``restart:``) starts the process again on the same port, and the worker's
client replays each session from its program spec and the tokens accepted so far. Eight sessions
(a template and a JSON schema) are decoded greedily from the served masks, so a run is a
function of the masks alone; the run with the crash must equal an uninterrupted one.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Callable

import jsonschema
import numpy as np

from core import Tokenizer, allowed_tokens
from guidance_client import GrammarBatch, GuidanceClient, RemoteGrammar
from tests.server import Server, start, stop
from tests.service.helpers import PERSON_SCHEMA

TEMPLATE = (
    "Name: {{gen 'name' regex='[A-Z][a-z]{1,6}'}}\n"
    "Age: {{gen 'age' regex='[0-9]{1,2}'}}\n"
    "Fruit: {{select 'fruit' options=['apple', 'banana', 'cherry']}}"
)
TEMPLATE_ORACLE = r"Name: [A-Z][a-z]{1,6}\nAge: [0-9]{1,2}\nFruit: (apple|banana|cherry)"
SESSIONS = 8
KILL_AT_STEP = 5


def _greedy(grammars: list[RemoteGrammar], bitmask: np.ndarray, tok: Tokenizer, step: int) -> list[list[int]]:
    """The highest-scoring allowed token of each live sequence, under fixed pseudo-logits per
    (sequence, step): a deterministic stand-in for a model's greedy decoding."""
    out: list[list[int]] = []
    for i, g in enumerate(grammars):
        if g.is_terminated():
            out.append([])
            continue
        allowed = allowed_tokens(bitmask[i], tok.vocab_size)
        scores = np.random.default_rng([i, step]).random(tok.vocab_size)
        out.append([int(allowed[np.argmax(scores[allowed])])])
    return out


def _decode(
    client: GuidanceClient, tok: Tokenizer, crash: Callable[[], None] | None = None, recovery: list[float] | None = None
) -> list[RemoteGrammar]:
    """Walk every session to EOS, one batched step per decoding step; at ``KILL_AT_STEP``,
    ``crash()`` runs in another thread as the step is sent (that step's time goes to ``recovery``)."""
    recovery = [] if recovery is None else recovery
    specs = [{"template": TEMPLATE} if i % 2 == 0 else {"json_schema": PERSON_SCHEMA} for i in range(SESSIONS)]
    grammars = [RemoteGrammar.open(client, spec) for spec in specs]
    batch = GrammarBatch(client, grammars, variables=True)
    bitmask = np.zeros((SESSIONS, grammars[0].mask_words), dtype=np.int32)
    pending: list[list[int]] = [[] for _ in grammars]
    try:
        for step in range(200):
            if crash is not None and step == KILL_AT_STEP:
                assert not all(g.is_terminated() for g in grammars), "the crash must come mid-decode"
                # The kill lands while this step is in flight or just before it: either way the
                # step meets a dead server, then a restarting one, and must come back whole.
                supervisor = threading.Thread(target=crash)
                started = time.perf_counter()
                supervisor.start()
                statuses = batch.step(pending, bitmask)
                recovery.append(time.perf_counter() - started)
                supervisor.join(timeout=120)
            else:
                statuses = batch.step(pending, bitmask)
            assert all(s.status == "ok" for s in statuses), [s for s in statuses if s.status != "ok"]
            if all(g.is_terminated() for g in grammars):
                return grammars
            pending = _greedy(grammars, bitmask, tok, step)
    finally:
        batch.close()
    raise AssertionError("the sessions did not finish in 200 steps")


def _outputs(grammars: list[RemoteGrammar], tok: Tokenizer) -> list[tuple[list[int], str, dict[str, object]]]:
    eos = tok.eos_token_id
    return [(list(g.tokens), tok.decode([t for t in g.tokens if t != eos]), g.get_variable_values()) for g in grammars]


def test_a_server_killed_mid_decode_and_restarted_loses_nothing(default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    servers: list[Server] = [start()]
    port = int(servers[0].url.rsplit(":", 1)[1])
    try:
        with GuidanceClient(servers[0].url) as client:
            reference = _outputs(_decode(client, tok), tok)
            assert client.replays == 0

        # As a supervisor would: the process dies, a new one starts on the same port. The client's
        # default patience (about 18 s) covers a restart; more retries here for a loaded machine
        # (delays of 0.05 s doubling, capped at 4 s: about 43 s).
        def crash() -> None:
            dead = servers[-1]
            dead.proc.send_signal(signal.SIGSEGV)
            code, _ = stop(dead)
            assert code == -signal.SIGSEGV, code
            servers.append(start(port=port))

        recovery: list[float] = []
        with GuidanceClient(servers[0].url, retries=16) as client:
            grammars = _decode(client, tok, crash, recovery)
            outputs = _outputs(grammars, tok)
            assert len(servers) == 2 and servers[1].proc.poll() is None
            # every session was rebuilt on the new process, and lives there now
            assert client.replays >= SESSIONS
            for g in grammars:
                remote = client.get(g.session_id)
                assert remote.tokens == g.tokens and remote.terminated
                g.close()
    finally:
        for server in servers:
            stop(server)

    assert outputs == reference
    print(
        f"\ncrash recovery: SIGSEGV at step {KILL_AT_STEP}, restart on port {port}, {client.replays} sessions "
        f"replayed; the step through the crash took {recovery[0]:.2f} s (restart included)"
    )
    for i, (_, text, variables) in enumerate(outputs):
        if i % 2 == 0:
            assert re.fullmatch(TEMPLATE_ORACLE, text), text
            assert text == f"Name: {variables['name']}\nAge: {variables['age']}\nFruit: {variables['fruit']}"
        else:
            jsonschema.validate(json.loads(text), PERSON_SCHEMA)

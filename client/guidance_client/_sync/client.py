"""The sync client, its remote grammars and batches.

GENERATED from ``guidance_client/_async/client.py`` by ``scripts/unasync_client.py``: do not
edit; change the async source and run the script.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import numpy as np
from numpy.typing import NDArray

from guidance_client import alignment, protocol
from guidance_client._sync.pipeline import Pipeline
from guidance_client.alignment import TokenizerInfo, VocabularyCheck
from guidance_client.errors import GuidanceClientError, RemoteError
from guidance_client.protocol import (
    REFUSED,
    REPLAY_CHUNK,
    AcceptResult,
    EventReader,
    ProgramInfo,
    SessionEvent,
    SessionInfo,
    StepResult,
    StepStatus,
)
from guidance_client.pytypes import parse_as
from guidance_client.replay import GrammarState, StepPlan
from guidance_client.specs import program_spec
from guidance_client.transports import SyncTransport
from guidance_client.vocabulary import ModelVocabulary
from guidance_client.wire import MaskEncoding

if TYPE_CHECKING:
    from typing import Self  # annotations only: the client also runs on Python 3.10

__all__ = ["GrammarBatch", "GuidanceClient", "RemoteGrammar"]

_T = TypeVar("_T")


class GuidanceClient:
    """A client of one server, or of replicas behind a balancer.

    Args:
        base_url: the server or balancer, e.g. ``http://127.0.0.1:8000``.
        timeout: seconds per request.
        http: an httpx client to use for every call instead of making one (its ``base_url``
            applies; a custom transport, an app in tests).
        worker_id: sent as ``X-Worker-Id`` on every request, for a balancer that hashes on it
            (all of a worker's sessions then live on one replica). None: a random id made for
            this client, so its sessions stay on one replica all the same; ``""``: no header.
        api_key: sent as ``Authorization: Bearer <api_key>`` on every request (replays too).
        retries: how many times a grammar replays its session and retries after a lost
            connection, replica or session (see :class:`RemoteGrammar`).
        backoff: seconds before the first retry; doubled at each further one.

    Attributes:
        worker_id: the ``X-Worker-Id`` this client sends (``""``: none).
        replays: sessions re-created from their spec and tokens so far.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        timeout: float = 30.0,
        *,
        http: httpx.Client | None = None,
        worker_id: str | None = None,
        api_key: str | None = None,
        retries: int = 10,
        backoff: float = 0.05,
    ) -> None:
        if worker_id is None:
            worker_id = uuid.uuid4().hex
        self.worker_id = worker_id
        self.transport = SyncTransport(base_url, timeout, protocol.base_headers(worker_id, api_key), http)
        self.retries = retries
        self.backoff = backoff
        self.replays = 0

    @property
    def http(self) -> httpx.Client:
        """The httpx client of the calls outside the decode loop."""
        return self.transport.http

    def send(self, request: protocol.Request[_T]) -> _T:
        """Send one request built by :mod:`guidance_client.protocol`; its parsed answer."""
        return request.parse(self.transport.send(request))

    def retrying(self, fn: Callable[[], _T], on_failure: Callable[[], None] | None = None) -> _T:
        """Call ``fn``; after a failure a replay can mend, call ``on_failure``, wait, try again."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except GuidanceClientError as e:
                if attempt == self.retries or not protocol.retryable(e):
                    raise
                if on_failure is not None:
                    on_failure()
                self.transport.sleep(protocol.delay(self.backoff, attempt, e))
        raise AssertionError("unreachable")  # pragma: no cover

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (when this client made them)."""
        self.transport.close()

    # -- programs
    def compile_spec(self, spec: Mapping[str, Any], *, open_session: bool = False) -> ProgramInfo:
        """Compile a raw compile body (see :func:`~guidance_client.program_spec`)."""
        return self.send(protocol.compile_program(spec, open_session))

    def compile(self, template: str | None = None, *, open_session: bool = False, **kwargs: Any) -> ProgramInfo:
        """Compile one kind: ``template``, or a keyword of :func:`~guidance_client.program_spec`
        (``json_schema`` a schema or a Pydantic model, ``grammar`` Lark or a ``guidance`` grammar object,
        ``gbnf``, ``choice``, ``response_format``, ``structured_outputs``...)."""
        return self.compile_spec(program_spec(template, **kwargs), open_session=open_session)

    # -- sessions
    def create_session(self, program_id: str | None = None, **spec: Any) -> str:
        """Open a session on ``program_id``, or on a program given like :meth:`compile`."""
        spec_body = None if program_id is not None else program_spec(**spec)
        return self.send(protocol.create_session(program_id, spec_body))

    def accept(
        self, session_id: str, tokens: Sequence[int], *, dry_run: bool = False, partial: bool = False
    ) -> AcceptResult:
        """Accept tokens all or nothing (raises :class:`~guidance_client.RemoteError` ``token-rejected``, 409).

        ``partial=True``: the result's ``partial`` has every capture so far, with its text so far.
        """
        return self.send(protocol.accept(session_id, tokens, dry_run, partial))

    def mask(self, session_id: str, out: NDArray[np.int32] | None = None, row: int = 0) -> NDArray[np.int32]:
        """The allowed next tokens: into ``out[row]`` if given (and returned), else a new row."""
        return self.send(protocol.mask(session_id, out, row))

    def rollback(self, session_id: str, num_tokens: int) -> SessionInfo:
        """Undo the last ``num_tokens`` tokens."""
        return self.send(protocol.rollback(session_id, num_tokens))

    def fork(self, session_id: str) -> str:
        """A new session at the same position; returns its id."""
        return self.send(protocol.fork(session_id))

    def get(self, session_id: str, *, partial: bool = False) -> SessionInfo:
        """The session's tokens, text, variables and status (``partial``: and every capture so far)."""
        return self.send(protocol.get(session_id, partial))

    def watch(self, session_id: str, *, last_event_id: str | None = None) -> Iterator[SessionEvent]:
        """The session's events as they happen (``GET /sessions/{id}/events``), until its ``end``.

        The first is a ``snapshot`` of the whole state (or, with ``last_event_id``, the events
        after that one, when the server still holds them); then one ``accept`` per accept with the
        new text and the captures whose partial values changed. Only the key that opened the
        session may watch it, or an admin key. Stop early by breaking out of the loop.
        """
        reader = EventReader()
        lines = self.transport.lines(protocol.watch_path(session_id), protocol.watch_headers(last_event_id))
        for line in lines:
            event = reader.feed(line)
            if event is not None:
                yield event
                if event.event == "end":
                    return

    def delete(self, session_id: str) -> None:
        """Close the session."""
        self.send(protocol.delete(session_id))

    # -- the batched step
    def step(
        self,
        items: Sequence[tuple[Any, ...]],
        *,
        variables: bool | str = False,
        mask_encoding: MaskEncoding = "dense",
        forced_tokens: bool = True,
    ) -> StepResult:
        """One batched step; ``items`` are ``(session_id, tokens[, draft_tokens])`` (``POST /step``).

        ``mask_encoding="blocks"`` has the masks sent block-sparse (smaller for most constraints);
        the result's ``masks`` are dense either way. ``forced_tokens=False`` skips computing each
        session's forced tokens (their statuses then have none). ``variables``: ``True`` for each
        session's captured values, ``"partial"`` for those and every capture's partial value.
        """
        return self.send(protocol.step(items, variables, mask_encoding, forced_tokens))

    # -- tokenizers and operations
    def tokenize(self, text: str, tokenizer: str | None = None) -> list[int]:
        """Token ids of ``text`` with a server-side tokenizer."""
        return self.send(protocol.tokenize(text, tokenizer))

    def detokenize(self, tokens: Sequence[int], tokenizer: str | None = None) -> str:
        """Text of token ids with a server-side tokenizer."""
        return self.send(protocol.detokenize(tokens, tokenizer))

    def tokenizers(self) -> list[dict[str, Any]]:
        """The server's tokenizers: ``tokenizer``, ``digest``, ``vocab_size``, ``eos_token_ids``, ``bos_token_id``."""
        return self.send(protocol.tokenizers())

    # -- vocabularies
    def register_tokenizer(
        self, data: bytes, *, name: str, eos_token_ids: Sequence[int] | None = None
    ) -> TokenizerInfo:
        """Register a tokenizer file by its content: a ``tokenizer.json`` or a GGUF file (by its magic).

        The same content again is not an error (``created`` is then False); ``name`` is an alias,
        and a name holding another vocabulary is refused (409 ``tokenizer-exists``).
        ``eos_token_ids`` replace the file's own end tokens.
        """
        return self.send(alignment.register_tokenizer(data, name, eos_token_ids))

    def check_vocabulary(
        self,
        tokenizer: str,
        *,
        vocab_size: int | None = None,
        eos_token_ids: Sequence[int] | None = None,
        token_bytes: Mapping[int, bytes] | None = None,
    ) -> VocabularyCheck:
        """Have the server compare a model's vocabulary with its tokenizer ``tokenizer`` (no error if they differ).

        Each part given is compared: the logits width (at least the tokenizer's ids), the end
        tokens (the same set), and each sampled id's bytes. :meth:`align_vocabulary` raises instead.
        """
        return self.send(alignment.check_vocabulary(tokenizer, vocab_size, eos_token_ids, token_bytes))

    def align_vocabulary(self, vocabulary: ModelVocabulary, *, tokenizer: str | None = None) -> str:
        """Make sure the server's masks fit the model; the server tokenizer to compile against.

        Without ``tokenizer``, the model's own tokenizer file (``vocabulary.tokenizer_file``) is
        registered by content under ``vocabulary.name`` if the server does not hold it yet; with
        ``tokenizer``, that server tokenizer is used as it is. Either way the server then compares
        the model's logits width, end tokens and sampled token bytes with it.

        Raises:
            VocabularyMismatch: anything differs; the message lists every difference.
            ValueError: no ``tokenizer`` and no tokenizer file.
        """
        name = vocabulary.name if tokenizer is None else tokenizer
        checking = alignment.check_vocabulary(
            name, vocabulary.vocab_size, vocabulary.eos_token_ids, vocabulary.token_bytes
        )
        try:
            result = self.send(checking)
        except RemoteError as e:
            if tokenizer is not None or vocabulary.tokenizer_file is None or not alignment.unknown_tokenizer(e):
                raise
            self.register_tokenizer(vocabulary.tokenizer_file, name=name, eos_token_ids=vocabulary.eos_token_ids)
            result = self.send(checking)
        return alignment.verdict(result)

    def stats(self) -> dict[str, Any]:
        """The server's statistics."""
        return self.send(protocol.stats())

    def ready(self) -> bool:
        """Whether the server is ready (``/readyz`` answers 200); False if unreachable."""
        try:
            return self.send(protocol.ready())
        except GuidanceClientError:
            return False

    def grammar(self, template: str | None = None, **kwargs: Any) -> RemoteGrammar:
        """Compile a program and open a session on it: a drop-in ``GuidanceGrammar``.

        Takes what :meth:`compile` takes: ``client.grammar(json_schema=Model)`` with a Pydantic model,
        then ``grammar.parse(Model)`` once it is done; ``client.grammar(grammar=guidance_program)``.
        """
        return RemoteGrammar.open(self, program_spec(template, **kwargs))


class RemoteGrammar(GrammarState):
    """A ``core.GuidanceGrammar`` whose state lives on the server, and survives losing it.

    Keeps the program spec and the tokens accepted so far: when a call fails because the
    connection dropped, the replica died or restarted, or the session expired, the grammar opens
    a new session from the spec (on whichever replica the balancer now picks), re-accepts its
    tokens, and retries the call, up to ``client.retries`` times with exponential backoff. The
    caller never sees a wrong mask, only the time it took.

    Attributes:
        client: the client it calls through.
        partial: ask for every capture's partial value with each accept (then
            ``get_variable_values(partial=True)`` has them); off by default, it costs the server a
            little per accept.
        spec: the compile body of the program.
        program: the compiled program's description.
        session_id: the server-side session.
        tokens: tokens accepted so far.
    """

    def __init__(
        self,
        client: GuidanceClient,
        spec: Mapping[str, Any],
        program: ProgramInfo,
        session_id: str,
        tokens: Sequence[int] = (),
        terminated: bool = False,
        variables: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(spec, program, session_id, tokens, terminated, variables)
        self.client = client
        self.partial = False

    @classmethod
    def open(cls, client: GuidanceClient, spec: Mapping[str, Any]) -> RemoteGrammar:
        """Compile ``spec`` and open a session on it."""
        info = client.retrying(lambda: client.compile_spec(spec, open_session=True))
        assert info.session_id is not None
        return cls(client, spec, info, info.session_id)

    def replay(self) -> None:
        """Open a new session from the spec and re-accept the tokens accepted so far."""
        info = self.client.compile_spec(self.spec, open_session=True)
        assert info.session_id is not None
        for i in range(0, len(self.tokens), REPLAY_CHUNK):
            self.client.accept(info.session_id, self.tokens[i : i + REPLAY_CHUNK])
        self._reopened(info)
        self.client.replays += 1

    def _call(self, fn: Callable[[], _T]) -> _T:
        def attempt() -> _T:
            if self._lost:
                self.replay()
            return fn()

        def lost() -> None:
            self._lost = True

        return self.client.retrying(attempt, on_failure=lost)

    def accept_tokens(self, tokens: Sequence[int]) -> bool:
        """Advance by ``tokens``; False, with nothing changed, if any is not allowed."""
        tokens = [int(t) for t in tokens]
        try:
            result = self._call(lambda: self.client.accept(self.session_id, tokens, partial=self.partial))
        except RemoteError as e:
            if e.code in REFUSED:
                return False
            raise
        self._update(result.terminated, result.variables, result.partial)
        self.tokens.extend(tokens)
        return True

    def validate_tokens(self, tokens: Sequence[int]) -> list[int]:
        """The longest allowed prefix of ``tokens``, without advancing."""
        tokens = [int(t) for t in tokens]
        try:
            result = self._call(lambda: self.client.accept(self.session_id, tokens, dry_run=True))
        except RemoteError as e:
            if e.code == "token-out-of-range" and e.index is not None:
                return tokens[: e.index]
            raise
        return tokens[: result.accepted]

    def rollback(self, num_tokens: int) -> None:
        """Undo the last ``num_tokens`` tokens."""
        info = self._call(lambda: self.client.rollback(self.session_id, num_tokens))
        self.tokens = info.tokens
        self._update(info.terminated, info.variables, {} if self.partial else None)

    def fill_next_token_bitmask(self, bitmask: NDArray[np.int32], idx: int = 0) -> None:
        """Write the allowed next tokens into row ``idx`` of an int32 ``[batch, words]`` array."""
        self._call(lambda: self.client.mask(self.session_id, bitmask, idx))

    def reset(self) -> None:
        """Back to the start of the program."""
        if self.tokens:
            self.rollback(len(self.tokens))

    def fork(self) -> RemoteGrammar:
        """An independent copy at the same position (a new server-side session)."""
        sid = self._call(lambda: self.client.fork(self.session_id))
        return RemoteGrammar(self.client, self.spec, self.program, sid, self.tokens, self._terminated, self._variables)

    def text(self) -> str:
        """The text accepted so far (the end token excluded), as the server's tokenizer decodes it."""
        return (self._call(lambda: self.client.get(self.session_id))).text

    def parse(self, target: Any = None) -> Any:
        """The text as ``target``: a Pydantic model validated, a ``TypeAdapter``'s or dataclass's value,
        or (no target) the parsed JSON (see :func:`guidance_client.pytypes.parse_as`).

        Raises:
            ValueError: the text is not valid for ``target`` (Pydantic's ``ValidationError`` is one).
        """
        return parse_as(self.text(), target)

    def close(self) -> None:
        """Close the server-side session (already gone, or unreachable, is fine)."""
        try:
            self.client.delete(self.session_id)
        except GuidanceClientError as e:
            if not protocol.retryable(e):
                raise


class GrammarBatch(Pipeline):
    """The sequences of one decoding batch: one ``POST /step`` per step for all of them.

    Row ``i`` of the bitmask belongs to ``grammars[i]``. A worker pipelines by sending step t's
    tokens, running its forward pass, and only then waiting for step t+1's masks (sync:
    ``submit()``, a future; asyncio: ``asyncio.create_task(batch.step(...))``). Lost sessions are
    replayed as in :class:`RemoteGrammar`, and their part of the step is sent again; nothing
    is applied twice.

    Args:
        client: the client of the server (or balancer) holding the sessions.
        grammars: the batch's grammars.
        variables: ask for captured variables at every step; ``"partial"``: and every capture's
            partial value too (``get_variable_values(partial=True)`` of each grammar).
        mask_encoding: how the masks travel: ``"dense"`` (the default) or ``"blocks"``
            (block-sparse: about a fifth of the bytes for a JSON schema's masks, for links where
            bandwidth counts; over loopback encoding and decoding cost more than the bytes saved).
        forced_tokens: have the server compute each sequence's forced tokens at every step
            (``StepStatus.forced_tokens``); ``False`` saves it an llguidance call per sequence.
    """

    def __init__(
        self,
        client: GuidanceClient,
        grammars: Sequence[RemoteGrammar],
        *,
        variables: bool | str = False,
        mask_encoding: MaskEncoding = "dense",
        forced_tokens: bool = True,
    ) -> None:
        self.client = client
        self.grammars = list(grammars)
        self.variables = variables
        self.mask_encoding: MaskEncoding = mask_encoding
        self.forced_tokens = forced_tokens

    def step(self, tokens: Sequence[Sequence[int]], bitmask: NDArray[np.int32] | None = None) -> list[StepStatus]:
        """Accept ``tokens[i]`` into grammar i (possibly none) and fill every mask into ``bitmask``."""
        plan = StepPlan(self.grammars, tokens, bitmask)

        def attempt() -> None:
            for i in plan.lost():
                self.grammars[i].replay()
            result = self.client.step(
                plan.items(),
                variables=self.variables,
                mask_encoding=self.mask_encoding,
                forced_tokens=self.forced_tokens,
            )
            plan.apply(result)

        self.client.retrying(attempt, on_failure=plan.fail_all)
        return plan.result()

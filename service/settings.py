"""Server settings: one pydantic-settings object, read from ``GUIDANCE_SERVER_*`` once.

Every field can be set from the environment (``GUIDANCE_SERVER_PORT=9000``), from the command
line (``guidance-server --port 9000``) or in code (``Settings(port=9000)``); nothing else in the
service reads ``os.environ``. List fields accept JSON (``'["default", "gpt2=/m/tokenizer.json"]'``)
or a comma-separated string (``default,gpt2=/m/tokenizer.json``).

API keys are ``SecretStr``: they never show in a settings object's ``repr``, and validation
errors never echo an input value (``hide_input_in_errors``), so a mistyped key cannot end up in
a log either.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.limits import Limits

__all__ = ["API_KEY_PATTERN", "API_KEY_RULE", "LogLevel", "Settings"]

LogLevel = Literal["critical", "error", "warning", "info", "debug"]

_MIB = 1024 * 1024

# An API key travels as an RFC 6750 ``b64token`` (no spaces or commas: a comma-separated list of
# keys stays unambiguous), and is long enough not to be guessed.
API_KEY_PATTERN = re.compile(r"[A-Za-z0-9._~+/-]{16,}=*")
API_KEY_RULE = "at least 16 characters of A-Z a-z 0-9 - . _ ~ + / (then = padding)"


class Settings(BaseSettings):
    """Configuration of one server process; defaults are the documented ones.

    Attributes:
        host: interface to bind.
        port: TCP port.
        log_level: log level of the server and of uvicorn.
        access_log: one uvicorn log line per request (off: a mask request is microseconds).
        tokenizers: tokenizers loaded at start: ``default`` (the embedded tekken), the path of a
            GGUF file, of a Hugging Face ``tokenizer.json`` (named after the file; the model's
            ``tokenizer_config.json`` and ``generation_config.json`` beside it are read) or of a
            model directory holding one (named after the directory), or ``NAME=PATH``. The first
            entry is the default tokenizer (answers to ``"default"``) unless ``default`` is listed.
        max_tokenizers: most tokenizers held at once (each costs tens of MB), uploads included.
        max_body_bytes: largest request body, in bytes (413 above it).
        max_tokenizer_body_bytes: largest body of ``POST /tokenizers`` (a tokenizer.json or GGUF), bytes.
        max_batch_size: most sessions in one ``POST /step`` (413 above it).
        max_draft_tokens: most draft tokens of one session in one ``POST /step`` (each adds a
            mask row; 413 above it, before any buffer is allocated).
        max_step_answer_bytes: largest ``POST /step`` answer, in bytes: rows x mask bytes (dense,
            also with block-sparse encoding, whose dense rows are computed first) plus the
            header's fixed part per session; 413 before any session moves or any buffer exists.
        max_session_tokens: most tokens one session may accept in its life (EOS included): its
            token history (Python's list and llguidance's rows) grows with each; 413 above it.
            Also the most ids one ``POST /detokenize`` takes.
        max_tokenize_chars: longest text one ``POST /tokenize`` encodes, in characters (its
            answer has at most one token per UTF-8 byte); 413 above it.
        max_variables: most compile-time variables of one program (413 above it).
        max_variables_bytes: largest total of one program's variables, serialised as JSON, in
            bytes (413 above it).
        max_vocab_size: largest vocabulary an uploaded tokenizer may define, in ids (its largest
            id plus one); 413 before anything is built for it.
        max_sessions: most open sessions; at the cap new sessions are refused with 429 (a live
            request's state is never evicted to make room).
        max_sessions_per_key: most open sessions of one API key (429 past it, for that key only),
            so that one tenant cannot fill ``max_sessions`` for the others. None (the default): a
            quarter of ``max_sessions`` where two or more keys are configured, no quota but
            ``max_sessions`` with one key or none (see :meth:`sessions_per_key`).
        session_ttl_seconds: a session unused this long is closed; its id then answers 410.
        expired_ids_remembered: how many closed-by-expiry session ids still answer 410 (not 404).
        retry_after_seconds: ``Retry-After`` sent with 429 and 503 answers.
        cache_max_entries: most compiled programs kept in the cache (a segmented LRU: programs
            used once cannot evict the ones used again, see ``core/cache.py``).
        cache_max_bytes: most bytes of compiled programs kept in the cache.
        cache_probation_share: the share of the cache's entries that programs used only once
            compete for; programs used again are kept in the rest (1.0: a plain LRU).
        negative_cache_ttl_seconds: seconds a failed compile is remembered: the same input within
            that time is refused at once from memory, without compiling (0 disables).
        negative_cache_max_entries: most failed compiles remembered.
        compile_workers: threads compiling programs (each builds the matcher and first mask of one
            compile at a time, at ``compile_nice``).
        compile_processes: run the Python half of each compile (schema rewrites, template
            compilation, llguidance's validation) in worker processes, one per compile thread,
            so it never holds the event loop's GIL (``core/workers.py``). False: all on the threads.
        compile_nice: how much lower the compile threads' and workers' OS priority is than the
            event loop's (0 to 19): the cores go to ``/step`` first during a storm of compiles.
        max_pending_compiles: compiles running or queued before new ones get 503.
        max_memory_bytes: the server-wide memory budget, in bytes of the process's resident set:
            above it new work (compiles, sessions, forks, tokenizer uploads) gets 503
            ``memory-exhausted`` with ``Retry-After``. 0, the default: 80 % of the memory the
            process may use (its cgroup's limit, else the machine's RAM).
        max_compile_ms: CPU time one compile may take in a compile worker process, in ms (413 past
            it, and the worker is stopped); see :class:`core.limits.Limits`.
        slow_mask_ms: a program whose first mask (measured by its compile), or any mask or accept
            served inline, takes longer than this, in milliseconds, is "slow": its sessions' work
            then runs in the slow lane, a small thread pool, instead of on the event loop.
        slow_lane_workers: threads of the slow lane (one tenant holds at most all but one while
            another waits).
        slow_lane_probation_calls: a new program's first calls run in the slow lane, timed
            there, before it may run inline (0: none).
        max_connections: most client connections open at once (``service/connections.py``). At
            the cap a new connection takes the place of the oldest one waiting for a request head;
            when every one has a request in flight, it is refused (503). The process's descriptor
            limit is raised to fit it at start (or the cap lowered to fit the limit, with a warning).
        header_timeout_seconds: seconds a request head (request line and headers) may take to
            arrive whole, from the connection's first byte (or its opening); then it is closed.
        body_timeout_seconds: seconds a request body may take to arrive whole after its head
            (408 ``request-timeout`` and the connection closed after).
        keep_alive_seconds: seconds an idle kept-alive connection stays open (uvicorn's
            ``timeout_keep_alive``).
        shutdown_timeout_seconds: on SIGTERM, how long in-flight requests may run before they are
            cancelled and the process exits (uvicorn's ``timeout_graceful_shutdown``).
        mask_threads: threads filling the masks of one ``POST /step``. A batch of 8 or more
            sessions whose masks cost 100 us or more each is filled in parallel; cheaper masks
            are filled in a loop, where threads cost more than they save. 1: always a loop.
            Each program keeps one llguidance parser per thread (the extra ones are built and
            warmed in the background after its compile).
        max_watchers: most event streams (``GET /sessions/{id}/events``) open at once, in total;
            above it a new one gets 429 ``too-many-watchers``.
        max_watchers_per_session: most event streams of one session.
        events_buffer: events kept per watched session for ``Last-Event-ID`` resumes.
        events_resume_seconds: how long a session's events are still kept (and published) after
            its last watcher left, so a dropped connection can resume.
        events_heartbeat_seconds: seconds between ``: ping`` comments on an idle event stream.
        max_source_bytes .. max_grammar_size: the engine limits, see :class:`core.limits.Limits`.
        api_keys: keys accepted in ``Authorization: Bearer <key>`` (see ``service/auth.py``).
            None configured here, in ``api_keys_file`` or in the admin fields: no key needed
            (the loopback quick start); any configured: every request but the open paths needs one.
        api_keys_file: a file of more keys, one per line (``#`` comments, blank lines ignored),
            read at start.
        admin_api_keys: keys that may also make server-wide changes (``POST /tokenizers``). When
            any are configured, other keys get 403 there; when none are, every key may.
        admin_api_keys_file: a file of admin keys, like ``api_keys_file``.
        public_health_and_metrics: ``/healthz``, ``/readyz`` and ``/metrics`` answer without a key
            (probes and Prometheus scrapes need no secret); off: they need one too.
        allow_open: serve without API keys on an address other than loopback. Off (the default),
            ``guidance-server`` refuses to start there without keys: an open API on a network is
            a decision, never a default (the image binds 0.0.0.0).
    """

    model_config = SettingsConfigDict(
        env_prefix="GUIDANCE_SERVER_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: LogLevel = "info"
    access_log: bool = False

    tokenizers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["default"], min_length=1)
    max_tokenizers: int = Field(default=8, ge=1)

    max_body_bytes: int = Field(default=8 * _MIB, ge=1)
    max_tokenizer_body_bytes: int = Field(default=64 * _MIB, ge=1)

    max_sessions: int = Field(default=10_000, ge=1)
    max_sessions_per_key: int | None = Field(default=None, ge=1)
    max_batch_size: int = Field(default=1024, ge=1)
    max_draft_tokens: int = Field(default=16, ge=0)
    max_step_answer_bytes: int = Field(default=64 * _MIB, ge=1)
    max_session_tokens: int = Field(default=131_072, ge=1)
    max_tokenize_chars: int = Field(default=_MIB, ge=1)
    max_variables: int = Field(default=1000, ge=0)
    max_variables_bytes: int = Field(default=_MIB, ge=1)
    max_vocab_size: int = Field(default=524_288, ge=1)
    session_ttl_seconds: float = Field(default=600.0, gt=0)
    expired_ids_remembered: int = Field(default=100_000, ge=0)
    retry_after_seconds: int = Field(default=1, ge=0)

    cache_max_entries: int = Field(default=256, ge=1)
    cache_max_bytes: int = Field(default=256 * _MIB, ge=1)
    cache_probation_share: float = Field(default=0.2, gt=0, le=1)
    negative_cache_ttl_seconds: float = Field(default=60.0, ge=0)
    negative_cache_max_entries: int = Field(default=1024, ge=0)
    compile_workers: int = Field(default=2, ge=1)
    compile_processes: bool = True
    compile_nice: int = Field(default=10, ge=0, le=19)
    max_pending_compiles: int = Field(default=64, ge=1)
    max_memory_bytes: int = Field(default=0, ge=0)
    mask_threads: int = Field(default=2, ge=1)
    slow_mask_ms: float = Field(default=5.0, gt=0)
    slow_lane_workers: int = Field(default=4, ge=1)
    slow_lane_probation_calls: int = Field(default=4, ge=0)
    shutdown_timeout_seconds: int = Field(default=10, ge=1)
    max_connections: int = Field(default=2048, ge=1)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=60.0, gt=0)
    keep_alive_seconds: int = Field(default=5, ge=1)
    max_watchers: int = Field(default=256, ge=0)
    max_watchers_per_session: int = Field(default=8, ge=0)
    events_buffer: int = Field(default=256, ge=1)
    events_resume_seconds: float = Field(default=30.0, ge=0)
    events_heartbeat_seconds: float = Field(default=15.0, gt=0)

    # Engine limits (core.limits.Limits): same names, same defaults.
    max_source_bytes: int = Field(default=Limits.max_source_bytes, ge=1)
    max_nesting_depth: int = Field(default=Limits.max_nesting_depth, ge=1)
    max_derivation_depth: int = Field(default=Limits.max_derivation_depth, ge=1)
    max_repeat: int = Field(default=Limits.max_repeat, ge=1)
    max_choices: int = Field(default=Limits.max_choices, ge=1)
    max_tokens_per_accept: int = Field(default=Limits.max_tokens_per_accept, ge=1)
    max_expansion: int = Field(default=Limits.max_expansion, ge=1)
    max_pattern_properties: int = Field(default=Limits.max_pattern_properties, ge=1)
    max_first_mask_ms: int = Field(default=Limits.max_first_mask_ms, ge=1)
    max_compile_ms: int = Field(default=Limits.max_compile_ms, ge=1)
    max_mask_ms: int = Field(default=Limits.max_mask_ms, ge=1)
    max_items_in_row: int = Field(default=Limits.max_items_in_row, ge=1)
    initial_lexer_fuel: int = Field(default=Limits.initial_lexer_fuel, ge=1)
    step_lexer_fuel: int = Field(default=Limits.step_lexer_fuel, ge=1)
    step_max_items: int = Field(default=Limits.step_max_items, ge=1)
    max_lexer_states: int = Field(default=Limits.max_lexer_states, ge=1)
    max_lexer_bytes: int = Field(default=Limits.max_lexer_bytes, ge=1)
    max_grammar_size: int = Field(default=Limits.max_grammar_size, ge=1)

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    api_keys_file: Path | None = None
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    admin_api_keys_file: Path | None = None
    public_health_and_metrics: bool = True
    allow_open: bool = False

    @field_validator("tokenizers", "api_keys", "admin_api_keys", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("api_keys", "admin_api_keys")
    @classmethod
    def _check_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for i, key in enumerate(keys, start=1):
            if not API_KEY_PATTERN.fullmatch(key.get_secret_value()):
                raise ValueError(f"key {i} is not a valid API key: use {API_KEY_RULE}")
        return keys

    def sessions_per_key(self, keys: int) -> int | None:
        """The quota of open sessions per key on a server with ``keys`` keys configured (None: none)."""
        if self.max_sessions_per_key is not None:
            return self.max_sessions_per_key
        return max(self.max_sessions // 4, 1) if keys >= 2 else None

    def limits(self) -> Limits:
        """The engine limits these settings describe."""
        # Limits fields without a setting of the same name (the max_rewrite_* bounds) keep their defaults.
        names = [name for name in Limits.__dataclass_fields__ if name in type(self).model_fields]
        return Limits(**{name: getattr(self, name) for name in names})

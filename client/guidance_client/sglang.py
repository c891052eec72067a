"""SGLang: a grammar backend whose grammars live on the constraint server.

Installed with this package, :func:`register` runs in every SGLang process through the entry-point
group ``sglang.srt.plugins`` (``python -m sglang.launch_server`` loads plugins before it parses its
arguments, and its scheduler processes load them too). It registers the backend under
:data:`BACKEND_NAME` with ``register_grammar_backend`` and adds the name to the
``--grammar-backend`` choices, so no patch is needed::

    python -m sglang.launch_server --model-path ... --grammar-backend guidance-server

(``SGLANG_PLUGINS``, when set, must list ``guidance``, the entry point's name.) In a program that
builds SGLang's ``Engine`` itself, call :func:`register` first. Where the server is:
:mod:`guidance_client.serving` (``GUIDANCE_CLIENT_URL`` ...).

Requests keep SGLang's own fields, with SGLang's meaning: ``json_schema`` (``"$$ANY$$"``,
SGLang's any-JSON, is the schema ``{}``), ``regex``, and ``ebnf``: a GBNF grammar (the EBNF of
SGLang's default backend) or a Lark one, sent as the server's ``ebnf`` kind, which tells them apart.
``structural_tag`` (its JSON text, the older ``structures`` + ``triggers`` form or the newer
``format``) is sent as the server's ``structural_tag`` kind and compiled as such.
A constraint the server refuses becomes SGLang's invalid grammar, with the server's detail, and
SGLang aborts the request before it runs. SGLang caches invalid grammars too, so a server that
cannot be reached at that moment gives a grammar compiled at its first step instead.

**Alignment.** SGLang builds the backend with the model's tokenizer, vocabulary size and end
tokens; the backend aligns with them there: the tokenizer is registered with the server by content
and the server compares the model with it (the logits width, the end tokens: SGLang's
``eos_token_ids`` and the tokenizer's EOS, and a sample of token bytes). A difference raises
:class:`~guidance_client.errors.VocabularyMismatch`, so SGLang does not start. With
``GUIDANCE_CLIENT_TOKENIZER`` set, that server tokenizer is checked instead. Constraints compile
against the aligned tokenizer (SGLang's requests name none). A server unreachable at start is
aligned with when the first constraint needs it.

A decoding step costs one ``POST /step`` for the whole batch: SGLang fills the batch's int32
vocabulary mask (the wire's layout: bit set = allowed) through
:meth:`GuidanceGrammar.fill_vocab_mask_batched`, which sends every grammar's tokens accepted since
the last step and writes every row. ``accept_token`` sends nothing: the token is checked against
the grammar's last mask (a refused one raises ``ValueError``, which makes SGLang abort the request)
and kept for the next step. Sessions open at a grammar's first step, in that same call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sglang.srt.arg_groups.choices import GRAMMAR_BACKEND_CHOICES, add_grammar_backend_choices
from sglang.srt.constrained.base_grammar_backend import (
    BaseGrammarBackend,
    BaseGrammarObject,
    GrammarRow,
    InvalidGrammarObject,
    register_grammar_backend,
)

from guidance_client._sync.client import GrammarBatch, RemoteGrammar
from guidance_client.errors import GuidanceClientError, RemoteError, VocabularyMismatch
from guidance_client.protocol import ProgramInfo
from guidance_client.serving import Alignment, ServingConfig, model_vocabulary
from guidance_client.torch_masks import allow_only, unpack

__all__ = ["BACKEND_NAME", "GuidanceBackend", "GuidanceGrammar", "register"]

log = logging.getLogger(__name__)

BACKEND_NAME = "guidance-server"
"""The ``--grammar-backend`` value of this backend."""

_ANY_JSON = "$$ANY$$"  # SGLang's key for "any JSON value" (response_format json_object)


def register(name: str = BACKEND_NAME) -> None:
    """Register the backend with SGLang under ``name`` and allow it as ``--grammar-backend``."""
    register_grammar_backend(name, GuidanceBackend)
    if name not in GRAMMAR_BACKEND_CHOICES:
        add_grammar_backend_choices([name])


class GuidanceGrammar(BaseGrammarObject):
    """One request's grammar: a server-side session, opened at the grammar's first step.

    The objects the backend caches (one per constraint) hold the compiled program only;
    :meth:`copy` gives each request its own.

    Args:
        backend: the backend (its client and the model's EOS ids).
        spec: the compile body.
        program: the compiled program (None: the server could not be reached when SGLang asked
            for the grammar; it is compiled when the session opens).
    """

    def __init__(self, backend: GuidanceBackend, spec: dict[str, Any], program: ProgramInfo | None) -> None:
        super().__init__()
        self.backend = backend
        self.spec = spec
        self.program = program
        self.remote: RemoteGrammar | None = None
        self.pending: list[int] = []  # accepted by SGLang, not yet sent
        self.allowed: NDArray[np.int32] | None = None  # the last mask, while no token followed it
        self.failed: str | None = None
        self._terminated = False

    # -- the request's state

    def accept_token(self, token: int) -> None:
        """Take ``token`` for the next step; ``ValueError`` if the last mask did not allow it."""
        if self._terminated:
            return
        if self.failed is not None:
            raise ValueError(f"guidance constraint failed: {self.failed}")
        allowed = self.allowed
        if allowed is not None and not (0 <= token < allowed.shape[0] * 32 and _bit(allowed, token)):
            raise ValueError(f"token {token} is not allowed by the guidance constraint")
        self.pending.append(int(token))
        self.allowed = None
        if token in self.backend.eos_token_ids:
            # The masks allow EOS only where the constraint may end: it has ended.
            self._terminated = True

    def rollback(self, k: int) -> None:
        """Undo the last ``k`` tokens (the unsent ones locally, the rest on the server)."""
        if k <= 0:
            return
        self._terminated = False
        self.allowed = None
        local = min(k, len(self.pending))
        del self.pending[len(self.pending) - local :]
        if k > local:
            if self.remote is None:
                raise ValueError(f"cannot roll back {k} tokens: only {local} were accepted")
            self.remote.rollback(k - local)

    def is_terminated(self) -> bool:
        """True once the constraint accepted EOS."""
        return self._terminated

    def copy(self) -> GuidanceGrammar:
        """A fresh grammar on the same program, for a new request."""
        return GuidanceGrammar(self.backend, self.spec, self.program)

    def try_jump_forward(self, tokenizer: Any) -> None:
        """No jump-forward (the server's ``forced_tokens`` are not used here)."""
        return None

    # -- the batch's mask

    def allocate_vocab_mask(self, vocab_size: int, batch_size: int, device: Any) -> torch.Tensor:
        """``[batch, ceil(vocab/32)]`` int32, all allowed (rows SGLang leaves out stay so), on the CPU."""
        return torch.full((batch_size, -(-vocab_size // 32)), -1, dtype=torch.int32)

    def fill_vocab_mask(self, vocab_mask: torch.Tensor, idx: int) -> None:
        """Row ``idx``: this grammar's mask (one step for this grammar alone)."""
        self.fill_vocab_mask_batched([GrammarRow(idx, self)], vocab_mask)

    @staticmethod
    def fill_vocab_mask_batched(entries: list[GrammarRow], vocab_mask: torch.Tensor) -> None:
        """Every listed row, in one ``POST /step`` for all of the batch's grammars."""
        grammars: list[GuidanceGrammar] = []
        rows: list[int] = []
        others = []
        for entry in entries:
            if isinstance(entry.grammar, GuidanceGrammar):
                grammars.append(entry.grammar)
                rows.append(entry.row)
            else:
                others.append(entry)
        if others:
            BaseGrammarObject.fill_vocab_mask_batched(others, vocab_mask)
        if grammars:
            grammars[0].backend.step(grammars, rows, vocab_mask)

    @staticmethod
    def reset_vocab_mask(vocab_mask: torch.Tensor) -> None:
        """All allowed."""
        vocab_mask.fill_(-1)

    @staticmethod
    def move_vocab_mask(vocab_mask: torch.Tensor, device: Any) -> torch.Tensor:
        """The packed mask to the logits' device (16 KB a row for 131,072 ids)."""
        return vocab_mask.to(device, non_blocking=True)

    @staticmethod
    def apply_vocab_mask(logits: torch.Tensor, vocab_mask: torch.Tensor) -> None:
        """``-inf`` wherever the mask does not allow the id (unpacked on the logits' device)."""
        logits.masked_fill_(~unpack(vocab_mask, logits.shape[1], logits.device), float("-inf"))

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
            log.error("guidance constraint abandoned, the request may only stop now: %s", reason)


class GuidanceBackend(BaseGrammarBackend):
    """SGLang's grammar backend over the constraint server.

    Built by SGLang as ``init_func(server_args, tokenizer, vocab_size, eos_token_ids)``.

    Args:
        server_args: SGLang's server arguments (unused).
        tokenizer: the model's tokenizer (registered with the server by content), or None when
            SGLang runs without one (then ``GUIDANCE_CLIENT_TOKENIZER`` names the server's).
        vocab_size: the model's vocabulary size (the logits width).
        eos_token_ids: the model's end tokens (the tokenizer's EOS is one too).

    Raises:
        VocabularyMismatch: the model's vocabulary is not the server tokenizer's.
    """

    def __init__(
        self, server_args: Any, tokenizer: Any, vocab_size: int, eos_token_ids: Iterable[int] | None = None
    ) -> None:
        super().__init__()
        self.config = ServingConfig.load()
        self.vocab_size = int(vocab_size)
        ends = {int(t) for t in eos_token_ids or ()}
        if tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
            ends.add(int(tokenizer.eos_token_id))  # SGLang stops on both
        self.eos_token_ids = frozenset(ends)
        # Compiles run in SGLang's executor threads, steps in its scheduler thread: a client each
        # (the decode-loop connection is not shared between threads).
        self.compiler = self.config.client()
        self.client = self.config.client()
        try:
            vocabulary = model_vocabulary(tokenizer, self.vocab_size, ends)
            self.alignment = Alignment(self.compiler, vocabulary, self.config.tokenizer)  # a mismatch raises here
        except BaseException:
            self.compiler.close()
            self.client.close()
            executor = getattr(self, "executor", None)  # SGLang's compile threads
            if executor is not None:
                executor.shutdown(wait=False)
            raise

    def dispatch_json(self, key_string: str) -> BaseGrammarObject:
        """A JSON schema (its text), or any JSON for SGLang's ``$$ANY$$``."""
        return self._compile({"json_schema": {} if key_string == _ANY_JSON else key_string})

    def dispatch_regex(self, key_string: str) -> BaseGrammarObject:
        """A regular expression."""
        return self._compile({"regex": key_string})

    def dispatch_ebnf(self, key_string: str) -> BaseGrammarObject:
        """SGLang's ``ebnf``: GBNF or Lark (the server's ``ebnf`` kind tells them apart)."""
        return self._compile({"ebnf": key_string})

    def dispatch_structural_tag(self, key_string: str) -> BaseGrammarObject:
        """A structural tag (its JSON text), in either of xgrammar's forms."""
        return self._compile({"structural_tag": key_string})

    def _compile(self, spec: dict[str, Any]) -> BaseGrammarObject:
        program = None
        try:
            spec = self.alignment.spec(spec)
            program = self.compiler.compile_spec(spec)
        except VocabularyMismatch as e:
            return InvalidGrammarObject(str(e))
        except RemoteError as e:
            if e.status < 500:  # the constraint itself is refused
                return InvalidGrammarObject(f"{e.code}: {e.detail}")
        except GuidanceClientError as e:
            log.warning("guidance constraint server at %s unreachable, compiling later: %s", self.config.url, e)
        # SGLang caches what this returns, an invalid grammar too: a server that is down or
        # overloaded now gives a grammar that compiles at its first step, not a lasting refusal.
        return GuidanceGrammar(self, spec, program)

    def step(self, grammars: Sequence[GuidanceGrammar], rows: Sequence[int], vocab_mask: torch.Tensor) -> None:
        """One ``POST /step``: send each grammar's pending tokens, write its mask in its row.

        A grammar that cannot be served (its session unopenable, its tokens refused, the server
        unreachable after the client's retries) gets a row allowing the model's EOS ids only.
        """
        for g in grammars:
            if g.remote is None and g.failed is None:
                try:
                    g.spec = self.alignment.spec(g.spec)  # the spec's tokenizer, if compiling failed before
                    g.remote = RemoteGrammar.open(self.client, g.spec)
                except VocabularyMismatch as e:
                    g._fail(str(e))
                except GuidanceClientError as e:
                    g._fail(f"opening a session: {e}")
        live = [k for k, g in enumerate(grammars) if g.failed is None]
        words = vocab_mask.shape[1]
        block = np.zeros((len(live), words), dtype=np.int32)
        if live:
            remotes = [r for r in (grammars[k].remote for k in live) if r is not None]  # all opened
            batch = GrammarBatch(self.client, remotes, forced_tokens=False)
            try:
                statuses = batch.step([grammars[k].pending for k in live], block)
            except (GuidanceClientError, ValueError) as e:
                for k in live:
                    grammars[k]._fail(f"step failed: {e}")
            else:
                for k, status in zip(live, statuses):
                    g = grammars[k]
                    if status.status == "ok":
                        g.pending = []
                    elif status.status == "rejected":
                        g._fail(f"the constraint refused token {g.pending[status.index or 0]}")
                    else:
                        g._fail(f"session error: {status.error}")
        out = np.zeros((len(grammars), words), dtype=np.int32)
        for j, k in enumerate(live):
            if grammars[k].failed is None:
                out[k] = block[j]
                grammars[k].allowed = block[j]
        for k, g in enumerate(grammars):
            if g.failed is not None:
                allow_only(out[k], self.eos_token_ids)
        vocab_mask[list(rows)] = torch.from_numpy(out).to(vocab_mask.device)


def _bit(words: NDArray[np.int32], token: int) -> bool:
    return bool((int(words[token // 32]) >> (token % 32)) & 1)

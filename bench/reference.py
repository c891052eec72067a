"""Reference engines for the in-process benchmark: xgrammar and outlines-core, when installed.

Both are optional (``pip install -e '.[bench]'``; xgrammar needs torch, see docs/benchmarks.md)
and are skipped with a note when they do not import. Each engine gets the same constraint as
ours (the JSON schema compact, the template as an equivalent regex) and walks the same token ids:
a mask at the start, then per token accept + mask. Two differences from llguidance are inherent
to their APIs and cost them nothing measurable: after EOS, xgrammar refuses to compute a mask
(so none is computed), and outlines-core has no EOS transition (EOS is checked against the mask
and ``is_finished()`` instead of being consumed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from bench.cases import CITIES, ORDER_SCHEMA, PHONE_REGEX, Case
from core import Tokenizer

__all__ = ["ENGINES", "TEMPLATE_REGEX", "Engine", "Prepared", "load_engines"]

# The PERSON_TEMPLATE of bench/cases.py as one regex (the engines have no template language).
TEMPLATE_REGEX = r"Name: [A-Z][a-z]+\nAge: [0-9]{1,3}\nCity: [^\n]*\nLikes: (tea|coffee|water)\."

_META = set(".^$*+?()[]{}|\\/")


def _literal(text: str) -> str:
    return "".join("\\" + c if c in _META else c for c in text)


def _regex_for(case: Case) -> str:
    if case.name == "template":
        return TEMPLATE_REGEX
    if case.name == "regex":
        return PHONE_REGEX
    if case.name == "choice":
        return "(" + "|".join(_literal(c) for c in CITIES) + ")"
    raise KeyError(case.name)


class Prepared:
    """A compiled constraint of one engine, ready to walk token sequences."""

    def __init__(self, walk: Callable[[list[int], np.ndarray], None], compile_ms: float) -> None:
        self.walk = walk
        self.compile_ms = compile_ms


class Engine:
    """One reference engine bound to a tokenizer; ``prepare(case)`` compiles a case."""

    name = ""

    def __init__(self, tok: Tokenizer) -> None:
        self.eos = tok.eos_token_id

    def prepare(self, case: Case, quick: bool) -> Prepared | str:
        """The compiled case, or a short reason it is skipped."""
        raise NotImplementedError


class XGrammar(Engine):
    name = "xgrammar"

    def __init__(self, tok: Tokenizer) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        self.eos = tok.eos_token_id
        # Raw token bytes; control ids as "" so xgrammar treats them as special (it detects none
        # of tekken's on its own).
        vocab = [b"" if tok.is_special(i) else tok.token_bytes(i) for i in range(tok.vocab_size)]
        self.info = xgr.TokenizerInfo(
            vocab,
            xgr.VocabType.RAW,
            vocab_size=tok.vocab_size,
            stop_token_ids=[tok.eos_token_id],
            add_prefix_space=False,
        )
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=2, cache_enabled=False)

    def prepare(self, case: Case, quick: bool) -> Prepared | str:
        start = time.perf_counter()
        if case.name == "json":
            compiled = self.compiler.compile_json_schema(
                json.dumps(ORDER_SCHEMA), any_whitespace=False, separators=(",", ":"), strict_mode=True
            )
        else:
            compiled = self.compiler.compile_regex(_regex_for(case))
        compile_ms = (time.perf_counter() - start) * 1000
        matcher_cls, eos = self.xgr.GrammarMatcher, self.eos

        def walk(seq: list[int], bitmask: np.ndarray) -> None:
            m = matcher_cls(compiled)
            m.fill_next_token_bitmask(bitmask, 0)
            for t in seq:
                if not m.accept_token(t):
                    raise AssertionError("walk rejected by xgrammar")
                if t != eos:
                    m.fill_next_token_bitmask(bitmask, 0)

        return Prepared(walk, compile_ms)


class OutlinesCore(Engine):
    name = "outlines-core"

    def __init__(self, tok: Tokenizer) -> None:
        from outlines_core import Guide, Index, Vocabulary  # type: ignore[import-untyped,unused-ignore]

        self.Guide, self.Index = Guide, Index
        self.eos = tok.eos_token_id
        by_bytes: dict[bytes, list[int]] = {}
        for i in range(tok.vocab_size):
            if not tok.is_special(i):
                by_bytes.setdefault(tok.token_bytes(i), []).append(i)
        self.vocabulary = Vocabulary(tok.eos_token_id, by_bytes)

    def prepare(self, case: Case, quick: bool) -> Prepared | str:
        if case.name == "json":
            if quick:
                return "skipped in --quick (JSON compile ~13 s)"
            from outlines_core.json_schema import build_regex_from_schema  # type: ignore[import-untyped,unused-ignore]

            regex = build_regex_from_schema(json.dumps(ORDER_SCHEMA), whitespace_pattern="")
        else:
            regex = _regex_for(case)
        start = time.perf_counter()
        index = self.Index(regex, self.vocabulary)
        compile_ms = (time.perf_counter() - start) * 1000
        guide_cls, eos = self.Guide, self.eos
        eos_word, eos_bit = eos // 32, np.int32(1 << (eos % 32))

        def walk(seq: list[int], bitmask: np.ndarray) -> None:
            g = guide_cls(index)
            addr, words = bitmask.ctypes.data, bitmask.shape[1]
            g.write_mask_into(addr, words, 4)
            for t in seq:
                if t == eos:
                    if not (bitmask[0, eos_word] & eos_bit) or not g.is_finished():
                        raise AssertionError("EOS refused by outlines-core")
                    continue
                g.advance(t, return_tokens=False)  # raises on a refused token
                g.write_mask_into(addr, words, 4)

        return Prepared(walk, compile_ms)


ENGINES: tuple[tuple[str, type[Engine]], ...] = (("xgrammar", XGrammar), ("outlines-core", OutlinesCore))


def load_engines(tok: Tokenizer) -> tuple[list[Engine], dict[str, str]]:
    """The reference engines that import here, and a note for each that does not."""
    engines: list[Engine] = []
    notes: dict[str, str] = {}
    for name, cls in ENGINES:
        try:
            engines.append(cls(tok))
        except ImportError as e:
            notes[name] = f"not installed ({e.name or e})"
        except Exception as e:  # noqa: BLE001 - a broken optional engine is a note, not a failure
            notes[name] = f"unusable: {type(e).__name__}: {str(e)[:120]}"
    return engines, notes

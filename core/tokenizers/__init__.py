"""Tokenizers: the vocabularies masks are defined against.

A :class:`Tokenizer` pairs an encoder (text -> ids) with the ``llguidance.LLTokenizer`` that the
matchers use, built once per tokenizer and shared. Three sources, one module each:

* the embedded default, Mistral **tekken** (:mod:`~core.tokenizers.tekken`), loaded once per
  process by :func:`load_default_tokenizer`;
* a Hugging Face ``tokenizer.json`` (:mod:`~core.tokenizers.hf`, :meth:`Tokenizer.from_hf_json`),
  parsed and encoded by llguidance itself, with the model's configuration files when given;
* a GGUF file (:mod:`~core.tokenizers.gguf`, :meth:`Tokenizer.from_gguf`), a model or a
  vocab-only one, its ``tokenizer.ggml.*`` metadata read as llama.cpp reads it;
* a small explicit vocabulary with a greedy longest-match encoder
  (:mod:`~core.tokenizers.vocabulary`, :meth:`Tokenizer.from_vocabulary`), for fast unit tests,
  and the validation tokenizers of compile workers (:func:`validation_tokenizer`).

Every tokenizer carries a set of end tokens (:mod:`~core.tokenizers.ends`), and a digest of its
vocabulary and settings. :mod:`~core.tokenizers.alignment` compares it with a model's own view.

:mod:`~core.tokenizers.load` resolves names and paths (:func:`load_tokenizer`).
"""

from core.tokenizers.alignment import vocabulary_differences
from core.tokenizers.ends import BOS_CANDIDATES, EOS_CANDIDATES
from core.tokenizers.load import DEFAULT_TOKENIZER_NAMES, load_default_tokenizer, load_tokenizer
from core.tokenizers.tokenizer import GGUF_MAGIC, Tokenizer
from core.tokenizers.vocabulary import validation_tokenizer

__all__ = [
    "BOS_CANDIDATES",
    "DEFAULT_TOKENIZER_NAMES",
    "EOS_CANDIDATES",
    "GGUF_MAGIC",
    "Tokenizer",
    "load_default_tokenizer",
    "load_tokenizer",
    "validation_tokenizer",
    "vocabulary_differences",
]

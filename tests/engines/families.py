"""Real vocabularies for the engine tests: Llama 3's and Qwen 2's, from llama.cpp's vocab-only GGUF files.

A family's Hugging Face tokenizer is what transformers builds from the GGUF file
(``AutoTokenizer.from_pretrained(dir, gguf_file=...)``), kept on disk beside the vocabularies
(keyed by the transformers version): transformers reads a GGUF's 400,000 strings in some 20 s.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.vocabularies import cache_dir, vocab_path

__all__ = ["FAMILIES", "Family", "hf_tokenizer"]


@dataclass(frozen=True)
class Family:
    """A model family's vocabulary and its end tokens.

    Attributes:
        name: llama.cpp's name of the vocabulary (``ggml-vocab-<name>.gguf``).
        end_tokens: the chat model's end tokens (its generation config's ``eos_token_id``).
        end_of_turn: the end tokens rows are steered to end on, row after row.
        llama_cpp_end_tokens: what llama.cpp finds in the GGUF file: its EOS and EOT.
    """

    name: str
    end_tokens: tuple[int, ...]
    end_of_turn: tuple[int, ...]
    llama_cpp_end_tokens: tuple[int, ...]


FAMILIES = {
    # Llama 3.1 Instruct ends on <|end_of_text|>, <|eom_id|> (the reserved id 128008 of this 3.0
    # vocabulary) and <|eot_id|>; a turn ends on <|eot_id|>.
    "llama-bpe": Family("llama-bpe", (128001, 128008, 128009), (128009,), (128001, 128009)),
    # Qwen 2 Instruct: <|endoftext|> and <|im_end|>.
    "qwen2": Family("qwen2", (151643, 151645), (151645, 151643), (151643, 151645)),
}


def hf_tokenizer(family: str) -> Any:
    """The family's tokenizer as transformers builds it from llama.cpp's GGUF file (cached)."""
    import transformers

    saved = cache_dir() / "hf" / f"transformers-{transformers.__version__}" / family
    if not (saved / "tokenizer.json").is_file():
        path = vocab_path(family)
        tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        saved.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=saved.parent))
        tok.save_pretrained(staged)
        try:
            os.rename(staged, saved)
        except OSError:  # another process saved it first
            shutil.rmtree(staged, ignore_errors=True)
    return transformers.AutoTokenizer.from_pretrained(saved)

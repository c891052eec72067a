"""A vocab-only GGUF from a model file: what the server needs to read a llama.cpp model's vocabulary.

A GGUF model file is its metadata (key-value pairs) followed by its weights, GBs of them. The
server needs the vocabulary only: ``general.architecture`` and the ``tokenizer.ggml.*`` keys
(tokens, token types, merges or scores, the special ids). :func:`vocab_only_gguf` copies those
pairs byte for byte into a new GGUF with no tensors, a few MB, the way llama.cpp's own
``ggml-vocab-*.gguf`` files are made.

:func:`read_metadata` gives any of a file's pairs as stored. The file is memory-mapped and only its
metadata is read. The pairs are located by walking the
GGUF layout here rather than with ``gguf.GGUFReader``, which builds an array per string (some 20 s
for the 410,000 strings of Llama 3's tokens and merges, against a fraction of a second); the
``gguf`` package gives the format's constants and is imported only when this runs.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Sequence

__all__ = ["VOCABULARY_KEYS", "read_metadata", "vocab_only_gguf"]

VOCABULARY_KEYS = ("general.architecture", "tokenizer.ggml.")
"""The keys copied: ``general.architecture`` exactly, and every key under ``tokenizer.ggml.``."""


def read_metadata(
    model_path: str | os.PathLike[str], keys: Sequence[str] | None = VOCABULARY_KEYS
) -> list[tuple[str, bytes]]:
    """The key-value pairs of a GGUF file's metadata whose key is in ``keys``, as stored.

    Args:
        model_path: a little-endian GGUF file, version 2 or 3.
        keys: keys taken; one ending in ``.`` takes every key under it; None: every key.

    Returns:
        ``(key, value)`` in file order, each value its GGUF bytes: the type, then the data.

    Raises:
        ValueError: not a GGUF file this can read.
    """
    import gguf

    sizes = {
        gguf.GGUFValueType.UINT8: 1,
        gguf.GGUFValueType.INT8: 1,
        gguf.GGUFValueType.BOOL: 1,
        gguf.GGUFValueType.UINT16: 2,
        gguf.GGUFValueType.INT16: 2,
        gguf.GGUFValueType.UINT32: 4,
        gguf.GGUFValueType.INT32: 4,
        gguf.GGUFValueType.FLOAT32: 4,
        gguf.GGUFValueType.UINT64: 8,
        gguf.GGUFValueType.INT64: 8,
        gguf.GGUFValueType.FLOAT64: 8,
    }
    string, array = int(gguf.GGUFValueType.STRING), int(gguf.GGUFValueType.ARRAY)

    def wanted(key: str) -> bool:
        return keys is None or any(key.startswith(k) if k.endswith(".") else key == k for k in keys)

    with open(model_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:

        def skip(pos: int, kind: int) -> int:
            if kind == string:
                (length,) = struct.unpack_from("<Q", data, pos)
                return pos + 8 + int(length)
            if kind == array:
                item, count = struct.unpack_from("<IQ", data, pos)
                pos += 12
                if item in (string, array):
                    for _ in range(count):
                        pos = skip(pos, item)
                    return pos
                return pos + sizes[gguf.GGUFValueType(item)] * int(count)
            return pos + sizes[gguf.GGUFValueType(kind)]

        try:
            magic, version, _tensors, n_kv = struct.unpack_from("<IIQQ", data, 0)
            if magic != gguf.GGUF_MAGIC or version not in (2, 3):
                raise ValueError("not a little-endian GGUF file of version 2 or 3")
            out: list[tuple[str, bytes]] = []
            pos = 24
            for _ in range(n_kv):
                (length,) = struct.unpack_from("<Q", data, pos)
                key = bytes(data[pos + 8 : pos + 8 + length]).decode("utf-8")
                start = pos + 8 + length
                (kind,) = struct.unpack_from("<I", data, start)
                pos = skip(start + 4, kind)
                if wanted(key):
                    out.append((key, bytes(data[start:pos])))
        except (struct.error, KeyError, ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{os.fspath(model_path)!r}: cannot read its GGUF metadata ({e})") from e
    return out


def vocab_only_gguf(model_path: str | os.PathLike[str]) -> bytes:
    """The vocab-only GGUF of a GGUF model file (little-endian, version 2 or 3).

    Raises:
        ValueError: the file is not a GGUF file this can read, or has no ``tokenizer.ggml.tokens``.
    """
    import gguf

    pairs = read_metadata(model_path)
    if "tokenizer.ggml.tokens" not in {key for key, _ in pairs}:
        raise ValueError(f"{os.fspath(model_path)!r} has no vocabulary (no tokenizer.ggml.tokens)")
    out = [struct.pack("<IIQQ", gguf.GGUF_MAGIC, 3, 0, len(pairs))]
    for key, value in pairs:
        name = key.encode("utf-8")
        out += [struct.pack("<Q", len(name)), name, value]
    return b"".join(out)

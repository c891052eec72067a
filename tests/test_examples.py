"""The README's and the docs' command examples run as written, on the files shipped in ``examples/``.

``guidance-server`` in a command is this interpreter's ``python -m service``: the same program the
installed script runs, from the checkout under test.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command`` in bash (its quoting, e.g. ``$'...'``), with ``guidance-server`` meaning this checkout."""
    server = f"{shlex.quote(sys.executable)} -m service"
    script = re.sub(r"^(?:\.venv-server/bin/)?guidance-server\b", lambda _: server, command)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def _code_blocks(markdown: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", markdown, flags=re.DOTALL)


def test_the_readmes_check_example_accepts_its_text() -> None:
    lines = [
        line
        for block in _code_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
        for line in block.splitlines()
        if re.match(r"\S*guidance-server check ", line)
    ]
    assert len(lines) == 1, lines
    result = _run(lines[0], ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('accepted: "Name: Ada\\nAge: 36\\nFruit: banana"'), result.stdout


def _transcript() -> str:
    """The shell sessions of the check example in ``docs/playground.md`` (its files, then its runs)."""
    blocks = [b for b in _code_blocks((ROOT / "docs" / "playground.md").read_text(encoding="utf-8")) if b.startswith("$ ")]
    assert len(blocks) == 2 and blocks[0].startswith("$ cat person.hbs"), blocks
    return "".join(blocks)


def test_the_check_transcript_in_the_docs_is_what_the_checker_prints() -> None:
    # The transcript is split into its commands, each followed by what it printed.
    steps = re.findall(r"^\$ (.*)\n((?:(?!\$ ).*\n)*)", _transcript(), flags=re.MULTILINE)
    assert len(steps) >= 8
    status = None
    for command, expected in steps:
        if command == "echo $?":
            assert f"{status}\n" == expected, f"exit status of the command before: {status}, documented: {expected}"
            continue
        if command.startswith("cat "):
            assert (EXAMPLES / command[4:]).read_text(encoding="utf-8") == expected, command
            continue
        result = _run(command, EXAMPLES)
        status = result.returncode
        assert result.stdout + result.stderr == expected, command

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
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import start, stop

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


def _setup_commands() -> tuple[str, str]:
    """The README's two set-up commands: the server's, then the tests'."""
    blocks = _code_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    server = [b.strip() for b in blocks if b.strip().endswith("/bin/guidance-server")]
    tests = [b.strip() for b in blocks if b.strip().endswith("/bin/python -m pytest")]
    assert len(server) == 1 and len(tests) == 1, (server, tests)
    return server[0], tests[0]


def test_ci_runs_the_readmes_test_command_as_written() -> None:
    _, tests = _setup_commands()
    assert tests in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_the_two_set_up_commands_use_separate_environments() -> None:
    """The tests' editable install must never replace the files a running server serves."""
    server, tests = _setup_commands()
    venv = re.compile(r"python3 -m venv (\S+) ")
    server_venv, tests_venv = venv.match(server), venv.match(tests)
    assert server_venv and tests_venv
    assert server_venv.group(1) != tests_venv.group(1)
    assert f"{server_venv.group(1)}/bin/pip install . " in server and " -e " not in server
    used = [set(re.findall(r"(?:^| )([\w.-]+)/bin/", command)) for command in (server, tests)]
    assert used == [{server_venv.group(1)}, {tests_venv.group(1)}], used


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


def _readme_python_examples() -> dict[str, str]:
    """The README's Python examples that need only a server (not a model), by what they do."""
    blocks = [b for b in _code_blocks((ROOT / "README.md").read_text(encoding="utf-8")) if "127.0.0.1:8000" in b]
    runnable = [b for b in blocks if "import" in b and "transformers" not in b and "llama_cpp" not in b]
    named = {
        "decode": [b for b in runnable if "GrammarBatch(" in b],
        "watch": [b for b in runnable if "client.watch(" in b],
        "tokenizer": [b for b in runnable if "register_tokenizer(" in b],
    }
    assert all(len(found) == 1 for found in named.values()), named
    return {name: found[0] for name, found in named.items()}


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    server = start()
    try:
        yield server.url
    finally:
        stop(server)


def _run_python(code: str, url: str, cwd: Path) -> str:
    code = code.replace("http://127.0.0.1:8000", url)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _open_sessions(url: str) -> int:
    active: int = httpx.get(f"{url}/stats", timeout=10).json()["sessions"]["active"]
    return active


def test_the_readmes_decoding_loop_runs_and_closes_its_sessions(server_url: str, tmp_path: Path) -> None:
    before = _open_sessions(server_url)
    out = _run_python(_readme_python_examples()["decode"], server_url, tmp_path)
    texts = eval(out.strip(), {})  # noqa: S307 - the example prints a list of strings
    assert len(texts) == 4 and all(re.fullmatch(r'\{"n":\d{1,2},"ok":(true|false)\}', t) for t in texts), texts
    assert _open_sessions(server_url) == before


def test_the_readmes_watch_example_sees_the_fields_fill_in(server_url: str, tmp_path: Path) -> None:
    before = _open_sessions(server_url)
    lines = _run_python(_readme_python_examples()["watch"], server_url, tmp_path).splitlines()
    assert lines[-1].startswith("end"), lines
    assert any("'name': 'Ada'" in line for line in lines) and any("'age': '36'" in line for line in lines), lines
    assert _open_sessions(server_url) == before


def test_the_readmes_tokenizer_example_registers_and_compiles(server_url: str, tmp_path: Path) -> None:
    from tests.service.test_api import _tiny_hf_tokenizer_json

    (tmp_path / "tokenizer.json").write_text(_tiny_hf_tokenizer_json(), encoding="utf-8")
    example = _readme_python_examples()["tokenizer"]
    assert _run_python(example, server_url, tmp_path).splitlines() == ["my-model 259 [258] new", "259"]
    assert _run_python(example, server_url, tmp_path).splitlines() == ["my-model 259 [258] already there", "259"]


def _transcript() -> str:
    """The shell sessions of the check example in ``docs/playground.md`` (its files, then its runs)."""
    markdown = (ROOT / "docs" / "playground.md").read_text(encoding="utf-8")
    blocks = [b for b in _code_blocks(markdown) if b.startswith("$ ")]
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

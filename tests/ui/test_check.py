"""``guidance-server check``: constraint files and texts in, verdicts and exit statuses out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core import Tokenizer
from service.check import check_text, main, read_constraint
from service.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]

TEMPLATE = "Name: {{gen 'name' regex='[A-Z][a-z]+'}}\nAge: {{gen 'age' regex='[0-9]{1,3}'}}\n"
SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}},
    "required": ["n", "ok"],
    "additionalProperties": False,
}


@pytest.fixture(autouse=True)
def _tekken_loaded(default_tokenizer: Tokenizer) -> None:
    """The embedded tokenizer, built once for the session (``check`` reuses it in-process)."""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = cli_main(["check", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def test_an_accepted_text_exits_0_and_shows_the_variables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    person = _write(tmp_path, "person.hbs", TEMPLATE)
    status, out, err = _run(capsys, person, "--text", "Name: Ada\nAge: 36")
    assert status == 0, err
    assert out == 'accepted: "Name: Ada\\nAge: 36" (9 tokens, then EOS)\n  variables: {"name": "Ada", "age": "36"}\n'


def test_a_rejected_text_exits_1_with_the_place_the_token_and_the_allowed_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    person = _write(tmp_path, "person.hbs", TEMPLATE)
    status, out, _ = _run(capsys, person, "--text", "Name: Ada\nAge: 1234")
    assert status == 1
    lines = out.splitlines()
    assert lines[0] == 'rejected: "Name: Ada\\nAge: 1234"'
    assert lines[1] == '  at line 2, column 9 (character 18): "4"'
    assert lines[2] == (
        '  token 11 of 11, id 1052 "4" (from character 18): '
        "the constraint is complete before this token: only EOS may follow"
    )
    assert lines[3] == '  allowed at character 18: 1 token, e.g. "<EOS>"'
    assert lines[4] == '  variables: {"name": "Ada", "age": "123"}'


def test_the_first_refused_character_is_found_inside_a_longer_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    person = _write(tmp_path, "person.hbs", TEMPLATE)
    status, out, _ = _run(capsys, person, "--text", "Name: ada\nAge: 36", "--json")
    assert status == 1
    result = json.loads(out)
    # The token " ada" starts at the space (allowed); the lower-case "a" after it is refused.
    assert (result["verdict"], result["token_text"], result["token_offset"]) == ("rejected", " ada", 5)
    assert (result["offset"], result["line"], result["column"]) == (6, 1, 7)
    assert result["allowed"] > 100 and len(result["sample"]) == 8


def test_a_text_that_stops_early_is_incomplete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    person = _write(tmp_path, "person.hbs", TEMPLATE)
    status, out, _ = _run(capsys, person, "--text", "Name: Ada\nAge: ")
    assert status == 1
    assert out.startswith('incomplete: "Name: Ada\\nAge: "\n  at line 2, column 6 (character 15), the end of the text')
    assert "allowed there: 10 tokens" in out  # the ten digits


def test_a_bad_template_exits_2_naming_its_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path, "bad.hbs", "Name: {{gen 'name'}}\nAge: {{gen 'age' regex=}}\n")
    status, out, err = _run(capsys, bad, "--text", "x")
    assert status == 2 and out == ""
    assert err.startswith(f"guidance-server check: {bad}:2:24: template-invalid: ")
    assert "(line 2" not in err  # said once, in front


@pytest.mark.parametrize(
    ("name", "text", "flags", "message"),
    [
        ("s.json", '{"type": "object",', [], "the JSON schema is not valid JSON"),
        ("g.lark", 'start: "a" b\n', [], "g.lark:1:8: grammar-invalid: unknown name"),
        ("r.regex", "a(b\n", [], "grammar-invalid"),
        ("c.choices", "\n\n", [], "choice must be a non-empty list"),
        ("x.unknown", "x", [], "cannot tell the constraint's kind"),
        ("t.hbs", "Hi {{who}}", [], "unknown variable 'who'"),
        ("t.hbs", "Hi", ["--whitespace", "2"], "--whitespace applies to JSON schemas only"),
        ("t.hbs", "Hi", ["--tokenizer", "/nonexistent/tokenizer.json"], "--tokenizer: unknown tokenizer"),
    ],
)
def test_bad_constraints_and_options_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, flags: list[str], message: str
) -> None:
    path = _write(tmp_path, name, text)
    status, out, err = _run(capsys, path, "--text", "a", *flags)
    assert status == 2 and out == ""
    assert message in err, err


def test_variables_come_from_a_json_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = _write(tmp_path, "greet.txt", "Hi {{who}}! {{select 'fruit' options=fruits}}\n")
    good = _write(tmp_path, "vars.json", json.dumps({"who": "{{Bob}}", "fruits": ["apple", "pear"]}))
    status, out, _ = _run(capsys, template, "--vars", good, "--text", "Hi {{Bob}}! pear")
    assert status == 0, out
    assert '"fruit": "pear"' in out
    broken = _write(tmp_path, "broken.json", '{"who": ')
    status, _, err = _run(capsys, template, "--vars", broken, "--text", "x")
    assert status == 2 and "broken.json:1:9: the variables are not valid JSON" in err


def test_jsonl_of_strings_and_objects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = _write(tmp_path, "answer.json", json.dumps(SCHEMA))
    lines = [
        json.dumps({"text": '{"n":1,"ok":true}', "id": 7}),
        json.dumps('{"n":1, "ok":true}'),
        "",
        json.dumps({"text": '{"n":"x"}'}),
    ]
    outputs = _write(tmp_path, "outputs.jsonl", "\n".join(lines) + "\n")
    status, out, _ = _run(capsys, schema, "--jsonl", outputs)
    assert status == 1
    assert f"{outputs}:1: accepted" in out
    assert f"{outputs}:2: rejected" in out and "character 7" in out  # compact JSON: no space
    assert f"{outputs}:4: rejected" in out
    assert out.endswith("1 of 3 accepted\n")
    # The same texts with whitespace allowed: the second one passes.
    status, out, _ = _run(capsys, schema, "--jsonl", outputs, "--whitespace", "1", "--json")
    verdicts = [json.loads(line)["verdict"] for line in out.splitlines()]
    assert (status, verdicts) == (1, ["accepted", "accepted", "rejected"])


def test_a_malformed_jsonl_line_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    regex = _write(tmp_path, "n.regex", "[0-9]+\n")
    outputs = _write(tmp_path, "o.jsonl", '"12"\n{"txt": "3"}\n')
    status, out, err = _run(capsys, regex, "--jsonl", outputs)
    assert status == 2
    assert f"{outputs}:1: accepted" in out
    assert f'{outputs}:2: expected a JSON string or an object with a string "text"' in err


@pytest.mark.parametrize(
    ("name", "source", "good", "bad"),
    [
        ("phone.regex", "\\+[0-9]{1,3} [0-9]{3}-[0-9]{4}\n", "+1 555-0100", "+1 555-010"),
        ("sum.lark", 'start: NUMBER ("+" NUMBER)*\nNUMBER: /[0-9]+/\n', "1+22+333", "1++2"),
        ("answer.choices", "yes\nno\nmaybe\n", "maybe", "nope"),
        ("plain.template", "OK: {{gen 'x' regex='[a-z]+'}}", "OK: fine", "OK: Fine"),
    ],
)
def test_each_kind_by_its_suffix_or_kind_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, source: str, good: str, bad: str
) -> None:
    path = _write(tmp_path, name, source)
    flags = ["--kind", "template"] if name.endswith(".template") else []
    status, out, _ = _run(capsys, path, *flags, "--text", good, "--text", bad, "--json")
    assert status == 1
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["verdict"] for r in results] == ["accepted", results[1]["verdict"]]
    assert results[1]["verdict"] in ("rejected", "incomplete")
    assert [r["input"] for r in results] == ["--text 1", "--text 2"]


def test_a_final_newline_of_a_template_or_regex_file_is_not_part_of_the_constraint(tmp_path: Path) -> None:
    assert read_constraint(_write(tmp_path, "a.hbs", "Hi\n")) == ("template", "Hi")
    assert read_constraint(_write(tmp_path, "b.hbs", "Hi\n\n")) == ("template", "Hi\n")
    assert read_constraint(_write(tmp_path, "c.regex", "a+\r\n")) == ("regex", "a+")
    assert read_constraint(_write(tmp_path, "d.choices", "a\r\n\nb\n")) == ("choice", ["a", "b"])
    assert read_constraint(_write(tmp_path, "e.json", '{"type": "string"}'), "json_schema") == (
        "json_schema",
        {"type": "string"},
    )


def test_long_texts_are_fed_in_chunks_under_the_accept_limit(default_tokenizer: Tokenizer) -> None:
    from core import GuidanceBackend, Limits

    backend = GuidanceBackend(default_tokenizer, limits=Limits(max_tokens_per_accept=16))
    program = backend.compile_regex("(ab )*")
    text = "ab " * 200
    assert check_text(program, text).verdict == "accepted"
    result = check_text(program, text + "x")
    assert (result.verdict, result.offset, result.accepted_tokens) == ("rejected", 600, result.tokens - 1)


def test_a_tokenizer_json_can_replace_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hf = pytest.importorskip("tokenizers")
    tok = hf.Tokenizer(hf.models.BPE())
    tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = hf.decoders.ByteLevel()
    trainer = hf.trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["</s>"],
        initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["Name: Ada, Age: 36"] * 10, trainer)
    tok.save(str(tmp_path / "tokenizer.json"))
    person = _write(tmp_path, "person.hbs", TEMPLATE)
    status, out, err = _run(
        capsys, person, "--tokenizer", tmp_path / "tokenizer.json", "--text", "Name: Bob\nAge: 7", "--json"
    )
    assert status == 0, err
    result = json.loads(out)
    assert result["variables"] == {"name": "Bob", "age": "7"}
    assert result["tokens"] > 9  # another vocabulary than tekken's


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    regex = _write(tmp_path, "n.regex", "[0-9]+")
    with pytest.raises(SystemExit) as exc:
        main([str(regex)])  # no text
    assert exc.value.code == 2
    assert "give a text" in capsys.readouterr().err


def test_the_console_command_runs_check_with_its_exit_statuses(tmp_path: Path) -> None:
    person = _write(tmp_path, "person.hbs", TEMPLATE)
    texts = _write(tmp_path, "texts.jsonl", '"Name: Ada\\nAge: 36"\n{"text": "Name: Ada\\nAge: x"}\n')

    def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service", "check", *map(str, argv)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    ok = run(person, "--text", "Name: Ada\nAge: 36")
    assert (ok.returncode, ok.stderr) == (0, "")
    mixed = run(person, "--jsonl", texts)
    assert mixed.returncode == 1
    assert mixed.stdout.splitlines()[-1] == "1 of 2 accepted"
    assert run(tmp_path / "missing.hbs", "--text", "x").returncode == 2


def test_any_kind_is_checked_by_name_with_its_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    tools = _write(tmp_path, "tools.json", json.dumps([tool]))
    call = '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
    options = ["--option", "tool_format=hermes", "--option", "tool_choice=required"]
    status, out, err = _run(capsys, tools, "--kind", "tools", *options, "--text", call)
    assert status == 0, err
    assert '"tool_calls": [{"name": "f", "arguments": {}}]' in out
    status, _, err = _run(capsys, tools, "--kind", "tools", *options, "--text", "no call")
    assert status == 1
    status, _, err = _run(capsys, tools, "--kind", "tools", "--text", call)
    assert status == 2 and "grammar-invalid: tools need a tool_format" in err
    status, _, err = _run(capsys, tools, "--kind", "tools", "--option", "tool_format", "--text", call)
    assert status == 2 and "give NAME=VALUE" in err

"""The kinds registry (``core.kinds.KINDS``): every place that knows the kinds knows them from it.

A kind added to the registry gets its compile body field, its options in the HTTP schema, its
``guidance-server check`` suffix and its compile dispatch, with nothing else edited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import core.spec
from bench.inprocess import spec_of
from core import GrammarError, GuidanceBackend, Tokenizer
from core.compiler import CompiledSpec, compile_regex
from core.kinds import KINDS, Kind
from core.limits import Limits
from core.options import KindOptions, option
from core.spec import PROGRAM_KINDS, ProgramSpec, spec_from_kwargs
from guidance_client.specs import KINDS as CLIENT_KINDS
from service import check
from service.schemas import CompileRequest, SessionCreateRequest, options_schema, program_fields

ROOT = Path(__file__).resolve().parents[2]


def _request_options() -> set[str]:
    return {name for kind in KINDS.values() for name in kind.options.names()}


def test_the_http_bodies_have_a_field_per_kind_and_per_kinds_own_field() -> None:
    own = {name for kind in KINDS.values() for name in kind.fields}
    for model in (CompileRequest, SessionCreateRequest):
        assert set(KINDS) | own <= set(model.model_fields)
    assert own == {"tool_choice", "parallel_tool_calls", "tool_format"}


def test_the_published_openapi_lists_every_kind_and_every_option() -> None:
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
    for name in ("CompileRequest", "SessionCreateRequest"):
        properties = spec["components"]["schemas"][name]["properties"]
        assert set(KINDS) <= set(properties)
        assert set(properties["options"]["properties"]) == _request_options()
        assert properties["options"]["additionalProperties"] is False


def test_the_worker_package_knows_the_same_kinds_and_own_fields() -> None:
    # The worker package is its own distribution and does not import core: its table is held equal here.
    assert list(CLIENT_KINDS) == list(KINDS)
    assert {k: set(own) for k, own in CLIENT_KINDS.items()} == {k: set(kind.fields) for k, kind in KINDS.items()}


def test_the_check_command_reads_each_kind_by_name_and_its_suffixes() -> None:
    assert check.kind_by_suffix() == {s: name for name, kind in KINDS.items() for s in kind.suffixes}
    assert set(check.kind_by_name().values()) == set(KINDS)
    assert {".hbs", ".json", ".regex", ".lark", ".gbnf", ".choices"} <= set(check.kind_by_suffix())


def test_the_spec_names_and_the_bench_bodies_follow_the_registry() -> None:
    assert tuple(KINDS) == PROGRAM_KINDS
    for name in KINDS:
        assert spec_of({name: "x"}).kind == name


def test_the_playground_offers_only_registered_kinds() -> None:
    html = (ROOT / "service" / "ui" / "index.html").read_text(encoding="utf-8")
    script = (ROOT / "service" / "ui" / "playground.js").read_text(encoding="utf-8")
    offered = re.findall(r'data-kind="([a-z_]+)"', html)
    assert offered and set(offered) <= set(KINDS)
    for name in offered:  # each button has its example and its hint
        assert len(re.findall(rf"^  {name}: ", script, re.MULTILINE)) == 2, name


# -- a kind added to the registry -----------------------------------------------------------------


@dataclass(frozen=True)
class _LiteralOptions(KindOptions):
    repeat: int = field(default=1, metadata=option("how many times the text is written, 1 to 9."))

    def __post_init__(self) -> None:
        if not isinstance(self.repeat, int) or isinstance(self.repeat, bool) or not 1 <= self.repeat <= 9:
            raise GrammarError("option repeat must be an integer from 1 to 9")


def _compile_literal(spec: ProgramSpec, ll: Any, limits: Limits) -> CompiledSpec:
    options = _LiteralOptions.parse(spec.options, spec.kind)
    return compile_regex(re.escape(spec.source) * options.repeat, ll, limits)


_LITERAL = Kind(
    name="literal",  # type: ignore[arg-type]  # not in core.spec.ProgramKind: the type checker's list
    label="literal text",
    compile=_compile_literal,
    source_type=str,
    doc="Exactly this text.",
    options=_LiteralOptions,
    suffixes=(".lit",),
)


@pytest.fixture()
def literal_kind(monkeypatch: pytest.MonkeyPatch) -> Kind:
    monkeypatch.setitem(KINDS, "literal", _LITERAL)  # type: ignore[misc]
    monkeypatch.setattr(core.spec, "PROGRAM_KINDS", (*PROGRAM_KINDS, "literal"))
    return _LITERAL


def test_a_new_kind_gets_its_body_field_and_its_options_in_the_http_schema(literal_kind: Kind) -> None:
    fields = program_fields(KINDS)
    body = fields.model_validate({"literal": "ab", "options": {"repeat": 2}})
    assert body.kind_and_source() == ("literal", "ab")
    assert body.kind_options() == {"repeat": 2}
    schema = fields.model_json_schema()
    assert schema["properties"]["literal"]["description"] == "Exactly this text."
    assert options_schema(KINDS)["properties"]["repeat"]["description"].startswith("literal: how many times")


def test_a_new_kind_compiles_with_its_typed_options_and_refuses_others(
    literal_kind: Kind, default_tokenizer: Tokenizer
) -> None:
    backend = GuidanceBackend(default_tokenizer, max_cache_size=4)
    program, _ = backend.compile(spec_from_kwargs("literal", "ab", None, {"repeat": 2}))  # type: ignore[arg-type]
    state = program.create_state()
    assert state.accept_tokens(default_tokenizer.encode("abab")) and state.is_accepting()
    with pytest.raises(GrammarError, match="unknown option\\(s\\) for literal: whitespace"):
        backend.compile(spec_from_kwargs("literal", "ab", None, {"whitespace": 1}))  # type: ignore[arg-type]
    with pytest.raises(GrammarError, match="repeat must be an integer"):
        backend.compile(spec_from_kwargs("literal", "ab", None, {"repeat": 10}))  # type: ignore[arg-type]


def test_a_new_kind_is_checked_from_its_file_suffix(
    literal_kind: Kind, default_tokenizer: Tokenizer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "twice.lit"
    path.write_text("ab\n", encoding="utf-8")
    assert check.main([str(path), "--text", "abab", "--option", "repeat=2"]) == check.EXIT_ACCEPTED
    assert check.main([str(path), "--text", "ab", "--option", "repeat=2"]) == check.EXIT_REJECTED
    other = tmp_path / "twice.txt"
    other.write_text("ab", encoding="utf-8")
    assert check.main([str(other), "--kind", "literal", "--text", "ab"]) == check.EXIT_ACCEPTED
    capsys.readouterr()


# -- options over HTTP: the kinds' models answer as the constraint does (400) ---------------------


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"regex": "a", "options": {"whitespace": 1}}, "unknown option(s) for regex: whitespace"),
        ({"json_schema": {}, "options": {"whitespace": "2"}}, "option whitespace must be an integer from 0 to 64"),
        ({"json_schema": {}, "options": {"formats": None}}, "option formats must be one of assert, annotate"),
        ({"tools": [], "options": {"tool_format": ["hermes"]}}, "unknown tool_format"),
        (
            {"tools": [], "tool_format": "hermes", "parallel_tool_calls": None, "options": {"parallel_tool_calls": 1}},
            "parallel_tool_calls must be true or false",
        ),
        ({"tools": [], "tool_format": "hermes", "tool_choice": "some"}, "tool_choice must be"),
    ],
)
async def test_a_bad_option_is_400_grammar_invalid(
    client: httpx.AsyncClient, body: dict[str, Any], detail: str
) -> None:
    resp = await client.post("/compile", json=body)
    assert resp.status_code == 400, resp.text
    problem = resp.json()
    assert problem["code"] == "grammar-invalid"
    assert problem["detail"].startswith(detail)

"""A JSON schema means the same direct or in a template's ``{{json}}`` slot.

Each MaskBench sample schema is compiled both ways (``json_schema`` and
``{{json 'v' schema=s}}``): both are refused, with the same message, or both compile, report the
same ignored annotations and accept and refuse the same of the schema's valid and invalid
instances (written compact, the default output of both; an instance on which the engine reaches
one of its limits must reach it both ways). The default suite takes every 20th
schema; the whole sample is marked slow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import CompiledGuidanceProgram, GuidanceBackend, GuidanceError, LimitExceeded

MASKBENCH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "jsonschemabench" / "maskbench" / "data"
STRIDE = 20
TEMPLATE = "{{json 'v' schema=s}}"

pytestmark = pytest.mark.skipif(not MASKBENCH.is_dir(), reason=f"MaskBench sample not found at {MASKBENCH}")


def _files(stride: int) -> list[Path]:
    return sorted(MASKBENCH.glob("*.json"))[::stride]


def _outcome(program: CompiledGuidanceProgram, tokens: list[int]) -> str:
    """``accepted``, ``refused``, or the engine limit the walk reached."""
    state = program.create_state()
    step = program.limits.max_tokens_per_accept
    try:
        for i in range(0, len(tokens), step):
            if not state.accept_tokens(tokens[i : i + step]):
                return "refused"
    except LimitExceeded as e:
        return f"limit {e.limit}"
    return "accepted"


def _compile(backend: GuidanceBackend, schema: Any) -> tuple[CompiledGuidanceProgram | None, str]:
    try:
        return backend.compile_json_schema(schema), ""
    except GuidanceError as e:
        return None, e.detail


def _compile_slot(backend: GuidanceBackend, schema: Any) -> tuple[CompiledGuidanceProgram | None, str]:
    try:
        return backend.compile_template(TEMPLATE, {"s": schema}), ""
    except LimitExceeded as e:
        return None, e.detail
    except GuidanceError as e:
        # the slot's refusal: "invalid JSON schema: <the direct compile's message> (line 1, column 1)"
        return None, e.detail.removeprefix("invalid JSON schema: ").removesuffix(" (line 1, column 1)")


def _differences(backend: GuidanceBackend, files: list[Path]) -> Iterator[str]:
    tok = backend.tokenizer
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        schema = doc["schema"]
        direct, direct_error = _compile(backend, schema)
        slot, slot_error = _compile_slot(backend, schema)
        if direct is None or slot is None:
            if (direct is None) != (slot is None) or direct_error != slot_error:
                yield f"{path.name}: refused {direct_error[:80]!r} direct, {slot_error[:80]!r} in a template"
            continue
        if direct.ignored != slot.ignored:
            yield f"{path.name}: ignored {direct.ignored} direct, {slot.ignored} in a template"
        for i, test in enumerate(doc.get("tests", [])):
            text = json.dumps(test["data"], ensure_ascii=False, separators=(",", ":"))
            tokens = tok.encode(text) + [tok.eos_token_id]
            direct_outcome, slot_outcome = _outcome(direct, tokens), _outcome(slot, tokens)
            if direct_outcome != slot_outcome:
                kind = "valid" if test["valid"] else "invalid"
                yield f"{path.name}: {kind} instance {i} {direct_outcome} direct, {slot_outcome} in a template"


@pytest.fixture(scope="module")
def backend() -> GuidanceBackend:
    return GuidanceBackend(max_cache_size=8)


def test_a_schema_in_a_template_accepts_what_it_accepts_direct_on_a_sample(backend: GuidanceBackend) -> None:
    files = _files(STRIDE)
    assert len(files) > 100
    assert list(_differences(backend, files)) == []


@pytest.mark.slow
def test_a_schema_in_a_template_accepts_what_it_accepts_direct_on_the_whole_sample(backend: GuidanceBackend) -> None:
    assert list(_differences(backend, _files(1))) == []


def test_a_template_reports_the_annotations_its_schema_ignores(backend: GuidanceBackend) -> None:
    schema = {"type": "object", "properties": {"p": {"type": "string", "format": "path"}}}
    direct = backend.compile_json_schema(schema)
    slot = backend.compile_template(TEMPLATE, {"s": schema})
    assert direct.ignored == slot.ignored == ('format "path" at #/properties/p',)


def test_a_template_slot_refusal_names_the_place_and_the_hint_a_direct_schema_gives(backend: GuidanceBackend) -> None:
    schema = {"type": "object", "properties": {"r": {"type": "string", "format": "regex"}}}
    with pytest.raises(GuidanceError) as direct:
        backend.compile_json_schema(schema)
    with pytest.raises(GuidanceError) as slot:
        backend.compile_template(TEMPLATE, {"s": schema})
    assert 'formats="annotate"' in direct.value.detail
    assert direct.value.detail in slot.value.detail
    assert "(at #/properties/r" in slot.value.detail

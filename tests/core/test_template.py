"""The template language: parsing, variables, errors with line and column."""

from __future__ import annotations

import pytest

from core import GuidanceTemplate, GuidanceTemplateType, TemplateError


def test_prefix_text_and_variable_sequence() -> None:
    t = GuidanceTemplate(
        "Hello {{who}}!\n{{gen 'a' regex='[0-9]+'}} {{#select 'b'}}x{{or}}y {{gen 'c'}}{{/select}}",
        {"who": "world"},
    )
    assert t.get_prefix_text() == "Hello world!\n"
    seq = t.get_variable_sequence()
    assert [(v.type, v.name) for v in seq] == [
        (GuidanceTemplateType.GEN, "a"),
        (GuidanceTemplateType.SELECT, "b"),
        (GuidanceTemplateType.GEN, "c"),
    ]
    assert seq[0].to_pattern() == "[0-9]+"
    assert (seq[0].line, seq[0].column) == (2, 1)


def test_cache_key_depends_on_source_and_variables() -> None:
    a = GuidanceTemplate("{{x}}", {"x": "1"})
    assert a.cache_key == GuidanceTemplate("{{x}}", {"x": "1"}).cache_key
    assert a.cache_key != GuidanceTemplate("{{x}}", {"x": "2"}).cache_key


def test_comments_and_escaped_braces_are_text() -> None:
    t = GuidanceTemplate("a{{! a comment }}b{{!-- {{gen}} --}}c\\{{d}}")
    assert t.get_prefix_text() == "abc{{d}}"
    assert t.get_variable_sequence() == []


def test_interpolated_values_are_literal_text() -> None:
    t = GuidanceTemplate("{{v}}", {"v": "{{gen 'x'}} [a-z]+ \\{{"})
    assert t.get_prefix_text() == "{{gen 'x'}} [a-z]+ \\{{"
    assert t.get_variable_sequence() == []


def test_option_strings_decode_simple_escapes_and_keep_regex_backslashes() -> None:
    t = GuidanceTemplate("{{gen 'a' regex='\\d+\\.' stop='\\n'}}")
    (v,) = t.get_variable_sequence()
    assert v.to_pattern() == "\\d+\\."
    assert v.node.stop == ["\n"]  # type: ignore[union-attr]


def test_json_schema_inline_with_nested_braces() -> None:
    t = GuidanceTemplate('{{json \'j\' schema={"type":"object","properties":{"a":{"type":"string"}}}}}!')
    (v,) = t.get_variable_sequence()
    assert v.type is GuidanceTemplateType.JSON
    assert v.node.schema["properties"]["a"] == {"type": "string"}  # type: ignore[union-attr,index]


@pytest.mark.parametrize(
    ("source", "variables", "line", "column", "words"),
    [
        ("ok\n  {{bogus 'x'}}", {}, 2, 5, "unknown tag"),
        ("{{#select 'a'}}x{{or}}y", {}, 1, 24, "unterminated block"),
        ("{{#repeat 'a'}}x{{/select}}", {}, 1, 17, "unexpected closing tag"),
        ("{{gen 'a'}} {{gen 'a'}}", {}, 1, 13, "duplicate capture name"),
        ("{{gen 'a' colour='red'}}", {}, 1, 11, "unknown option"),
        ("{{gen 'a' max_tokens=0}}", {}, 1, 1, "max_tokens"),
        ("\n{{missing}}", {}, 2, 1, "unknown variable"),
        ("{{select 'a' options=[]}}", {}, 1, 1, "at least one option"),
        ("{{select 'a' options=opts}}", {"opts": "notalist"}, 1, 1, "list of strings"),
        ("{{json 'a' schema=s}}", {"s": "{not json"}, 1, 1, "not valid JSON"),
        ("{{gen 'a' regex='(a'}}", {}, 1, 1, "invalid regex"),
        ("{{gen 'a' regex='(?=a)b'}}", {}, 1, 1, "look-around"),
        ("{{or}}", {}, 1, 1, "outside"),
        ("{{gen 'a' regex='x'", {}, 1, 20, "unterminated"),
        ("{{#repeat 'r' min=3 max=2}}x{{/repeat}}", {}, 1, 1, "max=2"),
        ("{{v}}", {"v": ["a"]}, 1, 1, "not a string"),
    ],
)
def test_errors_name_line_and_column(
    source: str, variables: dict[str, object], line: int, column: int, words: str, tiny_backend: object
) -> None:
    from core import GuidanceBackend

    assert isinstance(tiny_backend, GuidanceBackend)
    with pytest.raises(TemplateError) as info:
        tiny_backend.compile_template(source, variables)
    err = info.value
    assert words in err.detail
    assert (err.line, err.column) == (line, column), err.detail
    assert err.status == 400 and err.code == "template-invalid"


def test_nesting_depth_is_limited() -> None:
    from core import Limits

    deep = "{{#select 'a'}}" * 10 + "x" + "{{/select}}" * 10
    with pytest.raises(TemplateError, match="nested deeper"):
        GuidanceTemplate(deep, limits=Limits(max_nesting_depth=5))


def test_pathological_nesting_is_an_error_not_a_crash() -> None:
    deep = "{{#repeat 'r'}}" * 10_000
    with pytest.raises(TemplateError):
        GuidanceTemplate(deep)


def test_same_name_in_alternative_branches_is_allowed() -> None:
    t = GuidanceTemplate("{{#select 's'}}a {{gen 'x'}}{{or}}b {{gen 'x'}}{{/select}}")
    assert [v.name for v in t.get_variable_sequence()] == ["s", "x", "x"]


def test_to_pattern_checks_against_the_limits_it_is_given() -> None:
    from core import LimitExceeded, Limits

    nested = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}}}
    strict = Limits(max_nesting_depth=3)
    t = GuidanceTemplate("{{json 'j' schema=s}}", {"s": nested}, limits=strict)
    (v,) = t.get_variable_sequence()
    # Without limits, the defaults apply: not the stricter limits of the template the slot came from.
    assert v.to_pattern().startswith("%json {")
    with pytest.raises(LimitExceeded) as info:
        v.to_pattern(strict)
    assert info.value.limit == "max_nesting_depth"


def test_to_pattern_of_a_block_checks_its_slots_against_the_limits_it_is_given() -> None:
    from core import LimitExceeded, Limits

    t = GuidanceTemplate("{{#select 's'}}a{{or}}b {{gen 'x' regex='[0-9]{1,3}'}}{{/select}}")
    (block, _) = t.get_variable_sequence()
    pattern = block.to_pattern()
    assert "start: select_" in pattern and '"a"' in pattern and "/[0-9]{1,3}/" in pattern
    with pytest.raises(LimitExceeded) as info:
        block.to_pattern(Limits(max_source_bytes=5))
    assert info.value.limit == "max_source_bytes"


def test_cache_key_is_the_content_hash_of_text_and_variables() -> None:
    import hashlib

    t = GuidanceTemplate("Hi {{who}}: {{gen 'x'}}", {"who": "Zoë", "unused": [1, 2]})
    canonical = '["Hi {{who}}: {{gen \'x\'}}",{"who":"Zoë","unused":[1,2]}]'
    assert t.cache_key == hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]
    # the variables' order is part of what the template is (as it is of a program's id)
    swapped = GuidanceTemplate("Hi {{who}}: {{gen 'x'}}", {"unused": [1, 2], "who": "Zoë"})
    assert swapped.cache_key != t.cache_key


@pytest.mark.parametrize(
    ("stop", "follow", "stops", "rest"),
    [
        (None, None, (), None),  # nothing after: no stop
        (None, "", (), ""),
        (None, "!\n", ("!\n",), ""),  # the text after is the stop, produced once
        (["\n"], None, ("\n",), None),
        (["\n"], "\nNext", ("\n",), "Next"),  # the text after starts with the stop: produced once
        (["."], "!", (".",), "!"),  # the stop, then the text after
        (["a", "b"], "a!", ("a", "b"), "a!"),  # several stops: the text after is kept whole
    ],
)
def test_what_ends_a_gen(stop: list[str] | None, follow: str | None, stops: tuple[str, ...], rest: str | None) -> None:
    from core.template import GenNode

    assert GenNode("x", None, stop, None, 1, 1).ending(follow) == (stops, rest)

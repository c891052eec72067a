"""Captures: llguidance's flat records grouped into a program's variables."""

from __future__ import annotations

from core import GuidanceBackend
from core.captures import LIST_APPEND, CaptureLayout, capture_name, utf8_prefix


def test_an_incomplete_character_at_the_end_is_left_out() -> None:
    text = "né😀".encode()
    assert [utf8_prefix(text[:n]) for n in range(len(text) + 1)] == [
        "",
        "n",
        "n",
        "né",
        "né",
        "né",
        "né",
        "né😀",
    ]


def test_a_recorded_name_gives_the_template_name() -> None:
    assert capture_name(LIST_APPEND + "x") == "x"
    assert capture_name("x") == "x"


def test_values_inside_a_repeat_become_lists_one_entry_per_item(tiny_backend: GuidanceBackend) -> None:
    program = tiny_backend.compile_template("{{#repeat 'r' sep=','}}{{gen 'n' regex='[0-9]'}}{{/repeat}}.", {})
    layout = program.layout
    assert isinstance(layout, CaptureLayout)
    (info,) = layout.repeats.values()
    records = [
        (LIST_APPEND + "n", b"1"),
        (LIST_APPEND + "r", b"1"),
        (LIST_APPEND + str(info.sep_marker), b","),
        (LIST_APPEND + "n", b"2"),
        (LIST_APPEND + "r", b"2"),
    ]
    assert layout.values(records) == {"r": ["1", "2"], "n": ["1", "2"]}


def test_a_lark_grammar_reports_its_own_captures() -> None:
    assert CaptureLayout(passthrough=True).values([("a", b"x"), ("a", b"y")]) == {"a": "y"}
    assert CaptureLayout().values([("a", b"x")]) == {}

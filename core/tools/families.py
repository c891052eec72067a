"""Tool-call formats: one entry per model family, each taken from the family's own chat template.

Each :class:`ToolFormat` holds everything about its family: how a call is spelt (read from an
assistant turn with tool calls, rendered by the template named in ``template``), which of its
markers are special tokens in the family's vocabulary, how arguments are written, whether text may
come before the calls, whether a turn may hold several calls, and the family's think block. The
grammar (:mod:`core.tools.grammar`), the reader of variables (:mod:`core.tools.reader`) and the
``reasoning`` option (:mod:`core.reasoning`) all derive from these entries.

Templates are llama.cpp's ``models/templates/*.jinja`` (vendored in llama-cpp-python's source
archive). A call is written::

    section_open  call_open NAME name_close ARGUMENTS call_close  (separator call ...)  section_close

followed by the end of the turn, which is the tokenizer's end token (the template's ``end_of_turn``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from core.tools.parts import Opt, Piece, Rx

__all__ = ["ArgumentStyle", "Reasoning", "TOOL_FORMATS", "ToolFormat", "tool_format"]

#: How arguments are written: a JSON object; Qwen3-Coder's ``<parameter=k>`` tags; GLM's
#: ``<arg_key>``/``<arg_value>`` pairs; Gemma 4's own notation (bare keys, ``<|"|>`` strings).
ArgumentStyle = Literal["json", "xml-qwen", "xml-glm", "gemma"]


@dataclass(frozen=True)
class Reasoning:
    """A family's think block.

    Attributes:
        start: what opens it ("" when the generation prompt already opened it: the block is then
            required and starts at once).
        end: what closes it.
        lead: text that may come before ``start`` (GLM writes a line break first).
    """

    start: str
    end: str
    lead: str = ""


@dataclass(frozen=True)
class ToolFormat:
    """How one model family writes tool calls (see the module docstring for the layout).

    Attributes:
        name: the ``tool_format`` value.
        template: the chat template the format is taken from.
        specials: markers matched as the vocabulary's special token when it has one by that name.
        call_open: before the function's name.
        name_close: between the name and the arguments.
        call_close: after the arguments.
        section_open: before the first call.
        section_close: after the last call.
        separator: between two calls.
        arguments: how arguments are written.
        json_separators: item and key separators of JSON arguments (the template's ``tojson``).
        content: ``before``: text may come before the calls; ``exclusive``: a turn is text or a call.
        parallel: a turn may hold several calls.
        end_of_turn: what the template writes after the calls (the engine's end token).
        reasoning: the family's think block, if it has one.
    """

    name: str
    template: str
    specials: tuple[str, ...]
    call_open: tuple[Piece, ...]
    name_close: tuple[Piece, ...]
    call_close: tuple[Piece, ...]
    section_open: tuple[Piece, ...] = ()
    section_close: tuple[Piece, ...] = ()
    separator: tuple[Piece, ...] = ()
    arguments: ArgumentStyle = "json"
    json_separators: tuple[str, str] = (", ", ": ")
    content: Literal["before", "exclusive"] = "before"
    parallel: bool = True
    end_of_turn: str = ""
    reasoning: Reasoning | None = None

    @property
    def opening(self) -> tuple[Piece, ...]:
        """What opens the calls: the section's opening, or the first call's."""
        return self.section_open or self.call_open

    @property
    def trigger(self) -> str:
        """The text that starts the calls: the marker the opening starts with, else its first piece.

        Text before the calls never holds it; the reader splits a turn at its first occurrence.
        """
        first = self.opening[0]
        assert isinstance(first, str)
        starts = [m for m in self.specials if first.startswith(m)]
        return max(starts, key=len) if starts else first


_THINK = Reasoning("<think>", "</think>")
_HERMES_SPECIALS = ("<tool_call>", "</tool_call>")


def _hermes(name: str, template: str, end_of_turn: str, reasoning: Reasoning | None = None) -> ToolFormat:
    """The ``<tool_call>`` JSON ``</tool_call>`` format (Hermes, Qwen 2.5 and 3, Granite 4)."""
    return ToolFormat(
        name,
        template,
        _HERMES_SPECIALS + (("<think>", "</think>") if reasoning else ()),
        call_open=('<tool_call>\n{"name": "',),
        name_close=('", "arguments": ',),
        call_close=("}\n</tool_call>",),
        separator=("\n",),
        end_of_turn=end_of_turn,
        reasoning=reasoning,
    )


_DEEPSEEK_SPECIALS = (
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁sep｜>",
)
_KIMI_SPECIALS = (
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
)

_FORMATS = (
    _hermes("hermes", "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "<|im_end|>"),
    _hermes("qwen2.5", "Qwen-Qwen2.5-7B-Instruct.jinja", "<|im_end|>"),
    _hermes("qwen3", "Qwen-Qwen3-0.6B.jinja", "<|im_end|>", _THINK),
    ToolFormat(
        "qwen3-coder",
        "Qwen3-Coder.jinja",
        _HERMES_SPECIALS,
        call_open=("<tool_call>\n<function=",),
        name_close=(">\n",),
        call_close=("</function>\n</tool_call>",),
        separator=("\n",),
        arguments="xml-qwen",
        end_of_turn="<|im_end|>",
    ),
    ToolFormat(
        "llama3",
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        (),
        call_open=('{"name": "',),
        name_close=('", "parameters": ',),
        call_close=("}",),
        content="exclusive",
        parallel=False,  # "This model only supports single tool-calls at once!"
        end_of_turn="<|eot_id|>",
    ),
    ToolFormat(
        "mistral",
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        ("[TOOL_CALLS]",),
        section_open=("[TOOL_CALLS][",),
        section_close=("]",),
        call_open=('{"name": "',),
        name_close=('", "arguments": ',),
        call_close=(Opt((', "id": "', Rx("[A-Za-z0-9]{9}"), '"')), "}"),
        separator=(", ",),
        end_of_turn="</s>",
    ),
    ToolFormat(
        "deepseek-v3",
        "deepseek-ai-DeepSeek-V3.1.jinja",
        (*_DEEPSEEK_SPECIALS, "</think>"),
        section_open=("<｜tool▁calls▁begin｜>",),
        section_close=("<｜tool▁calls▁end｜>",),
        call_open=("<｜tool▁call▁begin｜>",),
        name_close=("<｜tool▁sep｜>",),
        call_close=("<｜tool▁call▁end｜>",),
        end_of_turn="<｜end▁of▁sentence｜>",
        reasoning=Reasoning("", "</think>"),  # the generation prompt ends with <think>
    ),
    ToolFormat(
        "deepseek-r1",
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        (*_DEEPSEEK_SPECIALS, "</think>"),
        section_open=("<｜tool▁calls▁begin｜>",),
        section_close=("<｜tool▁calls▁end｜>",),
        call_open=("<｜tool▁call▁begin｜>function<｜tool▁sep｜>",),
        name_close=("\n```json\n",),
        call_close=("\n```<｜tool▁call▁end｜>",),
        separator=("\n",),
        end_of_turn="<｜end▁of▁sentence｜>",
        reasoning=Reasoning("", "</think>"),  # the generation prompt ends with <think>\n
    ),
    _hermes("granite", "ibm-granite-granite-4.0.jinja", "<|end_of_text|>"),
    ToolFormat(
        "gemma4",
        "google-gemma-4-31B-it.jinja",
        ("<|tool_call>", "<tool_call|>", '<|"|>', "<|channel>", "<channel|>"),
        call_open=("<|tool_call>call:",),
        name_close=(),
        call_close=("<tool_call|>",),
        arguments="gemma",
        end_of_turn="<|tool_response>",
        reasoning=Reasoning("<|channel>thought\n", "<channel|>"),
    ),
    ToolFormat(
        "glm4",
        "GLM-4.6.jinja",
        (*_HERMES_SPECIALS, "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "<think>", "</think>"),
        call_open=("<tool_call>",),
        name_close=(),
        call_close=(Opt(("\n",)), "</tool_call>"),
        separator=(Opt(("\n",)),),
        arguments="xml-glm",
        end_of_turn="<|user|>",
        reasoning=Reasoning("<think>", "</think>", lead="\n"),
    ),
    ToolFormat(
        "kimi-k2",
        "moonshotai-Kimi-K2.jinja",
        (*_KIMI_SPECIALS, "<think>", "</think>"),
        section_open=("<|tool_calls_section_begin|>",),
        section_close=("<|tool_calls_section_end|>",),
        call_open=("<|tool_call_begin|>functions.",),
        name_close=(":", Rx("[0-9]+"), "<|tool_call_argument_begin|>"),
        call_close=("<|tool_call_end|>",),
        end_of_turn="<|im_end|>",
        reasoning=_THINK,  # Kimi-K2-Thinking
    ),
)

#: Every family by its ``tool_format`` name.
TOOL_FORMATS: Mapping[str, ToolFormat] = {f.name: f for f in _FORMATS}


def tool_format(name: str) -> ToolFormat:
    """The family's format.

    Raises:
        KeyError: no family by that name (callers turn it into a 400 naming the families).
    """
    return TOOL_FORMATS[name]

"""The families' own chat templates rendered with jinja2, and a parser of each family's turns.

Both are written from the templates (llama.cpp's ``models/templates``, vendored in
llama-cpp-python's source archive, fetched by ``tests/vocabularies.py``), not from core's grammar:
they are the oracles the tool-call tests hold core to.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

jinja2 = pytest.importorskip("jinja2", reason="jinja2 (the test extra) renders the chat templates")
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

# The family's real vocabulary (a llama.cpp ggml-vocab name; tekken is the embedded default).
VOCABULARY = {
    "hermes": "llama-bpe",
    "qwen2.5": "qwen2",
    "qwen3": "qwen35",
    "qwen3-coder": "qwen35",
    "llama3": "llama-bpe",
    "mistral": "tekken",
    "deepseek-v3": "deepseek-llm",
    "deepseek-r1": "qwen2",  # the R1 distill of Qwen 2.5 keeps its vocabulary
    "granite": "tekken",  # no Granite vocabulary is vendored
    "gemma4": "gemma-4",
    "glm4": "tekken",  # nor GLM's
    "kimi-k2": "tekken",  # nor Kimi's
}
# Where the assistant turn starts when the generation prompt is not a prefix of it.
HEADER = {"deepseek-r1": "<｜Assistant｜>", "gemma4": "<|turn>model\n"}
# A think block the template writes before the calls, read with the family's ``reasoning``.
THINKS = {"qwen3": "<think>\n\n</think>\n\n", "glm4": "\n<think></think>"}

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
TIME = {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time", "parameters": TIME}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
CALLS = [
    {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}},
    {"name": "get_time", "arguments": {"tz": "CET"}},
]


def _environment() -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])

    def tojson(
        x: Any, indent: Any = None, separators: Any = None, sort_keys: bool = False, ensure_ascii: bool = False
    ) -> str:
        return json.dumps(x, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii)

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: "07 Dec 2026")
    return env


def assistant_turn(template: Path, calls: list[dict[str, Any]], eos_text: str) -> str:
    """The text the template writes for an assistant turn holding ``calls``, after the generation prompt."""
    t = _environment().from_string(template.read_text(encoding="utf-8"))
    tool_calls = [
        {"id": f"call{i}ABCD"[:9].ljust(9, "x"), "type": "function", "function": dict(c)} for i, c in enumerate(calls)
    ]
    user = [{"role": "user", "content": "What now?"}]
    common = {"tools": TOOLS, "bos_token": "", "eos_token": eos_text}
    base = t.render(messages=user, add_generation_prompt=False, **common)
    prompt = t.render(messages=user, add_generation_prompt=True, **common)[len(base) :]
    messages = [*user, {"role": "assistant", "content": "", "tool_calls": tool_calls}]
    full = t.render(messages=messages, add_generation_prompt=False, **common)
    assert full.startswith(base)
    turn = full[len(base) :]
    for head in (prompt, *HEADER.values()):
        if turn.startswith(head):
            return turn[len(head) :]
    raise AssertionError(f"no known assistant header in {turn[:80]!r}")


# -- parsers of a turn, one per family: (content, [{"name", "arguments"}]) or ValueError


def _json_calls(pattern: str, text: str, key: str = "arguments") -> list[dict[str, Any]]:
    out = []
    for body in re.findall(pattern, text, re.S):
        obj = json.loads(body)
        if set(obj) != {"name", key}:
            raise ValueError(f"keys {sorted(obj)}")
        out.append({"name": obj["name"], "arguments": obj[key]})
    return out


def _split(text: str, marker: str) -> tuple[str, str]:
    at = text.find(marker)
    return (text, "") if at < 0 else (text[:at], text[at:])


def _hermes(text: str, schemas: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content, rest = _split(text, "<tool_call>")
    one = r"<tool_call>\n(.*?)\n</tool_call>"
    if rest and not re.fullmatch(f"{one}(?:\\n{one})*", rest, re.S):
        raise ValueError(f"not a list of calls: {rest[:80]!r}")
    return content, _json_calls(one, rest)


def _qwen_coder(text: str, schemas: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content, rest = _split(text, "<tool_call>")
    one = r"<tool_call>\n<function=([^>\n]+)>\n((?:<parameter=[^>\n]+>\n.*?\n</parameter>\n)*)</function>\n</tool_call>"
    if rest and not re.fullmatch(f"{one}(?:\\n{one})*", rest, re.S):
        raise ValueError(f"not a list of calls: {rest[:80]!r}")
    calls = []
    for name, params in re.findall(one, rest, re.S):
        props = schemas[name].get("properties", {})
        args = {}
        for key, raw in re.findall(r"<parameter=([^>\n]+)>\n(.*?)\n</parameter>\n", params, re.S):
            args[key] = _typed(raw, props.get(key, {}))
        calls.append({"name": name, "arguments": args})
    return content, calls


def _typed(raw: str, schema: dict[str, Any]) -> Any:
    if schema.get("type") == "string" or (schema.get("enum") and all(isinstance(v, str) for v in schema["enum"])):
        return raw
    if raw in ("True", "False"):
        return raw == "True"
    return json.loads(raw)


def _glm(text: str, schemas: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content, rest = _split(text, "<tool_call>")
    one = r"<tool_call>([^\n<]+)((?:\n?<arg_key>.*?</arg_key>\n?<arg_value>.*?</arg_value>)*)\n?</tool_call>"
    if rest and not re.fullmatch(f"{one}(?:\\n?{one})*", rest, re.S):
        raise ValueError(f"not a list of calls: {rest[:80]!r}")
    calls = []
    for name, params in re.findall(one, rest, re.S):
        props = schemas[name].get("properties", {})
        pairs = re.findall(r"<arg_key>(.*?)</arg_key>\n?<arg_value>(.*?)</arg_value>", params, re.S)
        calls.append({"name": name, "arguments": {k: _typed(v, props.get(k, {})) for k, v in pairs}})
    return content, calls


def _llama3(text: str, schemas: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    if not text.startswith("{"):
        return text, []
    return "", _json_calls(r"\A(.*)\Z", text, "parameters")


def _mistral(text: str, schemas: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content, rest = _split(text, "[TOOL_CALLS]")
    if not rest:
        return content, []
    calls = json.loads(rest[len("[TOOL_CALLS]") :])
    out = []
    for c in calls:
        if not set(c) <= {"name", "arguments", "id"} or not re.fullmatch(r"[A-Za-z0-9]{9}", c.get("id", "abcdefghi")):
            raise ValueError(f"keys {sorted(c)}")
        out.append({"name": c["name"], "arguments": c["arguments"]})
    return content, out


def _deepseek(one: str, sep: str) -> Any:
    def parse(text: str, schemas: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        content, rest = _split(text, "<｜tool▁calls▁begin｜>")
        if not rest:
            return content, []
        m = re.fullmatch(f"<｜tool▁calls▁begin｜>({one}(?:{sep}{one})*)<｜tool▁calls▁end｜>", rest, re.S)
        if not m:
            raise ValueError(f"not a list of calls: {rest[:80]!r}")
        return content, [{"name": n, "arguments": json.loads(a)} for n, a in re.findall(one, rest, re.S)]

    return parse


def _kimi(text: str, schemas: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content, rest = _split(text, "<|tool_calls_section_begin|>")
    if not rest:
        return content, []
    one = r"<\|tool_call_begin\|>functions\.([^:<]+):\d+<\|tool_call_argument_begin\|>(.*?)<\|tool_call_end\|>"
    if not re.fullmatch(f"<\\|tool_calls_section_begin\\|>(?:{one})+<\\|tool_calls_section_end\\|>", rest, re.S):
        raise ValueError(f"not a list of calls: {rest[:80]!r}")
    return content, [{"name": n, "arguments": json.loads(a)} for n, a in re.findall(one, rest, re.S)]


class _Gemma:
    """Gemma 4's argument notation: bare keys, ``<|"|>`` strings, JSON's numbers and literals."""

    Q = '<|"|>'

    def __init__(self, text: str) -> None:
        self.s, self.i = text, 0

    def value(self) -> Any:
        s = self.s
        if s.startswith(self.Q, self.i):
            end = s.index(self.Q, self.i + len(self.Q))
            v = s[self.i + len(self.Q) : end]
            self.i = end + len(self.Q)
            return v
        if s[self.i] == "{":
            self.i += 1
            out: dict[str, Any] = {}
            while s[self.i] != "}":
                m = re.compile(r"([A-Za-z0-9_]+):").match(s, self.i)
                if m is None:
                    raise ValueError(f"no key at {s[self.i : self.i + 20]!r}")
                self.i = m.end()
                out[m.group(1)] = self.value()
                if s[self.i] == ",":
                    self.i += 1
            self.i += 1
            return out
        if s[self.i] == "[":
            self.i += 1
            items = []
            while s[self.i] != "]":
                items.append(self.value())
                if s[self.i] == ",":
                    self.i += 1
            self.i += 1
            return items
        m = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null|None").match(s, self.i)
        if m is None:
            raise ValueError(f"no value at {s[self.i : self.i + 20]!r}")
        self.i = m.end()
        return None if m.group() == "None" else json.loads(m.group())


def _gemma(text: str, schemas: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content, rest = _split(text, "<|tool_call>")
    calls = []
    while rest:
        m = re.match(r"<\|tool_call>call:([A-Za-z0-9_.\-]+)", rest)
        if m is None:
            raise ValueError(f"not a call: {rest[:80]!r}")
        p = _Gemma(rest)
        p.i = m.end()
        args = p.value()
        if not rest.startswith("<tool_call|>", p.i):
            raise ValueError("no <tool_call|>")
        calls.append({"name": m.group(1), "arguments": args})
        rest = rest[p.i + len("<tool_call|>") :]
    return content, calls


PARSERS = {
    "hermes": _hermes,
    "qwen2.5": _hermes,
    "qwen3": _hermes,
    "granite": _hermes,
    "qwen3-coder": _qwen_coder,
    "llama3": _llama3,
    "mistral": _mistral,
    "deepseek-v3": _deepseek(r"<｜tool▁call▁begin｜>([^<]+)<｜tool▁sep｜>(.*?)<｜tool▁call▁end｜>", ""),
    "deepseek-r1": _deepseek(
        r"<｜tool▁call▁begin｜>function<｜tool▁sep｜>([^\n]+)\n```json\n(.*?)\n```<｜tool▁call▁end｜>", "\n"
    ),
    "gemma4": _gemma,
    "glm4": _glm,
    "kimi-k2": _kimi,
}

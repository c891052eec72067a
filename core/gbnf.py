"""GBNF (llama.cpp's grammar format) to llguidance's Lark, with errors on the user's own lines.

The conversion is llguidance's own (``llguidance.gbnf_to_lark``): this module adds what a user
needs when it fails. A syntax error names the line and column of the GBNF text; an unknown rule
names the line that refers to it; an error llguidance finds in the converted Lark is traced back
to the GBNF rule it came from (the converter renames rules: ``root`` becomes ``start``,
``my-rule`` ``my_rule``, terminals are upper-cased). It also tells the two dialects apart, so an
error on text written in the other one says so (:func:`dialect_hint`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llguidance import gbnf_to_lark as converter

from core.errors import GrammarError, map_errors
from core.limits import Limits
from core.validation import check_size

__all__ = [
    "GbnfGrammar",
    "convert_gbnf",
    "dialect_hint",
    "looks_like_gbnf",
    "looks_like_lark",
]

# A GBNF rule: ``name ::= ...`` at the start of a line.
_GBNF_RULE = re.compile(r"(?m)^[ \t]*([A-Za-z][A-Za-z0-9_-]*)[ \t]*::=")
# llguidance's own test (``is_lark_syntax``), and any ``name:`` rule header Lark has.
_LARK_RULE = re.compile(r"(?m)^[ \t]*(%llguidance\b|[?!]?[A-Za-z_][\w.]*(\[[^\]\n]*\])?[ \t]*:)")
# Where llguidance's Lark errors point: ``at 3(5): ...`` or ``3(5): ...`` (line and column).
_LARK_AT = re.compile(r"^(?:at )?(\d+)\((\d+)\): ")
_UNKNOWN_RULE = re.compile(r"Rule '([^']*)' not found")


def looks_like_gbnf(text: str) -> bool:
    """Whether ``text`` has GBNF rules (``name ::= ...``) and none of Lark's own markers."""
    return _GBNF_RULE.search(text) is not None and not converter.is_lark_syntax(text)


def looks_like_lark(text: str) -> bool:
    """Whether ``text`` reads as Lark (``%llguidance``, ``start:`` or ``name:`` rules) and not as GBNF."""
    return _GBNF_RULE.search(text) is None and _LARK_RULE.search(text) is not None


def dialect_hint(text: str, kind: str) -> str:
    """A sentence for an error on ``text`` sent as ``kind`` when it is written in the other dialect ("" if not)."""
    if kind == "gbnf" and looks_like_lark(text):
        return "This looks like a Lark grammar (`name: ...` rules), not GBNF (`name ::= ...`): send it as `grammar`."
    if kind == "grammar" and looks_like_gbnf(text):
        return (
            "This looks like a GBNF grammar (llama.cpp's `name ::= ...` rules), but `grammar` is Lark "
            "(llguidance's dialect, `name: ...` rules): send it as `gbnf`."
        )
    return ""


@dataclass(frozen=True)
class GbnfGrammar:
    """A GBNF grammar converted to Lark, with what it takes to point back at the user's lines.

    Attributes:
        lark: the converted grammar (llguidance's Lark dialect).
        source: the GBNF text.
        renamed: Lark rule name -> the GBNF rule it came from.
    """

    lark: str
    source: str
    renamed: dict[str, str]

    def error(self, message: str) -> GrammarError:
        """llguidance's error on the converted Lark, pointing at the GBNF rule it came from."""
        at = _LARK_AT.match(message)
        if at is None:
            return GrammarError(f"GBNF grammar does not compile: {message}")
        lark_line = int(at[1])
        rule = self._rule_at(lark_line)
        rest = _drop_lark_quote(message[at.end() :])
        if rule is None:
            return GrammarError(f"GBNF grammar does not compile: {rest}")
        line = _rule_line(self.source, rule)
        where = f" (line {line})" if line is not None else ""
        return GrammarError(f"GBNF grammar does not compile, in rule {rule!r}{where}: {rest}", line=line)

    def _rule_at(self, lark_line: int) -> str | None:
        lines = self.lark.splitlines()
        for i in range(min(lark_line, len(lines)) - 1, -1, -1):
            m = re.match(r"[?!]?([A-Za-z_]\w*)\s*:", lines[i])
            if m:
                return self.renamed.get(m[1], m[1])
        return None


def convert_gbnf(text: str, limits: Limits) -> GbnfGrammar:
    """Convert a GBNF grammar to Lark with llguidance's converter.

    Raises:
        GrammarError: the text is not GBNF; with ``line`` and ``column`` (1-based) where known.
        LimitExceeded: the text is larger than ``limits.max_source_bytes``.
    """
    if not isinstance(text, str) or not text.strip():
        raise GrammarError("gbnf must be a non-empty GBNF grammar (llama.cpp's `root ::= ...`)")
    check_size(text, "GBNF grammar", limits)
    parser = converter.GrammarParser()
    with map_errors({converter.GbnfToLarkError: lambda e: _syntax_error(text, e)}):
        rules = parser.parse(text)
    original = {id(rule): name for name, rule in rules.items()}
    # The converter raises bare Exceptions for unknown and duplicate rules.
    with map_errors({Exception: lambda e: _resolve_error(text, str(e))}):
        converter.resolve(rules)
    renamed = {rule.name: original[id(rule)] for rule in rules.values()}
    lark = converter.gbnf_to_lark(text)
    return GbnfGrammar(lark, text, renamed)


def _syntax_error(text: str, error: converter.GbnfToLarkError) -> GrammarError:
    line, column = _line_column(text, error.pos.pos)
    reason = str(error).split(" at line ", 1)[0]
    hint = dialect_hint(text, "gbnf")
    return GrammarError(
        f"GBNF syntax error at line {line}, column {column}: {reason}" + (f". {hint}" if hint else ""),
        line=line,
        column=column,
    )


def _resolve_error(text: str, message: str) -> GrammarError:
    unknown = _UNKNOWN_RULE.search(message)
    if unknown:
        name = unknown[1]
        m = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])(?![ \t]*::=)", _without_literals(text))
        if m:
            line, column = _line_column(text, m.start())
            return GrammarError(
                f"GBNF grammar refers to rule {name!r}, which it does not define (line {line}, column {column})",
                line=line,
                column=column,
            )
        return GrammarError(f"GBNF grammar refers to rule {name!r}, which it does not define")
    if "root" in message and "No" in message:
        return GrammarError("GBNF grammar has no `root` rule (generation starts at `root ::= ...`)")
    return GrammarError(f"GBNF grammar does not convert: {message}")


def _without_literals(text: str) -> str:
    """``text`` with string literals, character classes and comments blanked (same length)."""

    def blank(m: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))

    return re.sub(r'"(?:[^"\\\n]|\\.)*"|\[(?:[^\]\\\n]|\\.)*\]|#[^\n]*', blank, text)


def _line_column(text: str, offset: int) -> tuple[int, int]:
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def _rule_line(text: str, name: str) -> int | None:
    for m in _GBNF_RULE.finditer(text):
        if m[1] == name:
            return text.count("\n", 0, m.start()) + 1
    return None


def _drop_lark_quote(message: str) -> str:
    """llguidance's message without its quote of the converted Lark (``   3 | ...`` and its caret)."""
    kept: list[str] = []
    quoting = False
    for line in message.splitlines():
        if re.match(r"^\s*\d+ \| ", line):
            quoting = True
        elif not (quoting and re.match(r"^\s*\^+\s*$", line)):
            quoting = False
            kept.append(line)
    return "\n".join(kept).strip()

"""``guidance-server check``: does a text satisfy a constraint? In-process with ``core``, no server.

    guidance-server check person.hbs --vars vars.json --text $'Name: Ada\\nAge: 36'
    guidance-server check schema.json --jsonl outputs.jsonl
    guidance-server check answer.regex --text 42 --json        # one JSON object per text

The constraint's kind comes from its file name (``.hbs``/``.txt`` template, ``.json`` JSON schema,
``.regex``, ``.lark`` grammar, ``.gbnf`` GBNF grammar, ``.choices`` one option per line: each kind's
entry in :data:`core.kinds.KINDS` names its suffixes and how its file is read) or from ``--kind``
(any kind, by its name or an alias). One final newline of a template or regex file is not part of
the constraint (editors add one).

A text is accepted when all its tokens are accepted and EOS is allowed after them. A rejected
text is reported with where (character offset, line, column), the token refused there, how many
tokens the constraint allows there, a few of them, and why. Exit status: 0 when every text is
accepted, 1 when any is rejected, 2 for a bad constraint, variables, input or usage.
"""

from __future__ import annotations

import argparse
import heapq
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from core.backend import GuidanceBackend
from core.errors import GuidanceError, LimitExceeded, TemplateError, TokenRejected
from core.kinds import KINDS
from core.program import CompiledGuidanceProgram
from core.session import GuidanceState
from core.spec import ProgramKind, spec_from_kwargs
from core.tokenizers import load_default_tokenizer, load_tokenizer

__all__ = ["CheckResult", "check_text", "kind_by_name", "kind_by_suffix", "main", "read_constraint"]

Verdict = Literal["accepted", "rejected", "incomplete", "error"]


def kind_by_suffix() -> dict[str, ProgramKind]:
    """The kind each constraint-file suffix stands for (the kinds' ``suffixes``, :data:`core.kinds.KINDS`)."""
    return {suffix: name for name, kind in KINDS.items() for suffix in kind.suffixes}


def kind_by_name() -> dict[str, ProgramKind]:
    """What ``--kind`` takes: each kind's name and its aliases (``json``, ``lark``, ``choices``)."""
    return {alias: name for name, kind in KINDS.items() for alias in (name, *kind.aliases)}


EXIT_ACCEPTED, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad constraint file, variables file, input or option (exit status 2)."""


@dataclass
class CheckResult:
    """What checking one text found.

    Attributes:
        verdict: ``accepted`` (all tokens and then EOS accepted), ``rejected`` (a token is
            refused), ``incomplete`` (every token accepted, but EOS is not allowed: the text stops
            early) or ``error`` (the engine gave up, e.g. a parser limit).
        tokens: the text's token count.
        accepted_tokens: how many leading tokens were accepted.
        offset, line, column: where the text goes wrong (characters, 0-based offset; 1-based line
            and column): the first character the constraint refuses (fed one by one from the
            refused token's start), else the refused token's start, or the end of an incomplete text.
        token, token_text, token_offset: the refused token, and the character it starts at.
        allowed: how many tokens the constraint allows where the refused token starts.
        sample: a few of them, as text (EOS as ``<EOS>``, then the shortest).
        reason: why, in words.
        variables: the values captured (at the end, or up to where the text goes wrong).
    """

    text: str
    verdict: Verdict
    tokens: int
    accepted_tokens: int
    offset: int | None = None
    line: int | None = None
    column: int | None = None
    token: int | None = None
    token_text: str | None = None
    token_offset: int | None = None
    allowed: int | None = None
    sample: list[str] = field(default_factory=list)
    reason: str = ""
    variables: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict == "accepted"


# -- reading the constraint -----------------------------------------------------------------------


def read_constraint(path: Path, kind: ProgramKind | None = None) -> tuple[ProgramKind, Any]:
    """The kind and source of a constraint file (``kind`` overrides the file name's suffix).

    Raises:
        UsageError: unreadable file, unknown suffix, or a schema that is not JSON.
    """
    if kind is None:
        suffixes = kind_by_suffix()
        kind = suffixes.get(path.suffix.lower())
        if kind is None:
            known = ", ".join(sorted(suffixes))
            raise UsageError(
                f"{path}: cannot tell the constraint's kind from {path.suffix or 'no suffix'!r} "
                f"(known: {known}); give --kind"
            )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read: {e}") from None
    try:
        return kind, KINDS[kind].read(text)
    except json.JSONDecodeError as e:
        label = KINDS[kind].label
        raise UsageError(f"{path}:{e.lineno}:{e.colno}: the {label} is not valid JSON: {e.msg}") from None


def _read_variables(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:{e.lineno}:{e.colno}: the variables are not valid JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path}: the variables must be a JSON object")
    return value


def _read_jsonl(path: str) -> Iterator[tuple[str, str]]:
    """``(label, text)`` per non-blank line: a JSON string or an object with a string ``text``."""
    try:
        stream: TextIO = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e}") from None
    with stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            where = f"{'<stdin>' if path == '-' else path}:{number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{where}: not JSON: {e.msg}") from None
            if isinstance(item, dict):
                item = item.get("text")
            if not isinstance(item, str):
                raise UsageError(f'{where}: expected a JSON string or an object with a string "text"')
            yield where, item


# -- checking -------------------------------------------------------------------------------------


def _where(text: str, prefix: bytes) -> tuple[int, int, int]:
    """Offset (0-based), line and column (1-based), in characters, where ``text``'s UTF-8 ``prefix`` ends."""
    # A token may end inside a character: the place is then that character.
    done = prefix.decode("utf-8", errors="ignore")
    offset = len(done)
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return offset, line, column


def _token_text(program: CompiledGuidanceProgram, token: int) -> str:
    if token in program.eos_token_ids:
        return "<EOS>" if token == program.eos_token_id else f"<EOS {program.tokenizer.decode([token])}>"
    return program.tokenizer.decode([token])


def _sample(program: CompiledGuidanceProgram, allowed: Sequence[int], n: int) -> list[str]:
    """Up to ``n`` allowed tokens as text: EOS first if allowed, then the shortest (they show the
    characters allowed, e.g. ``" A"``, ``" B"`` rather than ``" Stelle"``), ties by id."""
    if n <= 0 or not allowed:
        return []
    ends = program.eos_token_ids
    picked: list[int] = [t for t in allowed if t in ends][:n]
    token_bytes = program.tokenizer.token_bytes
    rest = (t for t in allowed if t not in ends and not program.tokenizer.is_special(t))
    picked += heapq.nsmallest(n - len(picked), rest, key=lambda t: (len(token_bytes(t)), t))
    return [_token_text(program, t) for t in picked]


def _advance(state: GuidanceState, tokens: Sequence[int]) -> int | None:
    """Accept ``tokens`` in chunks under the per-call limit; the index of a refused one, or None."""
    limit = state.program.limits.max_tokens_per_accept
    for start in range(0, len(tokens), limit):
        chunk = tokens[start : start + limit]
        try:
            state.advance(chunk)
        except TokenRejected as e:
            if e.index:
                state.advance(chunk[: e.index])
            return start + e.index
    return None


def check_text(program: CompiledGuidanceProgram, text: str, sample: int = 8) -> CheckResult:
    """Check one text against a program (a fresh state), as a worker's session would see it."""
    tok = program.tokenizer
    ids = tok.encode(text)
    state = program.create_state()
    result = CheckResult(text=text, verdict="accepted", tokens=len(ids), accepted_tokens=len(ids))
    try:
        refused = _advance(state, ids)
        if refused is None and state.is_accepting():
            state.advance([program.eos_token_id])
            result.variables = state.variables
            return result
    except GuidanceError as e:
        # The engine gave up (a parser limit at one step): not the text's fault, nor accepted.
        result.verdict = "error"
        result.reason = str(e)
        result.accepted_tokens = len(state.tokens)
        result.offset, result.line, result.column = _where(text, tok.decode_bytes(state.tokens))
        return result
    allowed = state.get_allowed_tokens()
    result.allowed = len(allowed)
    result.sample = _sample(program, allowed, sample)
    result.variables = state.variables
    result.accepted_tokens = len(state.tokens)
    prefix = tok.decode_bytes(ids[: len(state.tokens)])
    result.offset, result.line, result.column = _where(text, prefix)
    if refused is None:
        result.verdict = "incomplete"
        result.reason = "the constraint is not complete there: EOS is not allowed yet"
        return result
    result.verdict = "rejected"
    result.token = ids[refused]
    result.token_text = _token_text(program, ids[refused])
    result.token_offset = result.offset
    if allowed and program.eos_token_ids.issuperset(allowed):
        result.reason = "the constraint is complete before this token: only EOS may follow"
        return result
    result.reason = "the constraint does not allow this token here"
    if len(prefix.decode("utf-8", errors="ignore").encode("utf-8")) == len(prefix):
        # The token starts on a character boundary: find the first character refused, feeding
        # the token's characters one by one (the token may be refused for its tail only).
        probe = state.fork()
        end = result.offset + len(result.token_text) + 1
        for i in range(result.offset, min(end, len(text))):
            if not probe.accept_tokens(tok.encode(text[i])):
                result.offset, result.line, result.column = _where(text, text[:i].encode("utf-8"))
                break
    return result


# -- output ---------------------------------------------------------------------------------------


def _quote(text: str, limit: int = 80) -> str:
    shown = json.dumps(text, ensure_ascii=False)
    return shown if len(shown) <= limit else shown[: limit - 4] + '..."'


def _report(label: str, r: CheckResult, out: TextIO) -> None:
    head = f"{label}: " if label else ""
    if r.verdict == "accepted":
        out.write(f"{head}accepted: {_quote(r.text)} ({r.tokens} tokens, then EOS)\n")
    else:
        out.write(f"{head}{r.verdict}: {_quote(r.text)}\n")
        where = f"line {r.line}, column {r.column} (character {r.offset})"
        if r.verdict == "rejected":
            offset = r.offset or 0
            char = r.text[offset : offset + 1]
            out.write(f"  at {where}" + (f": {_quote(char)}" if char else "") + "\n")
            out.write(
                f"  token {r.accepted_tokens + 1} of {r.tokens}, id {r.token} {_quote(r.token_text or '')} "
                f"(from character {r.token_offset}): {r.reason}\n"
            )
        else:
            out.write(f"  at {where}, the end of the text: {r.reason}\n")
        if r.allowed is not None:
            examples = ", ".join(_quote(s, 24) for s in r.sample)
            there = f"at character {r.token_offset}" if r.token_offset is not None else "there"
            plural = "" if r.allowed == 1 else "s"
            e_g = f", e.g. {examples}" if examples else ""
            out.write(f"  allowed {there}: {r.allowed} token{plural}{e_g}\n")
    if r.variables:
        out.write(f"  variables: {json.dumps(r.variables, ensure_ascii=False)}\n")


# -- command line ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="guidance-server check",
        description="Check texts against a constraint, in-process (no server): accepted, or where and why "
        "rejected, and the captured variables. Exit status 0: all accepted; 1: some rejected; 2: bad "
        "constraint or usage.",
    )
    p.add_argument(
        "constraint",
        type=Path,
        help="the constraint file: "
        + ", ".join(f"{kind.label} ({' '.join(kind.suffixes)})" for kind in KINDS.values() if kind.suffixes)
        + "; another kind with --kind",
    )
    names = sorted(kind_by_name())
    p.add_argument(
        "--kind",
        choices=names,
        metavar="KIND",
        help="the constraint's kind, whatever its file name: " + ", ".join(names),
    )
    texts = p.add_argument_group("texts (at least one)")
    texts.add_argument("--text", action="append", default=[], help="a text to check (repeatable)")
    texts.add_argument(
        "--jsonl", metavar="FILE", help='texts, one per line: a JSON string or {"text": ...} ("-": stdin)'
    )
    p.add_argument("--vars", type=Path, metavar="FILE", help="compile-time variables, a JSON object (templates)")
    p.add_argument(
        "--tokenizer", default="default", help="a tokenizer.json path (default: the embedded tekken tokenizer)"
    )
    p.add_argument("--whitespace", type=int, metavar="N", help="JSON schemas: allow up to N whitespace characters")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option of the kind, its value JSON or else a string (repeatable), e.g. tool_format=llama3",
    )
    p.add_argument("--sample", type=int, default=8, metavar="N", help="allowed tokens shown at a rejection (8)")
    p.add_argument("--json", action="store_true", help="print one JSON object per text instead of prose")
    return p


def _compile(args: argparse.Namespace) -> CompiledGuidanceProgram:
    kind, source = read_constraint(args.constraint, kind_by_name()[args.kind] if args.kind else None)
    variables = _read_variables(args.vars)
    if variables and not KINDS[kind].variables:
        raise UsageError("--vars applies to templates only")
    options = _options(args.option)
    if args.whitespace is not None:
        if "whitespace" not in KINDS[kind].options.names():
            raise UsageError("--whitespace applies to JSON schemas only")
        options["whitespace"] = args.whitespace
    try:
        tokenizer = load_default_tokenizer() if args.tokenizer == "default" else load_tokenizer(args.tokenizer)
    except GuidanceError as e:
        raise UsageError(f"--tokenizer: {e.detail}") from None
    backend = GuidanceBackend(tokenizer, max_cache_size=1)
    program, _ = backend.compile(spec_from_kwargs(kind, source, variables, options))
    return program


def _options(given: Sequence[str]) -> dict[str, Any]:
    """``--option NAME=VALUE`` flags as options: a value that is JSON is that value, else the string."""
    options: dict[str, Any] = {}
    for item in given:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--option {item[:64]!r}: give NAME=VALUE")
        try:
            options[name] = json.loads(text)
        except json.JSONDecodeError:
            options[name] = text
    return options


def _constraint_error(path: Path, kind: ProgramKind | None, e: GuidanceError) -> str:
    """``path:line:column: code: detail`` when the error says where (templates, Lark grammars)."""
    detail = e.detail
    if isinstance(e, TemplateError) and e.line is not None:
        detail = detail.removesuffix(f" (line {e.line}, column {e.column})")
        return f"{path}:{e.line}:{e.column}: {e.code}: {detail}"
    at = re.match(r"at (\d+)\((\d+)\): ", detail)
    if at and kind == "grammar":
        return f"{path}:{at[1]}:{at[2]}: {e.code}: {detail[at.end() :]}"
    line = e.extra.get("line")
    if line is not None and kind == "gbnf":
        column = e.extra.get("column")
        return f"{path}:{line}:{column}: {e.code}: {detail}" if column else f"{path}:{line}: {e.code}: {detail}"
    return f"{path}: {e.code}: {detail}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``guidance-server check``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.text and args.jsonl is None:
        parser.error("give a text: --text TEXT or --jsonl FILE")
    err = sys.stderr
    try:
        program = _compile(args)
    except UsageError as e:
        err.write(f"guidance-server check: {e}\n")
        return EXIT_USAGE
    except (GuidanceError, RecursionError) as e:
        if isinstance(e, RecursionError):
            e = LimitExceeded("the constraint is nested too deeply", "max_nesting_depth")
        kind = kind_by_name()[args.kind] if args.kind else kind_by_suffix().get(args.constraint.suffix.lower())
        err.write(f"guidance-server check: {_constraint_error(args.constraint, kind, e)}\n")
        return EXIT_USAGE
    labelled = len(args.text) > 1 or args.jsonl is not None
    inputs = [(f"--text {i}" if labelled else "", t) for i, t in enumerate(args.text, 1)]
    accepted = rejected = errors = 0
    out = sys.stdout
    try:
        items = iter(inputs) if args.jsonl is None else _chain(inputs, _read_jsonl(args.jsonl))
        for label, text in items:
            result = check_text(program, text, args.sample)
            if args.json:
                out.write(json.dumps({"input": label or None, **asdict(result)}, ensure_ascii=False) + "\n")
            else:
                _report(label, result, out)
            if result.ok:
                accepted += 1
            elif result.verdict == "error":
                errors += 1
            else:
                rejected += 1
    except UsageError as e:
        out.flush()
        err.write(f"guidance-server check: {e}\n")
        return EXIT_USAGE
    total = accepted + rejected + errors
    if not args.json and total > 1:
        out.write(f"{accepted} of {total} accepted\n")
    if errors:
        return EXIT_USAGE
    return EXIT_REJECTED if rejected else EXIT_ACCEPTED


def _chain(first: list[tuple[str, str]], rest: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    yield from first
    yield from rest

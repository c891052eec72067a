"""Each kind's options as a typed model: a frozen dataclass whose fields are the options.

A request gives a kind's options as a JSON object (the compile body's ``options``, and for some
kinds fields of the body itself); :meth:`KindOptions.parse` checks that object's names and values
and returns the typed model. Each field's metadata says what the option does (``doc``: the
HTTP schema's description), whether a request may give it (``internal``: only set by a request
form lowered to the kind) and, for a required option, what to say when it is missing. The service
derives its HTTP schema for the options from these models (``service/schemas.py``).

A bad name or value is a :class:`~core.errors.GrammarError` (400), as for the constraint itself:
the values are the request's, checked here rather than by the HTTP layer so every engine's request
forms get the same answers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_type_hints

from core.errors import GrammarError
from core.jsonschema import DEFAULT_FORMAT_MODE, FORMAT_MODES, MAX_WHITESPACE, FormatMode

if TYPE_CHECKING:
    from typing import Self  # annotations only: core also runs on Python 3.10

__all__ = ["JsonSchemaOptions", "KindOptions", "OptionField", "option"]

_REQUIRED: Any = dataclasses.MISSING
_NAMES: dict[type[KindOptions], frozenset[str]] = {}


def option(doc: str, *, internal: bool = False, missing: str = "") -> dict[str, Any]:
    """The metadata of an options model's field (``field(default=..., metadata=option(...))``): what
    the option does, for a required one (no default) the error when it is missing, and whether it
    is ``internal`` (set by a lowering, never by a request)."""
    return {"doc": doc, "internal": internal, "missing": missing}


@dataclass(frozen=True)
class OptionField:
    """One option a request may give: its name, its type on the wire, its default and what it does."""

    name: str
    type: Any
    default: Any
    doc: str


@dataclass(frozen=True)
class KindOptions:
    """The options of a kind that takes none; the base of every kind's options model."""

    @classmethod
    def request_fields(cls) -> tuple[OptionField, ...]:
        """The options a request may give, in declaration order (the internal ones left out)."""
        hints = get_type_hints(cls)
        return tuple(
            OptionField(f.name, hints[f.name], None if f.default is _REQUIRED else f.default, f.metadata["doc"])
            for f in dataclasses.fields(cls)
            if not f.metadata["internal"]
        )

    @classmethod
    def names(cls) -> frozenset[str]:
        """The names of the options a request may give."""
        # Read on every compile request: worked out once per model.
        names = _NAMES.get(cls)
        if names is None:
            names = _NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls) if not f.metadata["internal"])
        return names

    @classmethod
    def check_names(cls, options: Mapping[str, Any], kind: str) -> None:
        """Refuse an option a request of ``kind`` may not give.

        Raises:
            GrammarError: an unknown option (all of them named).
        """
        unknown = set(options) - cls.names()
        if unknown:
            raise GrammarError(f"unknown option(s) for {kind}: {', '.join(sorted(unknown))}")

    @classmethod
    def parse(cls, options: Mapping[str, Any], kind: str) -> Self:
        """The typed options of a spec of ``kind`` (internal options allowed: a lowering set them).

        Raises:
            GrammarError: an unknown option, a required one missing, or a bad value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise GrammarError(f"unknown option(s) for {kind}: {', '.join(sorted(unknown))}")
        for f in dataclasses.fields(cls):
            if f.default is _REQUIRED and options.get(f.name) is None:
                raise GrammarError(f.metadata["missing"])
        return cls(**options)


@dataclass(frozen=True)
class JsonSchemaOptions(KindOptions):
    """A JSON schema's options (and those of the request forms that lower to one)."""

    whitespace: int | None = field(
        default=None,
        metadata=option(
            f"bounded whitespace instead of compact output: at most this many whitespace characters "
            f"between JSON tokens, 0 to {MAX_WHITESPACE}."
        ),
    )
    formats: FormatMode = field(
        default=DEFAULT_FORMAT_MODE,
        metadata=option(
            "`assert`, the default: formats with an exact definition are enforced; `annotate`: every `format` "
            "is an annotation, as JSON Schema 2020-12 has it."
        ),
    )
    # Set by a form that lowers to a JSON schema (vLLM's whitespace_pattern), not a request option.
    whitespace_pattern: str | None = field(
        default=None, metadata=option("the regex of the whitespace between JSON tokens.", internal=True)
    )

    def __post_init__(self) -> None:
        ws: object = self.whitespace
        if ws is not None and (not isinstance(ws, int) or isinstance(ws, bool) or not 0 <= ws <= MAX_WHITESPACE):
            raise GrammarError(f"option whitespace must be an integer from 0 to {MAX_WHITESPACE}")
        if self.formats not in FORMAT_MODES:
            raise GrammarError(f"option formats must be one of {', '.join(FORMAT_MODES)}")

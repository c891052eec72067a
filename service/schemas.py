"""Request and response bodies of the HTTP API (they define ``openapi.yaml``).

Requests are strict (a string is not a number, unknown fields are refused: 422), so a typo in
a worker's request fails loudly instead of being ignored.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from core.kinds import KINDS, Kind
from core.options import OptionField
from core.reasoning import REASONING_FAMILIES
from core.spec import ProgramKind
from guidance_client.wire import MaskEncoding

__all__ = [
    "AcceptRequest",
    "AcceptResponse",
    "CompileRequest",
    "CompileResponse",
    "DetokenizeRequest",
    "DetokenizeResponse",
    "EngineLimitNote",
    "MaskJSON",
    "PartialValue",
    "Problem",
    "ProgramFields",
    "RollbackRequest",
    "SessionCreateRequest",
    "SessionCreated",
    "SessionList",
    "SessionState",
    "SessionSummary",
    "Status",
    "StepItem",
    "StepRequest",
    "TokenId",
    "TokenizeRequest",
    "TokenizeResponse",
    "TokenizerInfo",
    "TokenizerList",
]

_STRICT = ConfigDict(extra="forbid", strict=True)

# Token ids are 32-bit in every inference engine and on the wire (int32 mask words). A JSON integer past
# that range is malformed (422 validation-error) rather than an id to quote back at length: a
# 4,000-digit integer would otherwise be echoed whole in the problem's detail. Ids inside the
# range but outside the vocabulary are 422 token-out-of-range, with their index.
TOKEN_ID_MIN, TOKEN_ID_MAX = -(2**31), 2**31 - 1
TokenId = Annotated[StrictInt, Field(ge=TOKEN_ID_MIN, le=TOKEN_ID_MAX)]


class _ProgramBase(BaseModel):
    """The fields of a program that every kind takes; the kinds' own come from :data:`core.kinds.KINDS`."""

    model_config = _STRICT
    kinds: ClassVar[Mapping[ProgramKind, Kind]] = KINDS

    if TYPE_CHECKING:  # the fields program_fields makes (after the kinds', as the schema lists them)
        reasoning: str | dict[str, Any] | None
        variables: dict[str, Any]
        tokenizer: str
        options: dict[str, Any]

    def kinds_given(self) -> list[ProgramKind]:
        """The kinds whose field the body gives."""
        return [name for name in self.kinds if getattr(self, name) is not None]

    def kind_and_source(self) -> tuple[ProgramKind, Any]:
        """The body's one kind and its source."""
        (kind,) = self.kinds_given()
        return kind, getattr(self, kind)

    def kind_options(self) -> dict[str, Any]:
        """The kind's options: ``options``, and the fields only its kind takes (``tools``' ``tool_format`` ...)."""
        options = dict(self.options)
        for kind in self.kinds.values():
            options.update({k: getattr(self, k) for k in sorted(kind.fields) if getattr(self, k) is not None})
        return options

    @model_validator(mode="after")
    def _own_fields_with_their_kind(self) -> _ProgramBase:
        for name, kind in self.kinds.items():
            stray = [k for k in sorted(kind.fields) if getattr(self, k) is not None]
            if stray and getattr(self, name) is None:
                raise ValueError(f"{', '.join(stray)} apply to {name} only")
        return self


def options_schema(kinds: Mapping[ProgramKind, Kind]) -> dict[str, Any]:
    """The JSON schema of the body's ``options``: each option a request may give (from the kinds' typed
    options models, :mod:`core.options`), saying which kinds take it."""
    takers: dict[str, list[str]] = {}
    options: dict[str, OptionField] = {}
    for kind in kinds.values():
        for option in kind.options.request_fields():
            options.setdefault(option.name, option)
            takers.setdefault(option.name, []).append(kind.name)
    properties: dict[str, dict[str, Any]] = {}
    for name, option in options.items():
        schema = TypeAdapter(option.type).json_schema()
        if option.default is not None:
            schema["default"] = option.default
        properties[name] = {**schema, "description": f"{', '.join(takers[name])}: {option.doc}"}
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "description": "The kind's options: each kind takes the ones that name it (another is 400 `grammar-invalid`).",
    }


def program_fields(kinds: Mapping[ProgramKind, Kind]) -> type[_ProgramBase]:
    """The fields describing a program (shared by compile and session bodies), derived from ``kinds``:
    one per kind (its source), the fields only a kind takes, and the kinds' ``options``.

    The options are checked by their kind's model in ``core`` (a bad name or value is 400
    ``grammar-invalid``, as for the constraint); the HTTP schema describes them from the same models.
    """
    fields: dict[str, Any] = {
        name: (kind.source_type | None, Field(default=None, description=kind.doc)) for name, kind in kinds.items()
    }
    for kind in kinds.values():
        if kind.body_fields:
            for option in kind.options.request_fields():
                description = f"With `{kind.name}`: {option.doc}"
                fields[option.name] = (option.type | None, Field(default=None, description=description))
    fields["reasoning"] = (
        str | dict[str, Any] | None,
        Field(
            default=None,
            description="A think block of free text before the constraint, captured as `reasoning`: a family ("
            + ", ".join(REASONING_FAMILIES)
            + ') or `{"start", "end", "max_tokens"?}`.',
        ),
    )
    fields["variables"] = (
        dict[str, Any],
        Field(default_factory=dict, description="Compile-time variables (templates only)."),
    )
    fields["tokenizer"] = (str, Field(default="default", description="Name of the vocabulary to compile for."))
    fields["options"] = (Annotated[dict[str, Any], WithJsonSchema(options_schema(kinds))], Field(default_factory=dict))
    model = create_model(
        "ProgramFields",
        __base__=_ProgramBase,
        __doc__="The fields describing a program (shared by compile and session bodies).",
        **fields,
    )
    model.kinds = kinds
    return model


if TYPE_CHECKING:
    ProgramFields = _ProgramBase
else:
    ProgramFields = program_fields(KINDS)

_KIND_LIST = ", ".join(KINDS)


class CompileRequest(ProgramFields):
    """Exactly one kind (one of the fields named for a kind)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"description": f"Exactly one kind: {', '.join(f'`{k}`' for k in KINDS)}."},
    )

    open_session: bool = Field(default=False, description="Also open a session on the program.")

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> CompileRequest:
        given = self.kinds_given()
        if len(given) != 1:
            raise ValueError(
                f"exactly one of {_KIND_LIST} is required" + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class EngineLimitNote(BaseModel):
    limit: str = Field(description="The setting that bounds it (e.g. `step_lexer_fuel`, `max_lexer_states`).")
    detail: str

    @classmethod
    def of(cls, note: Mapping[str, str] | None) -> EngineLimitNote | None:
        """The note of a program's ``engine_limit`` (None: it never met one)."""
        return None if note is None else cls(limit=note["limit"], detail=note["detail"])


_ENGINE_LIMIT = (
    "Set once a session of this program reached an llguidance limit mid-generation (413 "
    "`engine-limit` to that request): new sessions may meet it too. Null otherwise."
)


class CompileResponse(BaseModel):
    program_id: str = Field(description="Content hash of the program: equal on every replica.")
    cached: bool = Field(
        description="The program came from the cache (or a concurrent compile) and, with API keys, this key "
        "compiled it before: another key's compiles are never revealed (answered as a compile)."
    )
    vocab_size: int
    mask_words: int = Field(description="int32 words per mask: ceil(vocab_size / 32).")
    variables: list[str] = Field(
        description="Names the program captures (template slots; `tool_calls` and `content` for tools; `reasoning`)."
    )
    compile_ms: float = Field(description="Time this request spent compiling or waiting for the program.")
    session_id: str | None = Field(default=None, description="With `open_session`: the new session.")
    ignored: list[str] = Field(
        default_factory=list,
        description="What the constraint asks that is compiled as an annotation only, not enforced: "
        'JSON-schema formats without an exact definition, e.g. `format "path" at #/properties/p`.',
    )
    engine_limit: EngineLimitNote | None = Field(default=None, description=_ENGINE_LIMIT)


class SessionCreateRequest(ProgramFields):
    """Either `program_id` (of a cached program) or a compile body."""

    program_id: str | None = Field(
        default=None,
        description="A program compiled before (404 if not cached or, with API keys, compiled by another key only).",
    )

    @model_validator(mode="after")
    def _program_or_spec(self) -> SessionCreateRequest:
        given = self.kinds_given()
        if self.program_id is not None:
            if given:
                raise ValueError("give either program_id or a program, not both")
        elif len(given) != 1:
            raise ValueError(f"give program_id, or exactly one of {_KIND_LIST}")
        return self


class SessionCreated(BaseModel):
    session_id: str
    program_id: str
    engine_limit: EngineLimitNote | None = Field(default=None, description=_ENGINE_LIMIT)


class AcceptRequest(BaseModel):
    model_config = _STRICT

    tokens: list[TokenId] = Field(description="Token ids sampled, in order.")
    dry_run: bool = Field(
        False,
        description="Validate only: `accepted` is the length of the longest allowed prefix and the "
        "session does not move (no 409).",
    )
    partial: bool = Field(
        False,
        description="Also answer `partial`: every capture so far, the ones still being generated with their "
        "text so far (computed only when asked).",
    )


class PartialValue(BaseModel):
    """A capture while it is generated (see `core/partial.py`): its value so far only grows."""

    value: Any = Field(description="The text so far; inside a repeat, a list growing item by item.")
    complete: bool = Field(description="The value is final (a list: no more items will come).")
    complete_items: int | None = Field(None, description="Lists: how many leading items are final.")
    parsed: Any = Field(None, description="json slots: the JSON value so far (`null` until something shows).")
    final: list[Any] | None = Field(
        None, description="json slots: JSON pointers of the parts of `parsed` that are final."
    )


class AcceptResponse(BaseModel):
    accepted: int = Field(description="Tokens accepted (all of them; with `dry_run`, the valid prefix).")
    terminated: bool = Field(description="EOS has been accepted.")
    eos_token_id: int | None = Field(None, description="Once terminated: the end token that ended the session.")
    accepting: bool = Field(description="The text so far is complete: EOS is allowed now.")
    forced_tokens: list[int] = Field(description="Tokens the constraint forces next (may be empty).")
    variables: dict[str, Any] = Field(description="Captured values so far.")
    partial: dict[str, PartialValue] | None = Field(None, description="With `partial`: every capture so far.")


class RollbackRequest(BaseModel):
    model_config = _STRICT

    tokens: StrictInt = Field(ge=0, le=TOKEN_ID_MAX, description="How many of the last accepted tokens to undo.")


class SessionState(BaseModel):
    program_id: str
    tokens: list[int]
    text: str
    variables: dict[str, Any]
    terminated: bool
    accepting: bool
    partial: dict[str, PartialValue] | None = Field(None, description="With `?partial=true`: every capture so far.")


class SessionSummary(BaseModel):
    session_id: str
    program_id: str
    kind: str = Field(description="The program's kind (the field of its compile body): " + _KIND_LIST + ".")
    tokens: int
    age_seconds: float
    idle_seconds: float
    terminated: bool
    watchers: int = Field(description="Event streams open on it.")


class SessionList(BaseModel):
    sessions: list[SessionSummary]


class MaskJSON(BaseModel):
    mask: str = Field(description="Base64 of the mask's little-endian int32 words.")
    mask_words: int
    vocab_size: int
    terminated: bool


class TokenizeRequest(BaseModel):
    model_config = _STRICT

    text: str
    tokenizer: str = "default"
    special: bool = Field(
        False,
        description="Special-token text (`[TOOL_CALLS]`, `<|eot_id|>`) becomes the control token; else plain text.",
    )


class TokenizeResponse(BaseModel):
    tokens: list[int]


class DetokenizeRequest(BaseModel):
    model_config = _STRICT

    tokens: list[TokenId]
    tokenizer: str = "default"


class DetokenizeResponse(BaseModel):
    text: str


class TokenizerInfo(BaseModel):
    tokenizer: str = Field(description="The name to pass as `tokenizer`.")
    digest: str = Field(description="SHA-256 of the vocabulary and its settings (end tokens, BOS): its identity.")
    vocab_size: int
    eos_token_ids: list[int] = Field(description="The end tokens: any of them ends a constraint.")
    bos_token_id: int | None


class VocabularyCheckRequest(BaseModel):
    """What a worker knows of its model's vocabulary; each part is checked when given."""

    model_config = _STRICT

    vocab_size: StrictInt | None = Field(
        None, ge=1, le=TOKEN_ID_MAX, description="The width of the model's logits (at least the vocabulary)."
    )
    eos_token_ids: list[TokenId] | None = Field(
        None, max_length=1024, description="The model's end tokens (the same set is required)."
    )
    tokens: dict[str, str] | None = Field(
        None,
        max_length=65_536,
        description=(
            "A sample of the model's tokens: decimal id -> base64 of the token's bytes (a control token: its name)."
        ),
    )

    @field_validator("tokens")
    @classmethod
    def _ids_and_base64(cls, tokens: dict[str, str] | None) -> dict[str, str] | None:
        for key, value in (tokens or {}).items():
            if not (key.isascii() and key.isdigit() and len(key) <= 10):
                raise ValueError(f"{key[:32]!r} is not a decimal token id")
            try:
                base64.b64decode(value, validate=True)
            except (ValueError, binascii.Error):
                raise ValueError(f"token {key}: not base64") from None
        return tokens

    def token_bytes(self) -> dict[int, bytes] | None:
        """The sample, decoded (valid by construction)."""
        if self.tokens is None:
            return None
        return {int(key): base64.b64decode(value) for key, value in self.tokens.items()}


class VocabularyCheck(BaseModel):
    tokenizer: str
    digest: str
    aligned: bool = Field(description="Nothing differs.")
    differences: list[str] = Field(description="Each difference found, in words.")


class TokenizerList(BaseModel):
    tokenizers: list[TokenizerInfo]


class Status(BaseModel):
    status: str


class Problem(BaseModel):
    """An RFC 9457 problem document (`application/problem+json`), the body of every error."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="`urn:guidance:problem:<code>`.")
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine-readable code, e.g. `token-rejected`.")
    index: int | None = Field(default=None, description="token-rejected, token-out-of-range: position in the request.")
    token: int | None = Field(default=None, description="token-rejected: the refused token.")
    line: int | None = Field(default=None, description="template-invalid, grammar-invalid (GBNF): 1-based line.")
    column: int | None = Field(
        default=None, description="template-invalid, grammar-invalid (regex, GBNF): 1-based column."
    )
    pointer: str | None = Field(
        default=None,
        description="schema-invalid, form-invalid: RFC 6901 pointer into the schema (or the form's object) "
        "where the fault is, when known.",
    )
    limit: str | None = Field(default=None, description="limit-exceeded: the limit's name.")
    location: str | None = Field(default=None, description="unicode-invalid: `body`, `path` or `query`.")
    field: str | None = Field(
        default=None,
        description=(
            'unicode-invalid: an RFC 6901 pointer into the body (`""`: the whole body), the query '
            "parameter's name, or the path."
        ),
    )
    offset: int | None = Field(default=None, description="unicode-invalid: byte offset of the fault in the body.")
    retry_after: int | None = Field(default=None, description="429/503: seconds to wait (also the Retry-After header).")
    errors: list[dict[str, Any]] | None = Field(default=None, description="validation-error: what is wrong, where.")


class StepItem(BaseModel):
    """One session of a ``/step`` batch."""

    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(description="The session to advance.")
    tokens: list[TokenId] = Field(default_factory=list, description="Tokens sampled for it, in order (may be empty).")
    draft_tokens: list[TokenId] | None = Field(
        None,
        description="Draft tokens: one extra mask row after each (speculative decoding); the session does not move.",
    )


class StepRequest(BaseModel):
    """A ``/step`` batch (its answer is binary: see ``service/routes/step.py``)."""

    model_config = ConfigDict(extra="forbid")

    sessions: list[StepItem] = Field(description="The batch, in the order the masks come back.")
    variables: bool | Literal["partial"] = Field(
        False,
        description=(
            'Include each session\'s captured variables in its status; `"partial"` also includes '
            "`partial`: every capture so far, the ones still being generated with their text so far "
            "(computed only when asked)."
        ),
    )
    forced_tokens: bool = Field(
        True,
        description=(
            "Include each session's forced tokens (what the constraint fixes next) in its status; "
            "`false` leaves them out and skips computing them (one more llguidance call per session)."
        ),
    )
    mask_encoding: MaskEncoding = Field(
        "dense", description="`dense`: packed bitmask rows; `blocks`: block-sparse (see `x-step-layout`)."
    )

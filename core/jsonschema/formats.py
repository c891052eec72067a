"""``format`` in JSON schemas: asserted where an exact definition exists, an annotation elsewhere.

Under JSON Schema 2020-12 ``format`` is an annotation unless a validator opts into asserting it,
and a format the validator does not know constrains nothing. llguidance asserts the formats it
knows (:data:`ENGINE_FORMATS`) and refuses the whole schema on any other (``Unknown format:
path``). :func:`rewrite_format` decides, node by node:

* ``assert`` mode (the default, :data:`DEFAULT_FORMAT_MODE`), as format-checking validators do:
  llguidance's own formats stay as they are; formats with an exact textual definition become a
  ``pattern`` or numeric bounds (:data:`FORMAT_PATTERNS`, :data:`INTEGER_FORMATS`); the formats of
  the 2020-12 vocabulary that have none here (:data:`INEXACT_FORMATS`) stay too, so the schema is
  refused (asserting them loosely would let invalid values through; ``annotate`` compiles them);
  every other format (OpenAPI's ``float``, ``double``, ``int64``, names no specification defines
  such as ``path`` or ``url``) is removed as the annotation it is, and reported;
* ``annotate`` mode: every ``format`` is removed and reported (what 2020-12 does by default).

Why those have no exact definition: ``regex`` (ECMA-262 regexes are not a regular language),
``idn-email``/``idn-hostname`` (IDNA mapping tables), ``uri-template`` (not written here); and the
annotations: ``float``/``double`` (OpenAPI defines no range check: every JSON number reads as a
double), ``int64`` (llguidance reads numeric bounds as doubles, so ``-2**63``/``2**63 - 1`` are
not exact bounds there).
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = [
    "DEFAULT_FORMAT_MODE",
    "ENGINE_FORMATS",
    "FORMAT_MODES",
    "FORMAT_PATTERNS",
    "INEXACT_FORMATS",
    "INTEGER_FORMATS",
    "FormatMode",
    "format_hint",
    "rewrite_format",
]

FormatMode = Literal["assert", "annotate"]
#: The values of the per-request option ``formats``.
FORMAT_MODES: tuple[FormatMode, ...] = ("assert", "annotate")
#: Known formats are asserted unless a request asks for ``annotate``.
DEFAULT_FORMAT_MODE: FormatMode = "assert"

#: Formats llguidance 1.9.1 asserts itself (by its own regexes; ``unknown`` accepts any string).
ENGINE_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid", "uri", "unknown"}
)

#: Formats of the 2020-12 vocabulary with no exact definition here: refused in ``assert`` mode.
INEXACT_FORMATS = frozenset({"regex", "idn-email", "idn-hostname", "uri-template"})

# RFC 3986 / RFC 3987 building blocks (character-class contents; no doubled & - ~, which Rust's
# regex crate reads as class set operations).
_HEX = "[0-9A-Fa-f]"
_PCT = f"%{_HEX}{_HEX}"
_UNRESERVED = "A-Za-z0-9._~\\-"
_SUB_DELIMS = "!$&'()*+,;="
# RFC 3987 ucschar and iprivate, as class ranges.
_UCSCHAR = (
    "\\u00a0-\\ud7ff\\uf900-\\ufdcf\\ufdf0-\\uffef"
    + "".join(f"\\U{plane:04x}0000-\\U{plane:04x}fffd" for plane in range(1, 14))
    + "\\U000e1000-\\U000efffd"
)
_IPRIVATE = "\\ue000-\\uf8ff\\U000f0000-\\U000ffffd\\U00100000-\\U0010fffd"
_DEC_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = f"{_DEC_OCTET}(?:\\.{_DEC_OCTET}){{3}}"


def _ipv6() -> str:
    """RFC 3986's ``IPv6address``: its nine alternatives, written out."""
    h16 = f"{_HEX}{{1,4}}"
    ls32 = f"(?:{h16}:{h16}|{_IPV4})"

    def pieces(n: int) -> str:  # n times "h16:"
        return "" if n == 0 else f"(?:{h16}:){{{n}}}"

    def upto(n: int) -> str:  # [ *n( h16 ":" ) h16 ]
        return f"(?:(?:{h16}:){{0,{n}}}{h16})?" if n >= 0 else ""

    alternatives = [
        f"{pieces(6)}{ls32}",
        f"::{pieces(5)}{ls32}",
        f"(?:{h16})?::{pieces(4)}{ls32}",
        f"{upto(1)}::{pieces(3)}{ls32}",
        f"{upto(2)}::{pieces(2)}{ls32}",
        f"{upto(3)}::{h16}:{ls32}",
        f"{upto(4)}::{ls32}",
        f"{upto(5)}::{h16}",
        f"{upto(6)}::",
    ]
    return "(?:" + "|".join(alternatives) + ")"


def _reference(extra_unreserved: str, extra_query: str, absolute: bool, relative: bool) -> str:
    """An anchored regex for RFC 3986 URIs/references, or RFC 3987 IRIs/references.

    ``extra_unreserved`` widens ``unreserved`` (``ucschar`` for IRIs); ``extra_query`` widens
    the query only (``iprivate``). ``absolute``/``relative``: which of the two forms match.
    """
    unreserved = _UNRESERVED + extra_unreserved
    pchar = f"(?:[{unreserved}{_SUB_DELIMS}:@]|{_PCT})"
    segment = f"{pchar}*"
    segment_nz = f"{pchar}+"
    segment_nz_nc = f"(?:[{unreserved}{_SUB_DELIMS}@]|{_PCT})+"
    query = f"(?:[{unreserved}{_SUB_DELIMS}:@/?{extra_query}]|{_PCT})*"
    fragment = f"(?:[{unreserved}{_SUB_DELIMS}:@/?]|{_PCT})*"
    scheme = "[A-Za-z][A-Za-z0-9+.\\-]*"
    userinfo = f"(?:[{unreserved}{_SUB_DELIMS}:]|{_PCT})*"
    ip_future = f"v{_HEX}+\\.[{_UNRESERVED}{_SUB_DELIMS}:]+"
    # IPv4address is a reg-name too (digits and dots are unreserved): no separate branch needed.
    reg_name = f"(?:[{unreserved}{_SUB_DELIMS}]|{_PCT})*"
    host = f"(?:\\[(?:{_ipv6()}|{ip_future})\\]|{reg_name})"
    authority = f"(?:{userinfo}@)?{host}(?::[0-9]*)?"
    abempty = f"(?:/{segment})*"
    path_absolute = f"/(?:{segment_nz}(?:/{segment})*)?"
    rootless = f"{segment_nz}(?:/{segment})*"
    noscheme = f"{segment_nz_nc}(?:/{segment})*"
    tail = f"(?:\\?{query})?(?:#{fragment})?"
    forms = []
    if absolute:
        forms.append(f"{scheme}:(?://{authority}{abempty}|{path_absolute}|{rootless}|){tail}")
    if relative:
        forms.append(f"(?://{authority}{abempty}|{path_absolute}|{noscheme}|){tail}")
    return "^(?:" + "|".join(forms) + ")$"


_JSON_POINTER = "(?:/(?:[^~/]|~[01])*)*"

#: Formats with an exact regular definition, as anchored patterns (Rust and Python syntax).
FORMAT_PATTERNS: dict[str, str] = {
    # OpenAPI: base64 (RFC 4648, section 4) with its padding.
    "byte": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
    "uri-reference": _reference("", "", absolute=True, relative=True),
    "iri": _reference(_UCSCHAR, _IPRIVATE, absolute=True, relative=False),
    "iri-reference": _reference(_UCSCHAR, _IPRIVATE, absolute=True, relative=True),
    "json-pointer": f"^{_JSON_POINTER}$",
    "relative-json-pointer": f"^(?:0|[1-9][0-9]*)(?:#|{_JSON_POINTER})$",
}

#: OpenAPI integer formats whose bounds llguidance reads exactly: (minimum, maximum).
INTEGER_FORMATS: dict[str, tuple[int, int]] = {"int32": (-(2**31), 2**31 - 1)}

_NOT_NUMBERS = ["null", "boolean", "string", "array", "object"]


def rewrite_format(schema: dict[str, Any], mode: FormatMode) -> tuple[dict[str, Any], str | None]:
    """The node without the ``format`` llguidance would refuse, and what was left out.

    Args:
        schema: one schema object (not modified).
        mode: ``assert`` or ``annotate`` (see the module docstring).

    Returns:
        ``(node, ignored)``: the node with its ``format`` kept, replaced by an exact equivalent,
        or removed; ``ignored`` is the format's name when it was removed as an annotation, else
        None. A ``format`` that is not a string is left for llguidance to refuse.
    """
    name = schema.get("format")
    if not isinstance(name, str):
        return schema, None
    if mode == "assert" and (name in ENGINE_FORMATS or name in INEXACT_FORMATS):
        return schema, None
    out = {k: v for k, v in schema.items() if k != "format"}
    if mode == "annotate":
        return out, name
    if name in FORMAT_PATTERNS:
        piece: dict[str, Any] = {"pattern": FORMAT_PATTERNS[name]}  # applies to strings only, as format does
    elif name in INTEGER_FORMATS:
        low, high = INTEGER_FORMATS[name]
        # a number must be an integer in range; other kinds are unconstrained, as by format
        piece = {"anyOf": [{"type": _NOT_NUMBERS}, {"type": "integer", "minimum": low, "maximum": high}]}
    else:
        return out, name
    if "allOf" in out and not isinstance(out["allOf"], list):
        return schema, None  # malformed: llguidance refuses it by name
    if name in INTEGER_FORMATS and out.get("type") == "integer":
        piece = {"minimum": low, "maximum": high}
    if "pattern" in piece and "pattern" not in out:
        out["pattern"] = piece["pattern"]
    else:
        out["allOf"] = list(out.get("allOf", [])) + [piece]
    return out, None


def format_hint(message: str) -> str:
    """llguidance's ``Unknown format: X`` message, with what to do when X is an inexact format."""
    for name in sorted(INEXACT_FORMATS):
        if f"Unknown format: {name}" in message:
            return (
                f"{message} (format {name!r} has no exact definition here, so it cannot be asserted; "
                'the option formats="annotate" compiles every format as an annotation)'
            )
    return message

"""Exact rewrites of JSON-schema constructs llguidance refuses into constructs it supports.

llguidance 1.9.1 refuses ``not``, ``if``/``then``/``else``, ``dependentRequired``,
``dependentSchemas``, draft-7 ``dependencies``, ``uniqueItems`` and ``oneOf`` whose branches it
cannot prove disjoint, and counts written as decimals (``"minItems": 1.0``). Many real schemas use
them in ways that have an exact equivalent in what llguidance does support. :func:`rewrite_schema`
makes those rewrites, and only those: the rewritten schema accepts exactly the same instances as
the original (JSON Schema 2020-12 semantics). Anything it cannot rewrite exactly is left in place,
so llguidance refuses the schema with its own message naming the keyword
(``Unimplemented keys: ["not"]``); nothing is dropped or approximated.

The rewrites (``A``, ``B`` are subschemas; ``¬A`` is an exact complement, see below):

* counts written as integral decimals (``minItems``, ``maxLength``, ... ``2.0``) become integers;
* keywords with no effect by the specification are removed: ``if`` without ``then``/``else``,
  ``then``/``else`` without ``if``, ``minContains``/``maxContains`` without ``contains``,
  ``contains`` with ``minContains: 0`` and no ``maxContains``, ``uniqueItems: false``,
  ``uniqueItems: true`` with ``maxItems`` at most 1, ``propertyNames`` that every string satisfies,
  ``unevaluatedProperties``/``unevaluatedItems`` that are ``true`` or have nothing left to evaluate;
* ``format`` per :mod:`core.jsonschema.formats`: an exact ``pattern`` or bounds, or removed as an
  annotation (reported in :attr:`RewriteReport.ignored`);
* ``uniqueItems: true`` over a small finite item domain (``enum``/``const``/boolean/null items,
  at most ``Limits.max_rewrite_unique_arrays`` arrays): an ``enum`` of the distinct-item arrays;
* ``minProperties``/``maxProperties`` beside optional ``properties`` (llguidance counts only when
  every listed property is required): an ``anyOf`` over the sets of optional properties present,
  each requiring its set and forbidding the others (at most ``Limits.max_rewrite_property_sets``);
* ``dependentRequired`` (and ``dependencies`` with a list) ``{a: [b, c]}``:
  ``anyOf: [{properties: {a: false}}, {required: [a, b, c]}]``;
* ``dependentSchemas`` (and ``dependencies`` with a schema) ``{a: S}``:
  ``anyOf: [{properties: {a: false}}, {allOf: [{required: [a]}, S]}]``;
* ``not: A``: ``¬A``;
* ``if: I, then: T, else: E``: ``anyOf: [{allOf: [I, T]}, {allOf: [¬I, E]}]`` (``I or E`` without
  ``then``; ``¬I or T`` without ``else``);
* ``oneOf``: ``anyOf`` when every pair of branches is provably disjoint (different types, different
  ``const``/``enum`` values, disjoint numeric or length ranges, a required property whose values are
  disjoint, with local ``$ref`` followed); value kinds that two branches accept whole (say, every
  non-object when the branches only constrain objects) are excluded with a ``type``; two closed
  objects with no property name in common share at most ``{}``, two arrays whose items must satisfy
  disjoint schemas at most ``[]``; otherwise ``anyOf`` of
  ``allOf: [A_i, ¬A_j...]`` over the branches that may overlap, when each of those has a complement;
* ``propertyNames``: a finite set of names (``const``/``enum``) lists them in ``properties`` with
  ``additionalProperties: false``; a ``pattern`` or length bounds alone become ``patternProperties``;
* ``unevaluatedProperties``/``unevaluatedItems`` when the node and its ``allOf``/``$ref`` evaluate a
  fixed set: ``additionalProperties`` (those names listed as ``true``) or ``items`` after a
  ``prefixItems`` of that length;
* a ``$ref`` to a schema that is ``false``, or provably accepts no value: ``false`` (llguidance
  refuses the whole schema on a referenced unsatisfiable schema, even where it only forbids an
  optional property).

Complements exist for: boolean schemas, ``type`` (not ``integer`` alone: "a number that is not an
integer" has no llguidance form), ``const``/``enum`` (strings by a regex of the finite set's
complement, numbers by open intervals, arrays and objects member by member), numeric bounds,
length and count bounds, ``pattern`` of the shapes :mod:`core.jsonschema.regex` complements
(``^[C]+$``, a sequence of one-character atoms anchored at either end such as ``^[ab]``),
``required``, ``properties`` (with complementable values), ``prefixItems``, ``items: false``,
``additionalProperties: false`` alone, ``allOf``/``anyOf``/``oneOf``/``not``/``if``/local ``$ref``
(by De Morgan), ``dependentRequired``/``dependentSchemas``. Not for other patterns, ``format``,
``multipleOf``, ``uniqueItems``, ``contains``, ``patternProperties``, ``propertyNames``, or recursive
references: a ``not`` or ``oneOf`` that needs one of those stays as it was and is refused.

Structure is kept where references may point: a rewrite that would move or remove a keyword is
skipped when a local JSON-pointer ``$ref`` points inside it (references are looked for under
unknown keywords too, and the schemas they point to there are rewritten), and every structural
rewrite is skipped in documents with anchors (``$anchor``, ``$dynamicAnchor``, ``$dynamicRef``,
``$recursiveRef``) or with a reference inside an embedded resource (``$id`` below the root), whose
resolution this module does not follow.

Where each piece lives: :mod:`~core.jsonschema.walk` (the walk and the order of the passes), one
module per group of passes (:mod:`~core.jsonschema.cleanup`, :mod:`~core.jsonschema.properties`,
:mod:`~core.jsonschema.unevaluated`, :mod:`~core.jsonschema.items`, :mod:`~core.jsonschema.logic`,
:mod:`~core.jsonschema.one_of`), each a function of the :class:`~core.jsonschema.context.RewriteContext`;
the analysis they share in :mod:`~core.jsonschema.refs`, :mod:`~core.jsonschema.analysis`,
:mod:`~core.jsonschema.facts`, :mod:`~core.jsonschema.complements` and :mod:`~core.jsonschema.regex`.
Every bound is a ``max_rewrite_*`` field of :class:`~core.limits.Limits`.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from core.jsonschema.build import serialised_size, too_big
from core.jsonschema.formats import DEFAULT_FORMAT_MODE, FormatMode
from core.jsonschema.walk import new_context, rewrite_node
from core.limits import Limits

__all__ = ["RewriteReport", "rewrite_schema", "rewrite_schema_report"]


@dataclass
class RewriteReport:
    """What :func:`rewrite_schema_report` changed: one short note per rewrite, by JSON pointer.

    ``ignored`` lists what was compiled as an annotation only (``format "path" at #/properties/p``),
    for the compile answer.
    """

    notes: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether any rewrite was made."""
        return bool(self.notes)

    def kinds(self) -> list[str]:
        """The distinct rewrite kinds applied (the note text before the first colon)."""
        return sorted({n.split(":", 1)[0] for n in self.notes})


def rewrite_schema(
    schema: Mapping[str, Any], formats: FormatMode = DEFAULT_FORMAT_MODE, *, limits: Limits | None = None
) -> dict[str, Any]:
    """An exactly equivalent schema with the constructs llguidance refuses rewritten where possible.

    Pure: the input is not modified (unchanged parts of the result may share objects with it).
    What cannot be rewritten exactly is left in place for llguidance to refuse by name.

    Args:
        schema: a JSON schema object.
        formats: ``assert`` or ``annotate``: what ``format`` does (see :mod:`core.jsonschema.formats`).
        limits: the bounds of the rewrites (the ``max_rewrite_*`` fields); default :class:`Limits`.

    Returns:
        The rewritten schema (a new dict).
    """
    return rewrite_schema_report(schema, formats, limits=limits)[0]


def rewrite_schema_report(
    schema: Mapping[str, Any],
    formats: FormatMode = DEFAULT_FORMAT_MODE,
    *,
    limits: Limits | None = None,
    keywords: Set[str] | None = None,
) -> tuple[dict[str, Any], RewriteReport]:
    """:func:`rewrite_schema`, also saying which rewrites were made and what was left as annotation.

    ``keywords``: every object key in ``schema``, when the caller has collected them (the rewrites
    then skip the passes that act on none of them).
    """
    if not isinstance(schema, Mapping):
        raise TypeError(f"rewrite_schema takes a schema object, not {type(schema).__name__}")
    limits = limits or Limits()
    ctx = new_context(schema, limits, formats, formats_only=False, keywords=keywords)
    out = rewrite_node(ctx, schema, (), 0)
    assert isinstance(out, dict)
    out = dict(out) if out is schema else out  # nothing to rewrite: still a new dict
    # Rewrites multiply in nested structures: past this size, only the formats are rewritten (the
    # size of the input is measured only when something was rewritten).
    growth, extra = limits.max_rewrite_growth, limits.max_rewrite_complement_chars
    if ctx.notes and too_big(out, growth * serialised_size(schema) + extra):
        ctx = new_context(schema, limits, formats, formats_only=True, keywords=keywords)
        out = rewrite_node(ctx, schema, (), 0)
        out = dict(out) if out is schema else out
        return out, RewriteReport(["too large to rewrite: #", *ctx.notes], ctx.ignored)
    return out, RewriteReport(ctx.notes, ctx.ignored)

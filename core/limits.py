"""Limits on what one client can make the engine do: one frozen object, passed in.

Every field has a documented default and unit. ``service/settings.py`` builds one from the
environment; the library itself never reads the environment. The static checks behind two of
them live beside the concepts they measure: :mod:`core.expansion` (``max_expansion``) and
:mod:`core.derivation` (``max_derivation_depth``).

The ``max_rewrite_*`` fields bound the work of the exact JSON-schema rewrites
(:mod:`core.jsonschema`). Unlike the others they never refuse anything: past one of them the
rewriter rewrites less, the result stays exact, and llguidance refuses by name what is left.
"""

from __future__ import annotations

from dataclasses import dataclass

import llguidance

__all__ = ["LEXER_STATE_BYTES", "Limits"]

LEXER_STATE_BYTES = 1024
"""What a lexer state is counted as: measured 560-590 bytes of C heap per state (tekken, regexes
whose states grow with every token walked); the docs' 1-2 kB for wide classes. 1 kB between."""


@dataclass(frozen=True)
class Limits:
    """Size, depth and work limits for compiling and running constraints.

    Attributes:
        max_source_bytes: largest template, JSON schema (serialised), Lark grammar or regex, in bytes.
        max_nesting_depth: deepest nesting of template blocks and of JSON schema objects/arrays.
        max_derivation_depth: longest acyclic chain of references the engine recurses through:
            subschemas reached by ``$ref`` or an applicator, Lark rules naming the next, embedded
            grammars (see :mod:`core.derivation`); each level costs the engine up to about 5 kB
            of native stack.
        max_repeat: largest ``min``/``max`` of a ``{{#repeat}}`` block.
        max_choices: most options in one ``select`` or ``choice`` list.
        max_tokens_per_accept: most tokens in one accept call.
        max_expansion: largest expanded literal, in characters: a string literal's length, a
            regex's literal characters with bounded repeats multiplied out (``a{1000}`` is 1000,
            ``(ab){10}{10}`` is 200), a Lark item repeated ``{n}`` times counts ``n`` (see
            :func:`expansion`).
        max_pattern_properties: most ``patternProperties`` in one JSON schema object: llguidance's
            compile of them grows about as their count to the fourth power (disjoint patterns
            with ``additionalProperties``: 0.4 s at 200, 5.7 s at 400), and real-world schemas
            hold at most 22.
        max_first_mask_ms: a compile computes the program's first mask (warming its caches); a
            program whose first mask takes longer than this, in milliseconds of the compile
            thread's CPU time (so that load from elsewhere does not count), is refused.
        max_compile_ms: CPU time a compile worker process may spend on one compile (schema
            rewrites, template compilation, validation), in milliseconds; past it the worker is
            stopped and the compile refused. Enforced where compiles run in worker processes
            (:mod:`core.workers`).
        max_mask_ms: most CPU time of one mask (or one computation of the forced tokens) of a
            session, in milliseconds of the computing thread's CPU time. llguidance's fuel does
            not bound every cost (a long regex behind a first character, ``[0-9](ab|ab){40000}``,
            costs seconds at every mask after it): a mask past this is refused with
            ``EngineLimitReached`` (``max_mask_ms``), its row zero, the state unchanged.
        max_items_in_row: llguidance: branching factor of one Earley row.
        initial_lexer_fuel: llguidance: fuel to build the lexer's regex ASTs (about 50k per ms).
        step_lexer_fuel: llguidance: lexer fuel for one mask (about 14k per ms).
        step_max_items: llguidance: Earley items for one mask (about 20k per ms).
        max_lexer_states: llguidance: lexer states per matcher (1 to 2 kB each).
        max_lexer_bytes: the most bytes one matcher's shared lexer may grow to while sessions
            walk, counted at :data:`LEXER_STATE_BYTES` a state: llguidance gets the smaller of
            ``max_lexer_states`` and this over that (see :attr:`lexer_states`). Met, the shared
            lexer is rebuilt (:mod:`core.shards`) and the old one freed with its last session.
        max_grammar_size: llguidance: symbols in the grammar's productions.
        max_rewrite_depth: deepest schema nesting the rewrites descend into, in subschema
            levels (deeper parts are compiled as written).
        max_rewrite_ref_hops: most ``$ref`` hops followed in one chain while proving facts,
            complements or what a node evaluates.
        max_rewrite_work: analysis steps (facts and complements computed) for one schema.
        max_rewrite_complement_chars: largest complement inserted for one keyword, in
            serialised characters.
        max_rewrite_growth: largest rewritten schema, as a multiple of the original's serialised
            size (plus ``max_rewrite_complement_chars``); past it only formats are rewritten.
        max_rewrite_const_depth: deepest nesting of arrays and objects in a ``const``/``enum``
            value whose complement is written.
        max_rewrite_pattern_atoms: longest sequence of one-character atoms in a ``pattern``
            whose complement is written.
        max_rewrite_unique_arrays: most arrays a ``uniqueItems`` rewrite may enumerate.
        max_rewrite_property_sets: most sets of present optional properties a
            ``minProperties``/``maxProperties`` rewrite may list.
        max_rewrite_one_of_analysed: most branches of a ``oneOf`` analysed at all (pairs grow
            as the square).
        max_rewrite_one_of_complemented: most branches of a ``oneOf`` rewritten with
            complements (each may need one complement per other branch).
        max_rewrite_one_of_negated: most branches of a ``oneOf`` whose complement is written
            (it lists every pair of branches).
    """

    max_source_bytes: int = 1_000_000
    max_nesting_depth: int = 64
    max_derivation_depth: int = 1000
    max_repeat: int = 10_000
    max_choices: int = 10_000
    max_tokens_per_accept: int = 4096
    max_expansion: int = 32_768
    max_pattern_properties: int = 64
    max_first_mask_ms: int = 1000
    max_compile_ms: int = 10_000
    max_mask_ms: int = 1000
    max_items_in_row: int = 2000
    initial_lexer_fuel: int = 1_000_000
    step_lexer_fuel: int = 200_000
    step_max_items: int = 50_000
    max_lexer_states: int = 250_000
    max_lexer_bytes: int = 64 * 1024 * 1024
    max_grammar_size: int = 500_000
    max_rewrite_depth: int = 100
    max_rewrite_ref_hops: int = 16
    max_rewrite_work: int = 100_000
    max_rewrite_complement_chars: int = 200_000
    max_rewrite_growth: int = 4
    max_rewrite_const_depth: int = 8
    max_rewrite_pattern_atoms: int = 100
    max_rewrite_unique_arrays: int = 256
    max_rewrite_property_sets: int = 256
    max_rewrite_one_of_analysed: int = 64
    max_rewrite_one_of_complemented: int = 12
    max_rewrite_one_of_negated: int = 4

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")

    @property
    def llguidance_stack_bytes(self) -> int:
        """Stack of the threads that build grammars: 32 KiB per level of ``max_derivation_depth``.

        The deepest chain measured costs 4.7 kB per level (``properties`` chains; ``$ref`` 3.4,
        Lark rules 3.2): 32 KiB is a margin of about 6.8x. At least 32 MiB.
        """
        return max(32 * 1024 * 1024, self.max_derivation_depth * 32 * 1024)

    @property
    def lexer_states(self) -> int:
        """The lexer states llguidance may build per matcher: ``max_lexer_states``, or fewer
        where ``max_lexer_bytes`` says so."""
        return max(1, min(self.max_lexer_states, self.max_lexer_bytes // LEXER_STATE_BYTES))

    def parser_limits(self) -> llguidance.LLParserLimits:
        """The llguidance view of these limits (errors stay terse: no parser dumps)."""
        return llguidance.LLParserLimits(
            max_items_in_row=self.max_items_in_row,
            initial_lexer_fuel=self.initial_lexer_fuel,
            step_lexer_fuel=self.step_lexer_fuel,
            step_max_items=self.step_max_items,
            max_lexer_states=self.lexer_states,
            max_grammar_size=self.max_grammar_size,
            verbose_errors=False,
        )

"""The tokenizer registry: the vocabularies this server can compile for, by name.

``"default"`` always names the default tokenizer (also reachable by its own name, e.g.
``"tekken"``). Tokenizers come from the settings at start and from uploads at run time; a name,
once taken, keeps its vocabulary (an upload of the same vocabulary under it is a no-op, of a
different one is refused), so a ``program_id`` never changes meaning under a client.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping

from core.errors import LimitExceeded, UnknownTokenizer, excerpt
from core.tokenizers import Tokenizer, load_tokenizer
from service.errors import TokenizerExists

__all__ = ["DEFAULT", "TOKENIZER_NAME_PATTERN", "TokenizerRegistry", "load_configured"]

DEFAULT = "default"
TOKENIZER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME_RE = re.compile(TOKENIZER_NAME_PATTERN)


class TokenizerRegistry:
    """Tokenizers by name, with a ``"default"`` alias.

    Args:
        default: the default tokenizer.
        max_tokenizers: most distinct tokenizers held (the default included).
    """

    def __init__(self, default: Tokenizer, max_tokenizers: int = 8) -> None:
        self.max_tokenizers = max_tokenizers
        # Uploads build one tokenizer at a time (each takes seconds and tens of MB).
        self.upload_lock = asyncio.Lock()
        self._by_name: dict[str, Tokenizer] = {DEFAULT: default, default.name: default}

    @property
    def default(self) -> Tokenizer:
        return self._by_name[DEFAULT]

    def get(self, name: str) -> Tokenizer:
        """The tokenizer called ``name``; raises :class:`UnknownTokenizer` (404)."""
        tok = self._by_name.get(name)
        if tok is None:
            raise UnknownTokenizer(f"no tokenizer named {excerpt(name, 64)!r}; GET /tokenizers lists them")
        return tok

    def name_of(self, tok: Tokenizer) -> str:
        """The registered name of ``tok`` (``"default"`` for the default)."""
        if tok is self.default:
            return DEFAULT
        return next((n for n, t in self._by_name.items() if t is tok), tok.name)

    def check_new(self, name: str) -> Tokenizer | None:
        """Validate an upload name; the registered tokenizer if the name is taken."""
        if not _NAME_RE.match(name):
            raise ValueError(f"invalid tokenizer name {name!r}")  # the route validates names
        existing = self._by_name.get(name)
        if existing is None and len(self.distinct()) >= self.max_tokenizers:
            raise LimitExceeded(f"{self.max_tokenizers} tokenizers are loaded, the limit", "max_tokenizers")
        return existing

    def add(self, name: str, tok: Tokenizer) -> bool:
        """Register ``tok`` as ``name``; False if that exact vocabulary is already there.

        Raises:
            TokenizerExists: ``name`` holds a different vocabulary.
        """
        existing = self.check_new(name)
        if existing is not None:
            if existing.fingerprint == tok.fingerprint:
                return False
            raise TokenizerExists(f"tokenizer name {name!r} is taken by a different vocabulary")
        self._by_name[name] = tok
        return True

    def distinct(self) -> list[Tokenizer]:
        """Each tokenizer once."""
        seen: dict[int, Tokenizer] = {}
        for tok in self._by_name.values():
            seen.setdefault(id(tok), tok)
        return list(seen.values())

    def items(self) -> list[tuple[str, Tokenizer]]:
        """Every (name, tokenizer) pair, aliases included, sorted by name."""
        return sorted(self._by_name.items())


def load_configured(
    specs: Iterable[str], preloaded: Mapping[str, Tokenizer] | None = None, max_tokenizers: int = 8
) -> TokenizerRegistry:
    """Build the registry from ``Settings.tokenizers`` entries (blocking: run it in a thread).

    Each entry is ``default`` (the embedded tekken), a path (named after the file), or
    ``NAME=PATH``. ``preloaded`` tokenizers (tests) take their names first and skip loading.
    The first entry is the default unless an entry is named ``default``.
    """
    loaded: list[tuple[str, Tokenizer]] = list((preloaded or {}).items())
    names = {n for n, _ in loaded}
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep:
            name, source = "", spec
        name = name.strip()
        if name in names or (not name and source in names):
            continue
        tok = load_tokenizer(source.strip())
        loaded.append((name or (DEFAULT if source == DEFAULT else tok.name), tok))
        names.add(loaded[-1][0])
    if not loaded:
        raise ValueError("no tokenizer configured")
    default = dict(loaded).get(DEFAULT, loaded[0][1])
    registry = TokenizerRegistry(default, max_tokenizers=max_tokenizers)
    for name, tok in loaded:
        if name != DEFAULT and name not in registry._by_name:
            registry._by_name[name] = tok  # configured ones may exceed max_tokenizers (uploads may not)
    return registry

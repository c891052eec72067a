"""The tokenizer registry: the vocabularies this server can compile for, by name.

A tokenizer is identified by its digest (its vocabulary and settings, end tokens included); a name
is an alias of one. ``"default"`` always names the default tokenizer (also reachable by its own
name, e.g. ``"tekken"``). Tokenizers come from the settings at start and from uploads at run time.
Registering content already held is a no-op that may add a name; a name, once taken, keeps its
vocabulary (an upload of another one under it is refused), so a ``program_id`` never changes
meaning under a client. Names are case-insensitive: ``Default`` is ``default``, and an upload
as ``GPT2`` where ``gpt2`` is taken is the same name (listed as first spelled).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence

from core.errors import LimitExceeded, UnknownTokenizer, excerpt
from core.tokenizers import Tokenizer, load_tokenizer
from service.errors import TokenizerExists

__all__ = ["DEFAULT", "TOKENIZER_NAME_PATTERN", "TokenizerRegistry", "load_configured", "upload_key"]

DEFAULT = "default"
TOKENIZER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME_RE = re.compile(TOKENIZER_NAME_PATTERN)


def upload_key(data: bytes, eos_token_ids: Sequence[int] | None) -> str:
    """What identifies an upload before it is parsed: its bytes and the end tokens asked for."""
    digest = hashlib.sha256(data)
    digest.update(repr(None if eos_token_ids is None else list(eos_token_ids)).encode())
    return digest.hexdigest()


class TokenizerRegistry:
    """Tokenizers by digest, and the names that alias them (``"default"`` among them).

    Args:
        default: the default tokenizer.
        max_tokenizers: most distinct tokenizers held (the default included).
    """

    def __init__(self, default: Tokenizer, max_tokenizers: int = 8) -> None:
        self.max_tokenizers = max_tokenizers
        # Uploads build one tokenizer at a time (each takes seconds and tens of MB).
        self.upload_lock = asyncio.Lock()
        # By folded name (names are case-insensitive); ``_spelled`` keeps each as first given.
        self._by_name: dict[str, Tokenizer] = {}
        self._spelled: dict[str, str] = {}
        self._alias(DEFAULT, default)
        self._alias(default.name, default)
        self._by_digest: dict[str, Tokenizer] = {default.digest: default}
        # An upload's bytes (and end tokens) -> the digest it gave: the same file again is
        # recognised without building it again (adapters register their model's file at start).
        self._uploads: dict[str, str] = {}

    @property
    def default(self) -> Tokenizer:
        return self._by_name[DEFAULT]

    def _alias(self, name: str, tok: Tokenizer) -> None:
        """Name ``tok`` (no-op when the name, in any case, is taken)."""
        key = name.lower()
        if key not in self._by_name:
            self._by_name[key] = tok
            self._spelled[key] = name

    def holds(self, name: str) -> bool:
        """Whether ``name`` (in any case) names a tokenizer."""
        return name.lower() in self._by_name

    def get(self, name: str) -> Tokenizer:
        """The tokenizer called ``name``; raises :class:`UnknownTokenizer` (404)."""
        tok = self._by_name.get(name.lower())
        if tok is None:
            raise UnknownTokenizer(f"no tokenizer named {excerpt(name, 64)!r}; GET /tokenizers lists them")
        return tok

    def name_of(self, tok: Tokenizer) -> str:
        """The registered name of ``tok`` (``"default"`` for the default)."""
        if tok is self.default:
            return DEFAULT
        return next((self._spelled[n] for n, t in self._by_name.items() if t is tok), tok.name)

    def check_room(self) -> None:
        """Raise :class:`LimitExceeded` (413) when no further distinct tokenizer may be added."""
        if len(self._by_digest) >= self.max_tokenizers:
            raise LimitExceeded(f"{self.max_tokenizers} tokenizers are loaded, the limit", "max_tokenizers")

    def uploaded(self, key: str) -> Tokenizer | None:
        """The tokenizer an upload with this :func:`upload_key` gave before, if any."""
        digest = self._uploads.get(key)
        return None if digest is None else self._by_digest.get(digest)

    def add(self, name: str, tok: Tokenizer, upload: str | None = None) -> tuple[Tokenizer, bool]:
        """Register ``tok`` as ``name``.

        Returns:
            The registered tokenizer (an equal one already held, if any) and whether its content
            is new.

        Raises:
            TokenizerExists: ``name`` holds a different vocabulary.
        """
        if not _NAME_RE.match(name):
            raise ValueError(f"invalid tokenizer name {name!r}")  # the route validates names
        existing = self._by_name.get(name.lower())
        if existing is not None and existing.digest != tok.digest:
            raise TokenizerExists(
                f"tokenizer name {name!r} is taken by a different vocabulary (digest {existing.digest[:16]})"
            )
        held = self._by_digest.get(tok.digest)
        new = held is None
        if held is None:
            self.check_room()
            self._by_digest[tok.digest] = held = tok
        self._alias(name, held)
        if upload is not None:
            self._uploads[upload] = held.digest
        return held, new

    def distinct(self) -> list[Tokenizer]:
        """Each tokenizer once."""
        return list(self._by_digest.values())

    def items(self) -> list[tuple[str, Tokenizer]]:
        """Every (name, tokenizer) pair, aliases included, sorted by name."""
        return sorted(((self._spelled[n], t) for n, t in self._by_name.items()), key=lambda item: item[0])


def load_configured(
    specs: Iterable[str], preloaded: Mapping[str, Tokenizer] | None = None, max_tokenizers: int = 8
) -> TokenizerRegistry:
    """Build the registry from ``Settings.tokenizers`` entries (blocking: run it in a thread).

    Each entry is ``default`` (the embedded tekken), a path (named after the file), or
    ``NAME=PATH``. ``preloaded`` tokenizers (tests) take their names first and skip loading.
    The first entry is the default unless an entry is named ``default``.
    """
    loaded: list[tuple[str, Tokenizer]] = list((preloaded or {}).items())
    names = {n.lower() for n, _ in loaded}
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep:
            name, source = "", spec
        name = name.strip()
        if name.lower() in names or (not name and source.lower() in names):
            continue
        tok = load_tokenizer(source.strip())
        loaded.append((name or (DEFAULT if source == DEFAULT else tok.name), tok))
        names.add(loaded[-1][0].lower())
    if not loaded:
        raise ValueError("no tokenizer configured")
    default = next((tok for name, tok in loaded if name.lower() == DEFAULT), loaded[0][1])
    registry = TokenizerRegistry(default, max_tokenizers=max_tokenizers)
    for name, tok in loaded:
        if not registry.holds(name):
            # configured ones may exceed max_tokenizers (uploads may not)
            registry._by_digest.setdefault(tok.digest, tok)
            registry._alias(name, registry._by_digest[tok.digest])
    return registry

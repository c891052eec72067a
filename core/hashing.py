"""Content hashes: the one rule by which a compile input becomes a stable id.

A value is written as canonical JSON (compact separators, text kept as UTF-8, object keys in
their given order, anything JSON cannot write as its ``str``) and hashed with SHA-256; the id is
the first 32 hex digits (128 bits). The same value gives the same id on every machine and every
run, so replicas agree on ids without talking to each other.

Key order is kept, not sorted: llguidance fixes a JSON object's properties to the schema's order,
so schemas differing only in order are different constraints. JSON parsers keep order, so the
same request still hashes alike everywhere.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["content_hash"]


def content_hash(value: Any) -> str:
    """The content id of ``value``: SHA-256 of its canonical JSON, 32 lowercase hex digits.

    Raises:
        UnicodeEncodeError: ``value`` holds a string that is not valid Unicode (an unpaired
            surrogate from a JSON escape); such text cannot be compiled either.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

"""Content hashes: one canonical JSON text per value, the same id everywhere."""

from __future__ import annotations

import hashlib

import pytest

from core.hashing import content_hash


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def test_the_id_is_sha256_of_compact_json_with_text_kept_as_utf8() -> None:
    assert content_hash(["a", {"k": 1.5, "ü": None}, True]) == _sha('["a",{"k":1.5,"ü":null},true]')
    assert len(content_hash({})) == 32


def test_key_order_is_part_of_the_value() -> None:
    assert content_hash({"a": 1, "b": 2}) != content_hash({"b": 2, "a": 1})


def test_what_json_cannot_write_is_hashed_as_its_str() -> None:
    assert content_hash(["x", frozenset()]) == _sha('["x","frozenset()"]')


def test_text_that_is_not_unicode_cannot_be_hashed() -> None:
    with pytest.raises(UnicodeEncodeError):
        content_hash("\ud800")

"""Realistic constraints and many different valid texts for each, shared by the benchmarks.

Every session in a benchmark walks a different text, as real requests do: identical walks would
only measure llguidance's state cache.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 1, "maximum": 1000000},
        "customer": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 40},
                "email": {"type": "string", "pattern": "^[a-z]+@[a-z]+\\.(com|org)$"},
                "tier": {"enum": ["free", "pro", "enterprise"]},
            },
            "required": ["name", "email", "tier"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 99},
                    "price": {"type": "number"},
                },
                "required": ["sku", "qty", "price"],
                "additionalProperties": False,
            },
            "minItems": 1,
            "maxItems": 5,
        },
        "paid": {"type": "boolean"},
        "note": {"type": "string", "maxLength": 80},
    },
    "required": ["id", "customer", "items", "paid", "note"],
    "additionalProperties": False,
}

PERSON_TEMPLATE = (
    "Name: {{gen 'name' regex='[A-Z][a-z]+'}}\n"
    "Age: {{gen 'age' regex='[0-9]{1,3}'}}\n"
    "City: {{gen 'city' stop='\\n'}}\n"
    "Likes: {{select 'likes' options=['tea', 'coffee', 'water']}}."
)

PHONE_REGEX = r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"

CITIES = ["Newark, New Jersey", "New York, New York", "Boston, Massachusetts", "Austin, Texas", "Paris, France"]

_WORDS = "alpha beta gamma delta river stone cloud amber north quiet swift green silver lantern".split()


def _order(rng: random.Random) -> str:
    items = [
        {
            "sku": "".join(rng.choice("ABCDEFGH") for _ in range(3)) + f"-{rng.randint(0, 9999):04d}",
            "qty": rng.randint(1, 99),
            "price": round(rng.uniform(1, 500), 2),
        }
        for _ in range(rng.randint(1, 4))
    ]
    doc = {
        "id": rng.randint(1, 1000000),
        "customer": {
            "name": " ".join(rng.choice(_WORDS).title() for _ in range(2)),
            "email": rng.choice(_WORDS) + "@" + rng.choice(_WORDS) + rng.choice([".com", ".org"]),
            "tier": rng.choice(["free", "pro", "enterprise"]),
        },
        "items": items,
        "paid": rng.random() < 0.5,
        "note": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 8))),
    }
    return json.dumps(doc, separators=(",", ":"))


def _person(rng: random.Random) -> str:
    return (
        f"Name: {rng.choice(_WORDS).title()}\nAge: {rng.randint(1, 99)}\n"
        f"City: {rng.choice(CITIES)}\nLikes: {rng.choice(['tea', 'coffee', 'water'])}."
    )


def _phone(rng: random.Random) -> str:
    return f"({rng.randint(100, 999)}) {rng.randint(100, 999)}-{rng.randint(0, 9999):04d}"


def _choice(rng: random.Random) -> str:
    return rng.choice(CITIES)


@dataclass(frozen=True)
class Case:
    """A constraint (as a compile request body) and a generator of valid texts."""

    name: str
    body: dict[str, Any]
    text: Callable[[random.Random], str]


CASES = [
    Case("json", {"json_schema": ORDER_SCHEMA}, _order),
    Case("template", {"template": PERSON_TEMPLATE}, _person),
    Case("regex", {"regex": PHONE_REGEX}, _phone),
    Case("choice", {"choice": CITIES}, _choice),
]


def texts(case: Case, n: int, seed: int = 0) -> list[str]:
    """``n`` valid texts for ``case`` (deterministic for a seed)."""
    rng = random.Random(f"{case.name}:{seed}")
    return [case.text(rng) for _ in range(n)]

"""bot/jsontext.py must write what the json module means, for every value json takes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import pytest

from bot import jsontext


class Mood(StrEnum):
    GOOD = "good"


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [1.5, -0.0, 1e-7, "é 😀", None, True]},
        {"big": 2**70, "neg": -(2**64)},  # beyond orjson's 64 bits: json writes them
        {2: "int keys", 1: "x"},  # json turns keys into text; orjson refuses them
        {"lone": "\ud800"},  # a lone surrogate: json escapes it, orjson refuses it
        {"mood": Mood.GOOD},  # a str subclass
        "plain",
        [],
    ],
)
@pytest.mark.parametrize("sort_keys", [False, True])
def test_same_meaning_as_json(value: object, sort_keys: bool) -> None:
    expected = json.loads(json.dumps(value, sort_keys=sort_keys))
    assert json.loads(jsontext.dumps(value, sort_keys=sort_keys)) == expected
    assert json.loads(jsontext.dumps_bytes(value, sort_keys=sort_keys)) == expected


def test_sorted_keys_are_sorted() -> None:
    assert jsontext.dumps({"b": 1, "a": {"d": 1, "c": 2}}, sort_keys=True) == (
        '{"a":{"c":2,"d":1},"b":1}'
    )


@dataclass
class Point:
    x: int


@pytest.mark.parametrize("value", [datetime(2026, 1, 1, tzinfo=UTC), Point(1), {1, 2}])
def test_what_json_refuses_is_refused(value: object) -> None:
    """orjson would write these; json does not, and Parley's stored JSON keeps json's rules."""
    with pytest.raises(TypeError):
        json.dumps(value)
    with pytest.raises(TypeError):
        jsontext.dumps(value)
    with pytest.raises(TypeError):
        jsontext.dumps_bytes(value)

"""JSON text for the hot path: orjson where it writes what the ``json`` module would mean.

Why: encoding was the largest single cost of an answer after SQLite itself (callgrind on
``parley serve`` under ``bench/web_api.py``: 6% of its instructions in ``json``'s encoder —
the saved state, the stored answer, the response). orjson does the same in a fraction.

Why the fallback: orjson refuses what ``json`` writes (integers beyond 64 bits, non-text
dict keys, lone surrogates) and writes what ``json`` refuses (dates, dataclasses,
subclasses, which the passthrough options send back here). Whatever orjson refuses goes to
``json``, so every value encodes as it did, or fails with ``json``'s own TypeError. The
text differs only in spelling (no spaces, UTF-8 instead of ``\\uXXXX``), never in meaning —
except NaN, which ``json`` writes as the non-JSON ``NaN`` and orjson as ``null``; Parley
refuses non-finite numbers at the door, so none reaches here.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_PASS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_PASS |= orjson.OPT_PASSTHROUGH_SUBCLASS
_SORTED = _PASS | orjson.OPT_SORT_KEYS
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # ASCII: a lone surrogate stays escaped
_COMPACT_SORTED = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def dumps_bytes(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON."""
    try:
        return orjson.dumps(value, option=_SORTED if sort_keys else _PASS)
    except TypeError:
        encoder = _COMPACT_SORTED if sort_keys else _COMPACT
        return encoder.encode(value).encode("ascii")


def dumps(value: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON text."""
    return dumps_bytes(value, sort_keys=sort_keys).decode()

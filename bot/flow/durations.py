"""Durations as researchers write them: ``30m``, ``2h``, ``7d``, ``2w``."""

from __future__ import annotations

import re

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")


MAX_SECONDS = 10 * 366 * 86400  # ten years: longer means "never", and dates must stay in range


def parse_duration(text: str) -> int:
    """Seconds in ``text``; raises ValueError naming the accepted forms."""
    m = _DURATION.match(text)
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration; write e.g. 30m, 2h, 7d or 2w")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds > MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than ten years (3660d); leave it out for no limit")
    return seconds

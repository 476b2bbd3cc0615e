"""Researchers' bulk export: every answer of a flow (or all flows) as CSV or JSON Lines.

Kept apart from ``privacy`` (one person's data back, or gone): this one serves analysis, and
its care is the spreadsheet that opens the file (no answer may run as a formula there).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from bot.store import repo
from bot.store.database import Database
from bot.store.models import Answer, as_utc

EXPORT_COLUMNS = (
    "respondent",
    "flow",
    "flow_version",
    "conversation",
    "step",
    "step_type",
    "value",
    "answered_at",
)


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_iso(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def utc_iso(moment: datetime) -> str:
    """ISO 8601 with its zone (+00:00)."""
    return as_utc(moment).isoformat()


def answer_record(answer: Answer, key: str | None, version: str) -> dict[str, Any]:
    return {
        "respondent": key,
        "flow": answer.flow_id,
        "flow_version": version,
        "conversation": answer.conversation_id or answer.response_id,
        "step": answer.step_id,
        "step_type": answer.step_type,
        "value": answer.value,
        "answered_at": utc_iso(answer.created_at),
    }


async def export_answers(db: Database, *, flow_id: str | None) -> AsyncIterator[dict[str, Any]]:
    async with db.reads() as session:
        async for answer, key, version in repo.flow_answers(session, flow_id=flow_id):
            yield answer_record(answer, key, version)


async def count_answers(db: Database, *, flow_id: str | None) -> int:
    async with db.reads() as session:
        return await repo.count_answers(session, flow_id=flow_id)


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a leading ' defuses formula characters."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return "" if value is None else value


def format_record(record: dict[str, Any], fmt: str) -> str:
    """One line of CSV or JSON Lines (CSV values that are lists/bools are JSON-encoded).

    CSV string cells that start with ``= + - @`` or a tab/CR get a leading ``'`` so opening
    the export in a spreadsheet never runs a respondent's answer as a formula; JSON Lines
    keeps every value exactly as stored.
    """
    if fmt == "jsonl":
        return json.dumps(record, ensure_ascii=False, default=json_default) + "\n"
    cells = [_csv_cell(record[c]) for c in EXPORT_COLUMNS]
    if not isinstance(record["value"], str):
        # JSON, not defused: no formula here, and a negative rating stays a number (-2).
        cells[EXPORT_COLUMNS.index("value")] = json.dumps(record["value"], ensure_ascii=False)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(cells)
    return buf.getvalue()


def csv_header() -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(EXPORT_COLUMNS)
    return buf.getvalue()

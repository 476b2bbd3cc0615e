"""Dependencies point one way (DESIGN.md): analysis never imports bot; the engine and the
flow language never import Slack, aiohttp or the store; Slack stays inside its channel."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imports(folder: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(folder: str, banned: tuple[str, ...]) -> list[str]:
    return [
        f"{file} imports {name}"
        for file, names in imports(folder).items()
        for name in sorted(names)
        if any(name == b or name.startswith(b + ".") for b in banned)
    ]


def test_analysis_never_imports_bot() -> None:
    assert offenders("analysis", ("bot",)) == []


def test_engine_and_flow_are_channel_and_store_agnostic() -> None:
    banned = (
        "slack_bolt",
        "slack_sdk",
        "aiohttp",
        "sqlalchemy",
        "sqlmodel",
        "bot.store",
        "bot.services",
        "bot.channels",
    )
    assert offenders("bot/engine", banned) == []
    assert offenders("bot/flow", banned) == []


def test_services_and_store_know_no_channel() -> None:
    banned = ("slack_bolt", "slack_sdk", "aiohttp", "bot.channels")
    assert offenders("bot/services", banned) == []
    assert offenders("bot/store", banned) == []


def test_slack_is_imported_only_by_its_channel() -> None:
    outside = [
        hit
        for hit in offenders("bot", ("slack_bolt", "slack_sdk"))
        if not hit.startswith("bot/channels/slack/") and not hit.startswith("bot/store/migrations/")
    ]
    assert outside == []


def test_the_check_itself_sees_imports() -> None:
    # guard against a walker that silently finds nothing
    assert "pydantic" in imports("bot/flow")["bot/flow/loader.py"]
    assert offenders("bot/flow", ("pydantic",)) != []

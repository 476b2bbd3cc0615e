"""Shared fixtures. Database tests run on SQLite always and on PostgreSQL too when
``PARLEY_TEST_DATABASE_URL`` is set (``.ci/run`` sets it when the server answers)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.services.catalog import FlowCatalog
from bot.services.conversations import Surveys
from bot.store.database import Database

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows"
PG_URL = os.environ.get("PARLEY_TEST_DATABASE_URL", "")


@pytest.fixture
def flows_dir() -> Path:
    return FLOWS


@pytest.fixture
def tmp_flows(tmp_path: Path) -> Path:
    """A writable copy of the starter flows."""
    target = tmp_path / "flows"
    shutil.copytree(FLOWS, target)
    return target


async def _reset_postgres(url: str) -> None:
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty database: a SQLite file, or a wiped PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "parley.db")
    if not PG_URL:
        pytest.skip("PostgreSQL variant: set PARLEY_TEST_DATABASE_URL to run it")
    await _reset_postgres(PG_URL)
    return PG_URL


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    db = Database(db_url)
    await db.ensure_ready()
    yield db
    await db.dispose()


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(str(tmp_path / "parley.db"))
    await db.ensure_ready()
    yield db
    await db.dispose()


@pytest.fixture
def catalog(flows_dir: Path) -> FlowCatalog:
    return FlowCatalog(flows_dir)


@pytest.fixture
def surveys(database: Database, catalog: FlowCatalog) -> Surveys:
    return Surveys(database, catalog)

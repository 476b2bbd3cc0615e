"""Prepared statements on SQLite must store and read exactly what SQLAlchemy does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from bot import jsontext
from bot.store.prepared import Prepared

META = MetaData()
THING = Table(
    "thing",
    META,
    Column("id", Integer, primary_key=True),
    Column("name", String(20), unique=True, nullable=False),
    Column("data", JSON),
    Column("flag", Boolean, default=False, nullable=False),
    Column("at", DateTime(timezone=True)),
)
WHEN = datetime(2026, 11, 23, 13, 10, 7, 103813, tzinfo=UTC)


@pytest.fixture
def conn(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}", json_serializer=jsontext.dumps)
    META.create_all(engine)
    with engine.begin() as connection:
        yield connection
    engine.dispose()


def test_values_round_trip_like_sqlalchemy(conn) -> None:  # type: ignore[no-untyped-def]
    add = Prepared(insert(THING).returning(THING.c.id))
    data = {"k": [1, "two", "é"], "big": 2**70}  # 2**70: past the fast encoder, to json
    new_id = add(conn, {"name": "a", "data": data, "at": WHEN}).scalar_one()
    conn.execute(insert(THING), {"name": "b", "data": data, "at": WHEN})
    # what SQLAlchemy wrote and what Prepared wrote are stored identically...
    raw = conn.exec_driver_sql("SELECT data, flag, at FROM thing ORDER BY id").all()
    assert raw[0] == raw[1]
    # ...and read back identically by both
    read = Prepared(
        select(THING.c.data, THING.c.flag, THING.c.at).where(THING.c.id == bindparam("i"))
    )
    ours = read(conn, {"i": new_id}).one_or_none()
    theirs = conn.execute(read.statement, {"i": new_id}).one_or_none()
    assert tuple(ours) == tuple(theirs) == (data, False, WHEN.replace(tzinfo=None))


def test_update_rowcount_defaults_and_errors(conn) -> None:  # type: ignore[no-untyped-def]
    add = Prepared(insert(THING))
    add(conn, {"name": "a"})
    flag = Prepared(update(THING).where(THING.c.name == bindparam("_name")))
    assert flag(conn, {"_name": "a", "flag": True}).rowcount == 1
    assert flag(conn, {"_name": "nobody", "flag": True}).rowcount == 0
    assert conn.execute(select(THING.c.flag)).scalar_one() is True
    with pytest.raises(IntegrityError):  # SQLAlchemy's class, so callers' handlers still work
        add(conn, {"name": "a"})
    none = Prepared(select(THING.c.id).where(THING.c.name == bindparam("n")))
    assert none(conn, {"n": "zzz"}).scalar_one_or_none() is None


def test_values_written_into_the_statement(conn) -> None:  # type: ignore[no-untyped-def]
    """``.values(flag=True)`` in the statement itself; an UPDATE never takes insert defaults."""
    Prepared(insert(THING))(conn, {"name": "a", "flag": True, "data": [1]})
    clear = Prepared(
        update(THING).where(THING.c.name == bindparam("_name")).values(data=None, flag=False)
    )
    assert clear(conn, {"_name": "a"}).rowcount == 1
    assert conn.execute(select(THING.c.data, THING.c.flag)).one() == (None, False)


def test_datetimes_and_none_in_turn(conn) -> None:  # type: ignore[no-untyped-def]
    """The datetime converter remembers the last value it wrote: None must not match it."""
    add = Prepared(insert(THING))
    add(conn, {"name": "a", "at": None})
    add(conn, {"name": "b", "at": WHEN})
    add(conn, {"name": "c", "at": WHEN})  # the same object again
    add(conn, {"name": "d", "at": None})
    add(conn, {"name": "e", "at": WHEN.replace(microsecond=0)})
    raw = conn.exec_driver_sql("SELECT at FROM thing ORDER BY id").scalars().all()
    assert raw == [
        None,
        "2026-11-23 13:10:07.103813",
        "2026-11-23 13:10:07.103813",
        None,
        "2026-11-23 13:10:07.000000",
    ]


def test_inserted_id_from_lastrowid(conn) -> None:  # type: ignore[no-untyped-def]
    """``on_sqlite``: the INSERT runs without RETURNING, and its row is the new row's id."""
    add = Prepared(insert(THING).returning(THING.c.id), on_sqlite=insert(THING))
    first = add(conn, {"name": "a"}).scalar_one()
    conn.execute(insert(THING), {"name": "b"})  # an id taken meanwhile by someone else
    second = add(conn, {"name": "c", "at": WHEN}).scalar_one()
    stored = dict(conn.exec_driver_sql("SELECT name, id FROM thing").all())
    assert (first, second) == (stored["a"], stored["c"])
    with pytest.raises(IntegrityError):
        add(conn, {"name": "a"})
    skipping = sqlite_insert(THING).on_conflict_do_nothing()
    with pytest.raises(TypeError, match="plain INSERT"):
        Prepared(insert(THING).returning(THING.c.id), on_sqlite=skipping)
    with pytest.raises(TypeError, match="plain INSERT"):
        Prepared(
            insert(THING).returning(THING.c.id), on_sqlite=insert(THING).prefix_with("OR IGNORE")
        )


def test_one_and_no_parameters(conn) -> None:  # type: ignore[no-untyped-def]
    Prepared(insert(THING))(conn, {"name": "only"})
    by_name = Prepared(select(THING.c.name).where(THING.c.name == bindparam("n")))
    assert by_name(conn, {"n": "only"}).scalar_one() == "only"
    assert [tuple(row) for row in Prepared(select(THING.c.name))(conn)] == [("only",)]

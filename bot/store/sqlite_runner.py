"""Short SQLite transactions run on the event loop; a busy database is waited for in a thread.

Why on the loop: an answer's transaction takes a few hundred microseconds, and handing it to
a thread cost more than that. The loop and the thread take turns on the GIL, and after every
socket call the loop waited for the thread to give it back (up to the 5 ms switch interval):
``bench/web_api.py`` served about half as many answers per second that way.

Why a thread at all: the loop's connection never waits (``busy_timeout`` 0). When another
process holds the write lock (``parley forget`` from a shell, a second server), ``BEGIN
IMMEDIATE`` fails at once, before the body ran, and the body goes to the single writer
thread, whose connection waits in SQLite's busy handler without blocking the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

READER_THREADS = 2
T = TypeVar("T")


class _Busy(Exception):
    """Another connection holds the lock; the body has not run."""


def is_busy(err: OperationalError) -> bool:
    text = str(err.orig).lower()
    return "database is locked" in text or "database is busy" in text


class SqliteRunner:
    """Runs synchronous Core bodies as transactions on one SQLite database file.

    Writes from this process never wait for each other (the loop runs one at a time), and
    reads never wait for writes (WAL), so a body that fails with "locked" on the loop's
    connection can only be waiting for another process.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reader_engine = engine.execution_options(parley_readonly=True)
        self._loop_conn: Connection | None = None
        self._thread_conn: Connection | None = None  # the writer thread's, used only there
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="parley-sqlite-writer")
        self._readers = ThreadPoolExecutor(
            READER_THREADS, thread_name_prefix="parley-sqlite-reader"
        )

    async def write(self, body: Callable[[Connection], T]) -> T:
        try:
            return self._on_loop(body, readonly=False)
        except _Busy:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._writer, self._in_writer, body)

    async def read(self, body: Callable[[Connection], T]) -> T:
        try:
            return self._on_loop(body, readonly=True)
        except _Busy:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._readers, self._in_reader, body)

    def _on_loop(self, body: Callable[[Connection], T], *, readonly: bool) -> T:
        conn = self._loop_connection()
        conn.execution_options(parley_readonly=readonly)  # read by the "begin" listener
        try:
            transaction = conn.begin()
        except OperationalError as err:
            if is_busy(err):
                raise _Busy from err
            raise
        try:
            with transaction:
                return body(conn)
        except OperationalError as err:
            # A deferred read can meet a lock mid-body (WAL recovery); reading again is safe.
            if readonly and is_busy(err):
                raise _Busy from err
            raise

    def _loop_connection(self) -> Connection:
        if self._loop_conn is None or self._loop_conn.invalidated:
            conn = self._engine.connect()
            conn.connection.driver_connection.execute("PRAGMA busy_timeout=0")  # type: ignore[union-attr]
            self._loop_conn = conn
        return self._loop_conn

    def _in_writer(self, body: Callable[[Connection], T]) -> T:
        if self._thread_conn is None or self._thread_conn.invalidated:
            self._thread_conn = self._engine.connect()
        with self._thread_conn.begin():
            return body(self._thread_conn)

    def _in_reader(self, body: Callable[[Connection], T]) -> T:
        with self._reader_engine.begin() as conn:
            return body(conn)

    def _close_thread_conn(self) -> None:
        if self._thread_conn is not None:
            self._thread_conn.close()
            self._thread_conn = None

    async def close(self) -> None:
        if self._loop_conn is not None:
            self._loop_conn.close()
            self._loop_conn = None
        await asyncio.get_running_loop().run_in_executor(self._writer, self._close_thread_conn)
        for pool in (self._writer, self._readers):
            pool.shutdown(wait=True)
        self._engine.dispose()

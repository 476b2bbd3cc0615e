"""The ``parley`` command line. Every command takes ``--db`` and ``--flows``; flags beat env vars.

Errors a user can act on (ParleyError) print as ``error: …`` and exit 1; flow problems print
one ``file:line:col: message (hint)`` per line.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import getpass
import io
import json
import shlex
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from bot.config import Settings, load_settings
from bot.errors import ConfigError, DatabaseError, FlowError, ParleyError
from bot.store.database import Database, open_database, redacted

T = TypeVar("T")


PROGRESS_FROM = 20_000  # answers: below this, results come back before a bar is worth it


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def common(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --db and --flows, build Settings, and turn ParleyError into a clean exit 1."""

    @click.option(
        "--db",
        "db",
        default=None,
        help="SQLite file path or database URL (default: parley.db; env DATABASE_URL).",
    )
    @click.option(
        "--flows",
        "flows",
        default=None,
        type=click.Path(path_type=Path),
        help="Flows folder (default: flows/; env PARLEY_FLOWS).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, db: str | None, flows: Path | None, **kwargs: Any) -> Any:
        try:
            settings = load_settings(db=db, flows=flows)
            return func(*args, settings=settings, **kwargs)
        except FlowError as err:
            for problem in err.problems:
                click.echo(str(problem), err=True)
            raise SystemExit(1) from err
        except ParleyError as err:
            click.echo(f"error: {err.message}", err=True)
            raise SystemExit(1) from err

    return wrapper


async def open_db(settings: Settings, *, create: bool = True) -> Database:
    return await open_database(
        settings.db, create=create, announce=lambda line: click.echo(line, err=True)
    )


async def _release_anonymous(db: Database) -> None:
    """Anonymous answers that are due join the others first, as a running server would have
    done by now; a read-only database user reads what is there."""
    from sqlalchemy.exc import SQLAlchemyError

    from bot.services import anonymous

    try:
        await anonymous.release(db)
    except (SQLAlchemyError, DatabaseError) as err:
        click.echo(f"note: anonymous answers waiting to join could not be moved: {err}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="parley-bot")
def main() -> None:
    """Parley: chat-style surveys written as YAML flows."""


# --- validate ----------------------------------------------------------------------------


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@common
def validate(path: Path | None, *, settings: Settings) -> None:
    """Check every flow, block and config file (one line per file; errors as file:line:col)."""
    from bot.flow import validate_tree

    target = path or settings.flows
    if not target.exists():
        click.echo(f"{target}: no such file or folder", err=True)
        raise SystemExit(1)
    reports = validate_tree(target)
    bad = 0
    for report in reports:
        if report.ok:
            click.echo(f"ok    {report.path}: {report.summary}")
        else:
            bad += 1
            click.echo(f"FAIL  {report.path}: {len(report.problems)} problem(s)")
            for problem in report.problems:
                click.echo(f"  {problem}")
    if not reports:
        click.echo(f"{target}: no .yml files found", err=True)
        raise SystemExit(1)
    if bad:
        raise SystemExit(1)


# --- chat --------------------------------------------------------------------------------


@main.command()
@click.argument("flow_id")
@click.option(
    "--as", "who", default=None, help="Respondent name, e.g. ann or cli:ann (default: your login)."
)
@common
def chat(flow_id: str, who: str | None, *, settings: Settings) -> None:
    """Take a flow in the terminal. Ctrl-C pauses; run it again to resume."""
    from bot.channels.terminal import chat_loop

    # "ann" or "cli:ann" (as `parley export` shows it): the same person
    key = f"cli:{(who or getpass.getuser()).removeprefix('cli:')}"
    # The same command, so that running it again finds the same person in the same database
    given = click.get_current_context().params
    words = ["parley", "chat", flow_id, *(["--as", who] if who else [])]
    for flag in ("db", "flows"):
        if given.get(flag) is not None:
            words += [f"--{flag}", str(given[flag])]
    again = shlex.join(words)
    try:
        code = chat_loop(settings, flow_id=flow_id, respondent_key=key, again=again)
    except KeyboardInterrupt:
        click.echo(f"\nPaused. Run `{again}` to pick up where you left off.")
        code = 130
    raise SystemExit(code)


# --- results -----------------------------------------------------------------------------


@main.command()
@click.argument("flow_id")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@common
def results(flow_id: str, fmt: str, *, settings: Settings) -> None:
    """Responses, completion rate, scores with distributions, top choices, recent open answers."""
    from bot.services.catalog import FlowCatalog
    from bot.services.export import count_answers
    from bot.services.results import flow_results, render_text

    flow = FlowCatalog(settings.flows).get(flow_id)

    async def go() -> Any:
        db = await open_db(settings, create=False)
        try:
            await _release_anonymous(db)
            total = await count_answers(db, flow_id=flow.id)
            with click.progressbar(
                length=total,
                label=f"reading {total} answers",
                file=sys.stderr,
                hidden=total < PROGRESS_FROM or not sys.stderr.isatty(),
            ) as bar:
                return await flow_results(db, flow, on_answer=lambda: bar.update(1))
        finally:
            await db.dispose()

    report = run(go())
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(render_text(report))


# --- export / forget ---------------------------------------------------------------------


@main.command()
@click.option("--flow", "flow_id", default=None, help="Only this flow's answers.")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write to FILE (default: standard output).",
)
@click.option(
    "--respondent", "respondent", default=None, help="Export everything about one person as JSON."
)
@common
def export(
    flow_id: str | None, fmt: str, out: Path | None, respondent: str | None, *, settings: Settings
) -> None:
    """Every answer with respondent, flow version, step, value and time."""
    from bot.services import privacy
    from bot.services.anonymous import waiting_note
    from bot.services.catalog import FlowCatalog
    from bot.services.export import count_answers, csv_header, export_answers, format_record
    from bot.store import repo

    given = click.get_current_context().get_parameter_source
    if respondent is not None and (
        flow_id is not None or given("fmt") != click.core.ParameterSource.DEFAULT
    ):
        raise click.UsageError(
            "--respondent exports everything about one person, as JSON: leave out --flow "
            "and --format"
        )
    # Text stored before it was checked must not stop an export halfway: odd characters are
    # written as \\x.. escapes instead.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")

    async def go() -> None:
        db = await open_db(settings, create=False)
        try:
            if respondent is not None:
                data = await privacy.export_respondent(db, key=respondent)
                text = json.dumps(data, indent=2, ensure_ascii=False)
                _write(out, text + "\n")
                return
            await _release_anonymous(db)
            total = await count_answers(db, flow_id=flow_id)
            if flow_id is not None and total == 0:
                FlowCatalog(settings.flows).get(flow_id)  # a typo: say so, not an empty file
            stream = _open_out(out) if out else sys.stdout
            try:
                if fmt == "csv":
                    stream.write(csv_header())
                with click.progressbar(
                    length=total,
                    label=f"exporting {total} answers",
                    file=sys.stderr,
                    hidden=total < PROGRESS_FROM or not sys.stderr.isatty(),
                ) as bar:
                    async for record in export_answers(db, flow_id=flow_id):
                        stream.write(format_record(record, fmt))
                        bar.update(1)
            finally:
                if out:
                    stream.close()
            if out:
                click.echo(f"wrote {total} answers to {out}", err=True)
            async with db.reads() as session:
                waiting = await repo.anonymous_waiting(session, flow_id=flow_id)
            if waiting:
                click.echo(f"note, not in this export: {waiting_note(waiting)}", err=True)
        finally:
            await db.dispose()

    run(go())


def _write(out: Path | None, text: str) -> None:
    if out is None:
        click.echo(text, nl=False)
    else:
        with _open_out(out) as stream:
            stream.write(text)
        click.echo(f"wrote {out}", err=True)


def _open_out(out: Path) -> io.TextIOWrapper:
    try:
        return open(out, "w", encoding="utf-8", errors="backslashreplace", newline="")
    except OSError as err:
        raise ConfigError(f"cannot write {out}: {err.strerror or err}") from None


@main.command()
@click.argument("respondent")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@common
def forget(respondent: str, yes: bool, *, settings: Settings) -> None:
    """Delete every answer, tag and conversation of one person (e.g. slack:T1:U123)."""
    from bot.services import privacy

    if not yes:
        click.confirm(f"Delete all data of {respondent}? This cannot be undone", abort=True)

    async def go() -> privacy.Forgotten:
        db = await open_db(settings, create=False)
        try:
            return await privacy.forget(db, key=respondent)
        finally:
            await db.dispose()

    done = run(go())
    counts = ", ".join(f"{table} {n}" for table, n in done.counts.items())
    click.echo(f"forgot {respondent}: rows deleted — {counts}")
    if done.still_suppressed:
        click.echo("they had opted out: a one-way hash of their id stays on the do-not-survey list")
    if not done.scrubbed:
        click.echo(
            "note: a running `parley serve` kept SQLite's write-ahead log busy: the old copies "
            "of the deleted rows leave its -wal file at the server's next checkpoint (after a "
            "few hundred answers, or when it stops)"
        )


# --- db ----------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@common
def db_upgrade(*, settings: Settings) -> None:
    """Apply Alembic migrations up to this Parley's schema."""

    async def go() -> tuple[str | None, str]:
        database = Database(settings.db)
        try:
            return await database.upgrade()
        finally:
            await database.dispose()

    before, after = run(go())
    if before == after:
        click.echo(f"database already at revision {after}")
    else:
        click.echo(f"upgraded database from {before or 'empty'} to {after}")


# --- serve -------------------------------------------------------------------------------


@main.command()
@click.option(
    "--host", default=None, help="Interface to listen on (default 127.0.0.1; env PARLEY_HOST)."
)
@click.option(
    "--port",
    default=None,
    type=click.IntRange(1, 65535),
    help="Port (default 8080; env PARLEY_PORT).",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="Log every HTTP request (off by default: a reverse proxy usually logs them, and a "
    "formatted log line per request is a noticeable share of an answer's cost).",
)
@common
def serve(host: str | None, port: int | None, access_log: bool, *, settings: Settings) -> None:
    """Serve the web chat, the Slack endpoint and the scheduler in one process."""
    import logging

    from aiohttp import web

    from bot.app import create_app

    settings = settings.model_copy(
        update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sock = _listen(settings.host, settings.port)  # first: the port may be taken
    app = create_app(settings, freeze_heap=True)
    click.echo(
        f"Parley on http://{settings.host}:{settings.port}/  "
        f"(database: {redacted(settings.db)}, flows: {settings.flows})"
    )
    web.run_app(
        app,
        sock=sock,
        print=None,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        loop=event_loop(),
    )


def event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (Linux and macOS), else asyncio's own: the loop and its
    sockets in C took a twentieth of every request's work off the interpreter (callgrind on
    ``bench/web_api.py``)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as err:
        hint = (
            " (another server is using it: pick another with --port)"
            if err.errno == errno.EADDRINUSE
            else ""
        )
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or err}{hint}") from None


if __name__ == "__main__":
    main()

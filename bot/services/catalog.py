"""Which flows exist: the current files in ``flows/`` plus every version ever stored.

A conversation keeps the flow version it started on, so edits never break a conversation in
progress: old versions are rebuilt from the definition stored in ``flow_version``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection

from bot.errors import FlowError, FlowNotFound, Problem
from bot.flow import Flow, flow_from_definition, load_each
from bot.store import statements as sql

log = logging.getLogger("parley.flows")
RELOAD_EVERY = 2.0  # seconds between looks at the flow files' modification times


class FlowCatalog:
    """Current flows (reloaded when a file changes) and a cache of stored versions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._flows: dict[str, Flow] = {}
        self.broken: list[Problem] = []  # what the flow files that do not load got wrong
        self._broken_by_id: dict[str, list[Problem]] = {}  # the same, by flow id (file name)
        self._stamp: tuple[tuple[str, float], ...] = ()
        self._by_hash: dict[str, Flow] = {}
        self._version_ids: dict[str, int] = {}
        self._flows_by_version: dict[int, Flow] = {}
        self._checked_at = time.monotonic()
        self.reload()

    def _files_stamp(self) -> tuple[tuple[str, float], ...]:
        try:
            return tuple(sorted((str(p), p.stat().st_mtime) for p in self.root.rglob("*.y*ml")))
        except OSError:
            return ()

    def reload(self) -> None:
        """Load every flow file on its own. A file that does not load is reported (``broken``,
        and a warning) and its flow keeps its last good version, if it had one; the other
        flows go on. Raises FlowError only when no flow loads at all."""
        stamp = self._files_stamp()
        flows, broken = load_each(self.root)
        bad_paths = {str(path.resolve()) for path in broken}
        for flow_id, flow in self._flows.items():  # an edit that broke a file: keep serving it
            if flow_id not in flows and flow.path in bad_paths:
                flows[flow_id] = flow
        problems = [problem for found in broken.values() for problem in found]
        if problems and not flows:
            raise FlowError(problems)
        if problems and problems != self.broken:
            log.warning(
                "%d flow file(s) do not load and are left out (run `parley validate`):\n%s",
                len(broken),
                "\n".join(str(problem) for problem in problems),
            )
        self._flows = flows
        self._stamp = stamp
        self.broken = problems
        self._broken_by_id = {path.stem: found for path, found in broken.items()}
        for flow in flows.values():
            self._by_hash[flow.hash] = flow

    def refresh(self, *, force: bool = False) -> None:
        """Pick up edited files (looked at most once per RELOAD_EVERY seconds, not on every
        request); a broken edit keeps the last good flows running."""
        now = time.monotonic()
        if now - self._checked_at < RELOAD_EVERY and not force:
            return
        self._checked_at = now
        if self._files_stamp() != self._stamp:
            try:
                self.reload()
            except Exception as err:  # a bad edit must not take the running service down
                self._stamp = self._files_stamp()
                shown = err if isinstance(err, FlowError) else f"{type(err).__name__}: {err}"
                log.warning(
                    "flows changed but do not load; still serving the previous ones:\n%s",
                    shown,
                    exc_info=not isinstance(err, FlowError),  # not a bad edit: Parley's bug
                )

    def title(self, flow_id: str, default: str) -> str:
        """A flow's title for people to read, ``default`` when the flow is gone or broken."""
        flow = self._flows.get(flow_id)
        return flow.title if flow is not None else default

    def get(self, flow_id: str) -> Flow:
        flow = self._flows.get(flow_id)
        if flow is None:
            broken = self._broken_by_id.get(flow_id, [])  # its file, or a block it includes
            if broken:
                raise FlowNotFound(
                    f"the flow '{flow_id}' does not load: {broken[0]}"
                    + (
                        f" (and {len(broken) - 1} more: run `parley validate`)"
                        if len(broken) > 1
                        else ""
                    )
                )
            known = ", ".join(sorted(self._flows)) or "none"
            raise FlowNotFound(f"no flow called '{flow_id}' (flows: {known})")
        return flow

    def all(self) -> list[Flow]:
        return [self._flows[k] for k in sorted(self._flows)]

    def version_id(self, conn: Connection, flow: Flow, now: datetime) -> int:
        """The ``flow_version`` row id for a flow, storing the version on first use.

        Remembered only once found stored: an id stored by this very transaction may roll
        back (with its savepoint, while the rest of a SQLite batch commits) and SQLite then
        gives the same id to another flow's version; the next start looks it up again."""
        cached = self._version_ids.get(flow.hash)
        if cached is not None:
            return cached
        version_id, stored_before = sql.flow_version_id(
            conn,
            flow_id=flow.id,
            hash=flow.hash,
            title=flow.title,
            definition=flow.definition,
            now=now,
        )
        if stored_before:
            self._flows_by_version[version_id] = flow
            self._version_ids[flow.hash] = version_id
        return version_id

    def forget_version(self, flow: Flow) -> None:
        """The transaction that may have stored ``flow``'s version row rolled back: look
        it up again next time (a cached id of a row never committed fails every start)."""
        version_id = self._version_ids.pop(flow.hash, None)
        if version_id is not None:
            self._flows_by_version.pop(version_id, None)

    def flow_for_version(self, conn: Connection, version_id: int) -> Flow:
        """The flow a stored conversation runs on: cached, else rebuilt from its definition."""
        flow = self._flows_by_version.get(version_id)
        if flow is not None:
            return flow
        stored = sql.flow_version(conn, id=version_id)
        if stored is None:
            raise FlowNotFound(f"flow version {version_id} is not stored")
        hash_, definition = stored
        flow = self._by_hash.get(hash_) or flow_from_definition(definition)
        self._by_hash[hash_] = flow
        self._flows_by_version[version_id] = flow
        return flow

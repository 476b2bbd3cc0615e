"""Which flows exist: the current files in ``flows/`` plus every version ever stored.

A conversation keeps the flow version it started on, so edits never break a conversation in
progress: old versions are rebuilt from the definition stored in ``flow_version``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import FlowError, FlowNotFound
from bot.flow import Flow, flow_from_definition, load_all
from bot.store import repo
from bot.store.models import FlowVersion

log = logging.getLogger("parley.flows")


class FlowCatalog:
    """Current flows (reloaded when a file changes) and a cache of stored versions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._flows: dict[str, Flow] = {}
        self._stamp: tuple[tuple[str, float], ...] = ()
        self._by_hash: dict[str, Flow] = {}
        self._version_ids: dict[str, int] = {}
        self.reload()

    def _files_stamp(self) -> tuple[tuple[str, float], ...]:
        try:
            return tuple(sorted((str(p), p.stat().st_mtime) for p in self.root.rglob("*.y*ml")))
        except OSError:
            return ()

    def reload(self) -> None:
        """Load every flow; raises FlowError (and keeps the previous flows) if any is bad."""
        stamp = self._files_stamp()
        flows = load_all(self.root)
        self._flows = flows
        self._stamp = stamp
        for flow in flows.values():
            self._by_hash[flow.hash] = flow

    def refresh(self) -> None:
        """Pick up edited files; a broken edit keeps the last good flows running."""
        if os.environ.get("PARLEY_NO_RELOAD"):
            return
        if self._files_stamp() != self._stamp:
            try:
                self.reload()
            except FlowError as err:  # a bad edit must not take the running service down
                self._stamp = self._files_stamp()
                log.warning(
                    "flows changed but do not load; still serving the previous ones:\n%s", err
                )

    def get(self, flow_id: str) -> Flow:
        flow = self._flows.get(flow_id)
        if flow is None:
            known = ", ".join(sorted(self._flows)) or "none"
            raise FlowNotFound(f"no flow called '{flow_id}' (flows: {known})")
        return flow

    def all(self) -> list[Flow]:
        return [self._flows[k] for k in sorted(self._flows)]

    async def version_id(self, session: AsyncSession, flow: Flow) -> int:
        """The ``flow_version`` row id for a flow, storing the version on first use."""
        cached = self._version_ids.get(flow.hash)
        if cached is not None:
            return cached
        row = await repo.get_or_create_flow_version(
            session, flow_id=flow.id, hash=flow.hash, title=flow.title, definition=flow.definition
        )
        assert row.id is not None
        self._version_ids[flow.hash] = row.id
        return row.id

    async def for_version(self, session: AsyncSession, version_id: int) -> Flow:
        for hash_, vid in self._version_ids.items():
            if vid == version_id and hash_ in self._by_hash:
                return self._by_hash[hash_]
        row: FlowVersion | None = await repo.get_flow_version(session, id=version_id)
        if row is None:
            raise FlowNotFound(f"flow version {version_id} is not stored")
        flow = self._by_hash.get(row.hash) or flow_from_definition(row.definition)
        self._by_hash[row.hash] = flow
        self._version_ids[row.hash] = version_id
        return flow

    def forget_version_ids(self) -> None:
        """Drop cached row ids (tests that recreate the database use this)."""
        self._version_ids.clear()

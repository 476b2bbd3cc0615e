"""Shutdown waits for Bolt listeners still running, so their writes land before the
database closes (Bolt runs listeners in tasks of its own after the ack)."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace
from typing import Any

from bot.channels.slack.app import SlackRuntime


async def test_drain_waits_for_tracked_listeners_and_keeps_their_signature() -> None:
    runtime: Any = SimpleNamespace(inflight=set())
    finished: list[str] = []
    release = asyncio.Event()

    async def on_answer(ack: Any, body: dict[str, Any]) -> None:
        await release.wait()
        finished.append(body["id"])

    listener = SlackRuntime.tracked(runtime, on_answer)
    # Bolt injects arguments by name, read through __wrapped__
    assert list(inspect.signature(listener).parameters) == ["ack", "body"]
    task = asyncio.create_task(listener(ack=None, body={"id": "a1"}))
    await asyncio.sleep(0)
    assert runtime.inflight == {task}
    drain = asyncio.create_task(SlackRuntime.drain(runtime, timeout=5))
    await asyncio.sleep(0.01)
    assert not drain.done()  # still waiting for the listener
    release.set()
    await drain
    assert finished == ["a1"] and runtime.inflight == set()


async def test_drain_gives_up_after_its_timeout() -> None:
    runtime: Any = SimpleNamespace(inflight=set())

    async def stuck() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(SlackRuntime.tracked(runtime, stuck)())
    await asyncio.sleep(0)
    await SlackRuntime.drain(runtime, timeout=0.05)
    assert not task.done()
    task.cancel()

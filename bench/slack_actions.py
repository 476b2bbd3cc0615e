"""Slack block_actions fully handled per second: Parley vs a bare slack-bolt AsyncApp.

Both run in this process against the same local fake Slack (tests/slack_fake.py), with the
same Web API client settings, the same signed payloads sent over real HTTP with the same
concurrency. "Handled" means, for Parley, the answer is stored and the next question is
posted to the fake Slack (the old question is also updated); for the floor, the bare Bolt app
acks and posts one message. Printed: both rates and their ratio (target >= 0.5).

    /work/venv/bin/python bench/slack_actions.py [--actions 1000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request  # noqa: E402
from slack_bolt.async_app import AsyncApp  # noqa: E402
from slack_fake import FakeSlack, block_actions, interactive_body, sign  # noqa: E402

from bot.app import create_app  # noqa: E402
from bot.channels.slack.app import SLACK, make_client  # noqa: E402
from bot.config import load_settings  # noqa: E402

SECRET = "bench-secret"
FLOW = """\
id: bench
kind: microsurvey
title: Bench
steps:
  - {id: first, type: nps, text: "How likely are you to recommend us?"}
  - {id: second, type: csat, text: "How satisfied are you?"}
outro: Thanks.
"""


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def fire(url: str, payloads: list[str], concurrency: int) -> None:
    """POST every signed payload, ``concurrency`` at a time."""
    queue = list(reversed(payloads))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                headers = {
                    "Content-Type": "application/x-www-form-urlencoded",
                    **sign(body, SECRET),
                }
                async with session.post(url, data=body.encode(), headers=headers) as response:
                    if response.status != 200:
                        raise RuntimeError(f"{response.status}: {await response.text()}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def wait_posts(fake: FakeSlack, target: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for c in fake.calls if c.method == "chat.postMessage") < target:
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the fake Slack to see every reply")
        await asyncio.sleep(0.005)


def click_payload(user: str, conversation_id: str, value: int) -> str:
    action = {
        "type": "button",
        "action_id": "parley:answer:first",
        "block_id": f"parley:{conversation_id}:first:a",
        "text": {"type": "plain_text", "text": str(value)},
        "value": json.dumps({"c": conversation_id, "v": value}, separators=(",", ":")),
    }
    message = {
        "ts": "1.0",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "How likely…"}}],
    }
    return interactive_body(block_actions(user, action, message=message))


async def bench_parley(
    fake: FakeSlack, actions: int, concurrency: int, workdir: Path, db: str | None = None
) -> float:
    flows = workdir / "flows"
    flows.mkdir()
    (flows / "bench.yml").write_text(FLOW)
    settings = load_settings(
        db=db or str(workdir / "bench.db"),
        flows=flows,
        slack_bot_token="xoxb-bench",
        slack_signing_secret=SECRET,
        slack_api_url=fake.base_url + "/api/",
    )
    app = create_app(settings)
    runner, url = await serve(app)
    try:
        runtime = app[SLACK]
        flow = runtime.catalog.get("bench")
        payloads = []
        for i in range(actions):  # set-up, not timed: one open conversation per person
            reply = await runtime.respondents.start_flow(
                runtime.client, flow=flow, team_id="T1", user_id=f"U{i}", channel=f"DU{i}"
            )
            payloads.append(click_payload(f"U{i}", reply.conversation_id, i % 11))
        before = sum(1 for c in fake.calls if c.method == "chat.postMessage")
        started = time.perf_counter()
        await fire(url + "/slack/events", payloads, concurrency)
        await wait_posts(fake, before + actions)
        elapsed = time.perf_counter() - started
        updates = sum(1 for c in fake.calls if c.method == "chat.update")
        if updates < actions:  # the old question's update follows the next question's post
            await asyncio.sleep(0.5)
        return actions / elapsed
    finally:
        await runner.cleanup()


async def bench_bare(fake: FakeSlack, actions: int, concurrency: int) -> float:
    session = aiohttp.ClientSession()
    settings = load_settings(slack_bot_token="xoxb-bench", slack_api_url=fake.base_url + "/api/")
    client = make_client(settings, session, token="xoxb-bench")
    bolt = AsyncApp(client=client, signing_secret=SECRET)

    @bolt.action(re.compile(r"^parley:answer:"))
    async def on_click(ack: Any, body: dict[str, Any], client: Any) -> None:
        await ack()
        await client.chat_postMessage(channel=body["channel"]["id"], text="next question")

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    app = web.Application()
    app.router.add_post("/slack/events", events)
    runner, url = await serve(app)
    try:
        payloads = [click_payload(f"U{i}", "0" * 32, i % 11) for i in range(actions)]
        before = sum(1 for c in fake.calls if c.method == "chat.postMessage")
        started = time.perf_counter()
        await fire(url + "/slack/events", payloads, concurrency)
        await wait_posts(fake, before + actions)
        return actions / (time.perf_counter() - started)
    finally:
        await runner.cleanup()
        await session.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--db", default=None, help="an EMPTY database URL (default: a temporary SQLite file)"
    )
    args = parser.parse_args()
    fake = FakeSlack()
    fake_runner, fake.base_url = await serve(fake.app())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bare = await bench_bare(fake, args.actions, args.concurrency)
            fake.calls.clear()
            parley = await bench_parley(fake, args.actions, args.concurrency, Path(tmp), args.db)
    finally:
        await fake_runner.cleanup()
    print(
        f"actions: {args.actions}, concurrency: {args.concurrency}, store: {'SQLite' if not args.db else args.db.split(':')[0]}"
    )
    print(f"bare slack-bolt AsyncApp (ack + 1 post):          {bare:8.1f} actions/s")
    print(f"Parley (answer stored + next question + update): {parley:8.1f} actions/s")
    print(f"ratio: {parley / bare:.2f} (target >= 0.50)")


if __name__ == "__main__":
    asyncio.run(main())

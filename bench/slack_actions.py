"""Slack block_actions fully handled per second: Parley vs a bare slack-bolt AsyncApp.

Both apps run in this process against the same fake Slack (tests/slack_fake.py), with the same Web
API client settings, the same signed payloads sent over real HTTP with the same concurrency.
"Handled" means, for Parley, the answer is stored and the next question is posted to the fake
Slack (the old question is also updated); for the floor, the bare Bolt app acks and posts one
message. Rounds alternate floor and Parley; printed are each round and the median ratio
(target >= 0.5), by wall clock and by this process's CPU time.

The fake Slack runs in its own process, as Slack's servers do: Parley makes two Web API calls
per click to the floor's one, and answering them is Slack's work, not ours. ``--fake-here``
runs it in this process instead (then its CPU is charged to both sides).

    /work/venv/bin/python bench/slack_actions.py [--actions 1000] [--concurrency 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
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

from bench.web_api import free_port  # noqa: E402
from bot.app import create_app  # noqa: E402
from bot.channels.slack.app import SLACK, make_client  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.store.slack import get_message  # noqa: E402

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


@dataclass(frozen=True)
class Rate:
    actions: int
    seconds: float  # wall clock
    cpu: float  # this process's CPU time: load client and app (and the fake with --fake-here)

    @property
    def per_second(self) -> float:
        return self.actions / self.seconds

    @property
    def per_cpu_second(self) -> float:
        return self.actions / self.cpu if self.cpu else float("nan")


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def settle_heap() -> None:
    """Before timing either side: collect, then freeze what exists, as ``parley serve`` does
    after start-up. Otherwise each side pays for full collections walking whatever earlier
    rounds left in this process (bare Bolt ran 750 vs 1,300 clicks/s with the GC off)."""
    gc.collect()
    gc.freeze()


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


class Slack:
    """The fake Slack as the bench sees it: where it is, and how many messages it got."""

    def __init__(self, base_url: str, local: FakeSlack | None = None) -> None:
        self.base_url = base_url
        self.local = local
        self._session: aiohttp.ClientSession | None = None

    async def posts(self) -> int:
        if self.local is not None:
            return self.local.counts["chat.postMessage"]
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.get(self.base_url + "/_fake/counts") as response:
            return int((await response.json()).get("chat.postMessage", 0))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def run_fake(port: int) -> None:
    """``slack_actions.py --fake PORT``: the fake Slack alone, in its own process."""
    web.run_app(
        FakeSlack(keep_calls=False).app(), host="127.0.0.1", port=port, print=None, access_log=None
    )


async def start_fake() -> tuple[subprocess.Popen[bytes], Slack]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--fake", str(port)])
    slack = Slack(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while True:
        try:
            await slack.posts()
            return proc, slack
        except aiohttp.ClientError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("the fake Slack did not start") from None
            await asyncio.sleep(0.1)


async def wait_posts(slack: Slack, target: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while await slack.posts() < target:
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the fake Slack to see every reply")
        await asyncio.sleep(0.01)


def click_payload(user: str, conversation_id: str, value: int, ts: str = "1.0") -> str:
    """A click on button ``value`` of the question message ``ts`` (as Slack sends it: the
    payload names the very message clicked)."""
    action = {
        "type": "button",
        "action_id": f"parley:answer:first:{value}",
        "block_id": f"parley:{conversation_id}:first:a",
        "text": {"type": "plain_text", "text": str(value)},
        "value": json.dumps({"c": conversation_id, "v": value}, separators=(",", ":")),
    }
    message = {
        "ts": ts,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "How likely…"}}],
    }
    return interactive_body(block_actions(user, action, message=message))


async def bench_parley(
    fake: Slack,
    actions: int,
    concurrency: int,
    workdir: Path,
    db: str | None = None,
    people: str = "U",
) -> Rate:
    flows = workdir / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "bench.yml").write_text(FLOW)
    settings = load_settings(
        db=db or str(workdir / "bench.db"),
        flows=flows,
        slack_bot_token="xoxb-bench",
        slack_signing_secret=SECRET,
        slack_api_url=fake.base_url + "/api/",
    )
    app = create_app(settings, freeze_heap=True)  # as `parley serve` does
    runner, url = await serve(app)
    try:
        runtime = app[SLACK]
        flow = runtime.catalog.get("bench")
        payloads = []
        for i in range(actions):  # set-up, not timed: one open conversation per person
            reply = await runtime.respondents.start_flow(
                runtime.client,
                flow=flow,
                team_id="T1",
                user_id=f"{people}{i}",
                channel=f"D{people}{i}",
            )
            asked = await runtime.db.read(
                partial(get_message, conversation_id=reply.conversation_id, step="first")
            )
            assert asked is not None and asked.ts
            payloads.append(click_payload(f"{people}{i}", reply.conversation_id, i % 11, asked.ts))
        before = await fake.posts()
        settle_heap()
        started, cpu = time.perf_counter(), time.process_time()
        await fire(url + "/slack/events", payloads, concurrency)
        await wait_posts(fake, before + actions)
        rate = Rate(actions, time.perf_counter() - started, time.process_time() - cpu)
        await asyncio.sleep(0.2)  # untimed: the last old questions' updates follow their posts
        return rate
    finally:
        await runner.cleanup()


async def bench_bare(fake: Slack, actions: int, concurrency: int) -> Rate:
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
        before = await fake.posts()
        settle_heap()
        started, cpu = time.perf_counter(), time.process_time()
        await fire(url + "/slack/events", payloads, concurrency)
        await wait_posts(fake, before + actions)
        return Rate(actions, time.perf_counter() - started, time.process_time() - cpu)
    finally:
        await runner.cleanup()
        await session.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating floor/Parley runs; the median counts"
    )
    parser.add_argument(
        "--fake-here", action="store_true", help="run the fake Slack in this process"
    )
    parser.add_argument(
        "--db", default=None, help="an EMPTY database URL (default: a temporary SQLite file)"
    )
    args = parser.parse_args()
    if args.fake_here:
        local = FakeSlack(keep_calls=False)
        fake_runner, local.base_url = await serve(local.app())
        fake, stop = Slack(local.base_url, local), fake_runner.cleanup
    else:
        proc, fake = await start_fake()

        async def stop() -> None:
            proc.terminate()
            proc.wait(10)

    rounds: list[tuple[Rate, Rate]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            await bench_bare(fake, args.actions // 4, args.concurrency)  # warm-up, not counted
            for n in range(args.rounds):
                bare = await bench_bare(fake, args.actions, args.concurrency)
                workdir = Path(tmp) / f"round{n}"
                workdir.mkdir()
                parley = await bench_parley(
                    fake, args.actions, args.concurrency, workdir, args.db, people=f"R{n}U"
                )
                rounds.append((bare, parley))
    finally:
        await fake.close()
        await stop()
    store = "SQLite" if not args.db else args.db.split(":")[0]
    where = "this process" if args.fake_here else "its own process"
    print(
        f"actions: {args.actions}, concurrency: {args.concurrency}, store: {store}, fake Slack in {where}"
    )
    print("round   bare slack-bolt (ack + 1 post)   Parley (store + post + update)   ratio")
    print("        actions/s  per CPU-second        actions/s  per CPU-second        wall   CPU")
    for n, (bare, parley) in enumerate(rounds, 1):
        print(
            f"{n:>5} {bare.per_second:>11.1f} {bare.per_cpu_second:>15.1f}"
            f" {parley.per_second:>16.1f} {parley.per_cpu_second:>15.1f}"
            f" {parley.per_second / bare.per_second:>11.2f} {parley.per_cpu_second / bare.per_cpu_second:>5.2f}"
        )
    wall = statistics.median(p.per_second / b.per_second for b, p in rounds)
    cpu = statistics.median(p.per_cpu_second / b.per_cpu_second for b, p in rounds)
    print(
        f"ratio, median of {len(rounds)} rounds: {wall:.2f} by wall clock, {cpu:.2f} by CPU time (target >= 0.50)"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--fake":
        run_fake(int(sys.argv[2]))
    else:
        asyncio.run(main())

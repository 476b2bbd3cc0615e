"""Web chat API throughput against a floor measured in the same run.

    python bench/web_api.py [--respondents 1000] [--concurrency 50] [--rounds 5]

Starts two servers, each in its own process so the client never competes with a server for
the interpreter:

* **parley** — ``parley serve`` on a fresh SQLite file (``PARLEY_RATE_LIMIT=off``); every
  respondent starts the ``nps`` flow and answers until the flow ends (score, then the
  follow-up text question), exactly as the widget does.
* **floor** — a bare aiohttp handler that parses the same JSON answer and does one
  autocommitted stdlib-sqlite3 INSERT (WAL, ``synchronous=NORMAL``) per request.

Both are driven by the same aiohttp client at the same concurrency. Parley's answers/s
counts the wall time of the whole survey, start requests included (a conservative ratio).
Both servers stay up for the whole run and are measured in turns — parley then floor, then
floor then parley, ``--rounds`` times — and the median of the rounds' ratios counts: the
speed of a shared 2-core machine drifts by a third from one second to the next, and a
round's two halves are measured a second apart. DESIGN.md's budget: >= 0.5. Each row also
shows the server process's CPU per request (from /proc, Linux only), which says where the
ratio comes from without the client's share of the two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.5
TEXTS = [
    "Support answered fast and fixed it.",
    "Too expensive for a team our size.",
    "The reports are great, the setup was hard.",
    "Honestly it just works.",
]


# --- the floor server (runs in its own process: `web_api.py --floor PORT DB`) -------------


def run_floor(port: int, db_path: str) -> None:
    from aiohttp import web

    sys.path.insert(0, str(ROOT))
    from bot.cli import event_loop

    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS answer (id INTEGER PRIMARY KEY, conversation TEXT, "
        "step TEXT, value TEXT, created_at REAL)"
    )

    async def answer(request: web.Request) -> web.Response:
        body = await request.json()
        conn.execute(
            "INSERT INTO answer (conversation, step, value, created_at) VALUES (?, ?, ?, ?)",
            (request.match_info["id"], body["step"], json.dumps(body["value"]), time.time()),
        )
        return web.json_response({"ok": True})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/api/v1/conversations/{id}/answers", answer)
    app.router.add_get("/healthz", healthz)
    # the event loop `parley serve` runs on (uvloop where installed): the same footing
    loop = event_loop()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)


# --- client ------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    answers: int = 0
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # per request, seconds
    errors: int = 0
    server_cpu: float | None = None  # the server process's CPU seconds while measured

    @property
    def cpu_per_request(self) -> float:
        """Server CPU microseconds per request: where the time goes, free of client noise."""
        if self.server_cpu is None or not self.requests:
            return float("nan")
        return self.server_cpu / self.requests * 1e6

    @property
    def rate(self) -> float:
        return self.answers / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited early with code {proc.returncode}")
            try:
                async with session.get(base + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"server at {base} did not come up in {timeout:.0f} s")


async def timed(
    session: aiohttp.ClientSession,
    result: Result,
    method: str,
    url: str,
    body: dict,
    headers: dict | None = None,
) -> tuple[int, dict]:
    began = time.perf_counter()
    async with session.request(method, url, json=body, headers=headers) as resp:
        data = await resp.json()
        status = resp.status
    result.latencies.append(time.perf_counter() - began)
    result.requests += 1
    if status >= 400:
        result.errors += 1
    return status, data


async def parley_respondent(
    session: aiohttp.ClientSession, base: str, result: Result, rng: random.Random
) -> None:
    status, data = await timed(
        session, result, "POST", base + "/api/v1/conversations", {"flow": "nps"}
    )
    if status not in (200, 201):
        raise RuntimeError(f"start failed: {status} {data}")
    headers = {"X-Parley-Token": data["respondent_token"]}
    url = f"{base}/api/v1/conversations/{data['id']}/answers"
    while not data["done"]:
        ask = next(m for m in data["messages"] if m["type"] == "ask")
        kind = ask["input"]["kind"]
        value: object = rng.randint(0, 10) if kind == "nps" else rng.choice(TEXTS)
        status, data = await timed(
            session, result, "POST", url, {"step": ask["step"], "value": value}, headers
        )
        if status != 200:
            raise RuntimeError(f"answer failed: {status} {data}")
        result.answers += 1


async def floor_request(
    session: aiohttp.ClientSession, base: str, result: Result, rng: random.Random, i: int
) -> None:
    url = f"{base}/api/v1/conversations/{i:032x}/answers"
    value: object = rng.randint(0, 10) if i % 2 == 0 else rng.choice(TEXTS)
    status, _ = await timed(session, result, "POST", url, {"step": "score", "value": value})
    if status != 200:
        raise RuntimeError(f"floor answer failed: {status}")
    result.answers += 1


async def drive(name: str, jobs: int, concurrency: int, work) -> Result:  # type: ignore[no-untyped-def]
    result = Result(name)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        rng = random.Random(7)

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await work(session, result, rng, i)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - began
    return result


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by a process; None where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive_server(
    name: str, proc: subprocess.Popen[bytes], jobs: int, concurrency: int, work
) -> Result:  # type: ignore[no-untyped-def]
    """``drive`` plus the CPU the server spent meanwhile."""
    before = process_cpu(proc.pid)
    result = await drive(name, jobs, concurrency, work)
    after = process_cpu(proc.pid)
    if before is not None and after is not None:
        result.server_cpu = after - before
    return result


def start_server(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def parley_command(tmp: Path, port: int) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PARLEY_RATE_LIMIT": "off"}
    for name in (
        "DATABASE_URL",
        "PARLEY_DB",
        "SLACK_BOT_TOKEN",
        "SLACK_APP_TOKEN",
        "SLACK_CLIENT_ID",
    ):
        env.pop(name, None)
    cmd = [
        sys.executable, "-c", "from bot.cli import main; main()", "serve",
        "--db", str(tmp / "parley.db"), "--flows", str(ROOT / "flows"), "--port", str(port),
    ]  # fmt: skip
    return cmd, env


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base: str
    work: Callable[[aiohttp.ClientSession, Result, random.Random, int], Awaitable[None]]


async def start_servers(tmp: Path) -> tuple[Server, Server]:
    parley_port, floor_port = free_port(), free_port()
    cmd, env = parley_command(tmp, parley_port)
    parley_proc = start_server(cmd, env, tmp / "parley.log")
    floor_cmd = [sys.executable, str(Path(__file__).resolve()), "--floor"]
    floor_proc = start_server(
        [*floor_cmd, str(floor_port), str(tmp / "floor.db")], dict(os.environ), tmp / "floor.log"
    )
    parley_base = f"http://127.0.0.1:{parley_port}"
    floor_base = f"http://127.0.0.1:{floor_port}"

    async def parley_one(
        session: aiohttp.ClientSession, result: Result, rng: random.Random, _i: int
    ) -> None:
        await parley_respondent(session, parley_base, result, rng)

    async def floor_one(
        session: aiohttp.ClientSession, result: Result, rng: random.Random, i: int
    ) -> None:
        await floor_request(session, floor_base, result, rng, i)

    parley = Server("parley", parley_proc, parley_base, parley_one)
    floor = Server("floor", floor_proc, floor_base, floor_one)
    try:
        await wait_ready(parley_base, parley_proc)
        await wait_ready(floor_base, floor_proc)
    except BaseException:
        stop(parley_proc)
        stop(floor_proc)
        raise
    return parley, floor


async def measure(server: Server, jobs: int, concurrency: int) -> Result:
    return await drive_server(server.name, server.proc, jobs, concurrency, server.work)


def count_parley_answers(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM answer").fetchone()[0])


async def main_async(args: argparse.Namespace) -> int:
    rounds: list[tuple[Result, Result]] = []
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as name:
        tmp = Path(name)
        parley, floor = await start_servers(tmp)
        try:
            await drive("warmup", args.warmup, args.concurrency, parley.work)
            await drive("warmup", args.warmup * 2, args.concurrency, floor.work)
            for n in range(args.rounds):
                if n % 2 == 0:  # parley first, then floor first: neither always goes second
                    p = await measure(parley, args.respondents, args.concurrency)
                    f = await measure(floor, p.answers, args.concurrency)
                else:
                    f = await measure(floor, 2 * args.respondents, args.concurrency)
                    p = await measure(parley, args.respondents, args.concurrency)
                rounds.append((p, f))
        finally:
            stop(parley.proc)
            stop(floor.proc)
        stored = count_parley_answers(tmp / "parley.db")
    expected = sum(p.answers for p, _ in rounds) + args.warmup * 2
    print(f"parley stored {stored} answers (expected {expected})")
    print(
        f"web API on SQLite — {args.respondents} respondents completing nps per round, concurrency {args.concurrency}, {os.cpu_count()} CPUs"
    )
    print(
        f"{'':14} {'answers':>8} {'requests':>9} {'seconds':>8} {'answers/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'server µs/req':>14}"
    )
    for n, pair in enumerate(rounds, 1):
        for r in pair:
            label = f"{r.name} {n}"
            print(
                f"{label:14} {r.answers:8d} {r.requests:9d} {r.seconds:8.2f} {r.rate:10.1f} {r.pct(0.50):8.2f} {r.pct(0.99):8.2f} {r.errors:7d} {r.cpu_per_request:14.0f}"
            )
    ratios = [parley.rate / floor.rate if floor.rate else 0.0 for parley, floor in rounds]
    ratio = statistics.median(ratios)
    verdict = "OK" if ratio >= TARGET else "BELOW TARGET"
    each = ", ".join(f"{r:.2f}" for r in ratios)
    print(
        f"ratio parley/floor answers/s = {ratio:.2f}, median of {len(rounds)} rounds ({each})"
        f" (target >= {TARGET}) {verdict}"
    )
    return 0 if ratio >= TARGET and stored == expected else 1


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--floor":
        run_floor(int(sys.argv[2]), sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--respondents", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="parley and floor measured in turn, this many times; the median counts",
    )
    parser.add_argument("--warmup", type=int, default=50, help="respondents before measuring")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())

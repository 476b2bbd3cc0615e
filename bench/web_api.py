"""Web chat API throughput against a floor measured in the same run.

    python bench/web_api.py [--respondents 1000] [--concurrency 50]

Starts two servers, one after the other, each in its own process so the client never
competes with the server for the interpreter:

* **parley** — ``parley serve`` on a fresh SQLite file (``PARLEY_RATE_LIMIT=off``); every
  respondent starts the ``nps`` flow and answers until the flow ends (score, then the
  follow-up text question), exactly as the widget does.
* **floor** — a bare aiohttp handler that parses the same JSON answer and does one
  autocommitted stdlib-sqlite3 INSERT (WAL, ``synchronous=NORMAL``) per request.

Both are driven by the same aiohttp client at the same concurrency. Parley's answers/s
counts the wall time of the whole survey, start requests included (a conservative ratio).
The pair runs ``--rounds`` times (each on a fresh database) and the median ratio counts: on
a 2-core machine a single pair swings by a third either way. DESIGN.md's budget: >= 0.5.
Each row also shows the server process's CPU per request (from /proc, Linux only), which
says where the ratio comes from without the client's share of the two cores.
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
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


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


async def bench_parley(tmp: Path, respondents: int, concurrency: int, warmup: int) -> Result:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
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
    proc = start_server(cmd, env, tmp / "parley.log")
    try:
        await wait_ready(base, proc)

        async def one(
            session: aiohttp.ClientSession, result: Result, rng: random.Random, _i: int
        ) -> None:
            await parley_respondent(session, base, result, rng)

        await drive("warmup", warmup, concurrency, one)
        return await drive_server("parley", proc, respondents, concurrency, one)
    finally:
        stop(proc)


async def bench_floor(tmp: Path, requests: int, concurrency: int, warmup: int) -> Result:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--floor",
        str(port),
        str(tmp / "floor.db"),
    ]
    proc = start_server(cmd, dict(os.environ), tmp / "floor.log")
    try:
        await wait_ready(base, proc)

        async def one(
            session: aiohttp.ClientSession, result: Result, rng: random.Random, i: int
        ) -> None:
            await floor_request(session, base, result, rng, i)

        await drive("warmup", warmup, concurrency, one)
        return await drive_server("floor", proc, requests, concurrency, one)
    finally:
        stop(proc)


def count_parley_answers(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM answer").fetchone()[0])


async def main_async(args: argparse.Namespace) -> int:
    rounds: list[tuple[Result, Result]] = []
    all_stored = True
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as name:
        for n in range(args.rounds):
            tmp = Path(name) / f"round{n}"
            tmp.mkdir()
            parley = await bench_parley(tmp, args.respondents, args.concurrency, args.warmup)
            stored = count_parley_answers(tmp / "parley.db")
            expected = parley.answers + args.warmup * 2
            all_stored = all_stored and stored == expected
            floor = await bench_floor(tmp, parley.answers, args.concurrency, args.warmup * 2)
            rounds.append((parley, floor))
            print(f"round {n + 1}: parley stored {stored} answers (expected {expected})")
    print(
        f"web API on SQLite — {args.respondents} respondents completing nps, concurrency {args.concurrency}, {os.cpu_count()} CPUs"
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
    return 0 if ratio >= TARGET and all_stored else 1


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
        default=3,
        help="Parley then floor, this many times; the median counts",
    )
    parser.add_argument("--warmup", type=int, default=50, help="respondents before measuring")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())

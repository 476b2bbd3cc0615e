"""A per-client token bucket in memory: ``PARLEY_RATE_LIMIT`` requests per minute.

It protects one process from a runaway script or a flood of junk answers; it is not a
distributed quota (each replica counts its own). A client is its respondent token when it
sends one, else its IP address, so many respondents behind one office NAT do not share one
bucket. Memory is bounded: idle buckets are full again after a minute and are dropped.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

from aiohttp import web

from bot.channels.web.errors import ApiError, Handler
from bot.channels.web.identity import COOKIE, TOKEN_HEADER

MAX_BUCKETS = 100_000


class RateLimiter:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last time)

    def take(self, client: str) -> float:
        """Spend one request; returns 0 when allowed, else seconds until the next one is."""
        now = self.clock()
        tokens, last = self._buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            if client not in self._buckets and len(self._buckets) >= MAX_BUCKETS:
                self._sweep(now)
            self._buckets[client] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _sweep(self, now: float) -> None:
        """Drop buckets that have refilled completely: forgetting them changes nothing."""
        refill = self.capacity / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}
        if len(self._buckets) >= MAX_BUCKETS:  # a flood of fresh clients: start over
            self._buckets.clear()

    def middleware(self) -> web.middleware:  # type: ignore[valid-type]
        @web.middleware
        async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith("/api/") and request.method != "OPTIONS":
                wait = self.take(client_of(request))
                if wait > 0:
                    seconds = str(max(1, math.ceil(wait)))
                    raise ApiError(
                        429,
                        "rate_limited",
                        f"too many requests; try again in {seconds} s",
                        headers={"Retry-After": seconds},
                    )
            return await handler(request)

        return rate_limit


def client_of(request: web.Request) -> str:
    token = request.headers.get(TOKEN_HEADER) or request.cookies.get(COOKIE)
    if token:
        return "t:" + hashlib.sha256(token[:2048].encode()).hexdigest()[:32]
    return "ip:" + (request.remote or "unknown")

"""Token buckets in memory: ``PARLEY_RATE_LIMIT`` requests per minute per client.

It protects one process from a runaway script or a flood of junk answers; it is not a
distributed quota (each replica counts its own). A client is its respondent token when it
sends one, else its IP address, so many respondents behind one office NAT do not share one
bucket. The token is whatever the client sends, unchecked, so every request is also charged
to its IP address, with ``IP_FACTOR`` times the limit: rotating made-up tokens cannot get
past that, and an office NAT still has room for several busy respondents. Memory is bounded:
idle buckets are full again after a minute and are dropped.

Behind a reverse proxy every request comes from the proxy's address, and one bucket would
throttle the whole site: ``PARLEY_TRUSTED_PROXIES`` names the proxies whose
``X-Forwarded-For`` is believed (the nearest address in it that is not a trusted proxy is the
client). Nobody else's header is read, so a client cannot pick its own bucket.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable, Sequence

from aiohttp import web

from bot.channels.web.errors import ApiError
from bot.channels.web.identity import COOKIE, TOKEN_HEADER, api_client, bearer_key

MAX_BUCKETS = 100_000
IP_FACTOR = 5  # one IP address may send this many times the per-client limit


class RateLimiter:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last time)

    def take(self, client: str) -> float:
        """Spend one request; returns 0 when allowed, else seconds until the next one is."""
        now = self.clock()
        tokens = self._tokens(client, now)
        if tokens >= 1.0:
            if client not in self._buckets and len(self._buckets) >= MAX_BUCKETS:
                self._sweep(now)
            self._buckets[client] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def wait(self, client: str) -> float:
        """Seconds until ``client`` may send a request (0: now), spending nothing."""
        tokens = self._tokens(client, self.clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _tokens(self, client: str, now: float) -> float:
        tokens, last = self._buckets.get(client, (self.capacity, now))
        return min(self.capacity, tokens + (now - last) * self.rate)

    def _sweep(self, now: float) -> None:
        """Drop buckets that have refilled completely: forgetting them changes nothing."""
        refill = self.capacity / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}
        if len(self._buckets) >= MAX_BUCKETS:  # a flood of fresh clients: start over
            self._buckets.clear()


class WebRateLimit:
    """The API's limit: a bucket per client and, with ``IP_FACTOR`` times the room, per IP.

    A request passes only when both buckets have room, and then spends from both; a refused
    request spends from neither.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        trusted_proxies: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clients = RateLimiter(per_minute, clock=clock)
        self.ips = RateLimiter(per_minute * IP_FACTOR, clock=clock)
        self.proxies = Proxies(trusted_proxies)

    def take(self, request: web.Request) -> float:
        """Spend one request; returns 0 when allowed, else seconds until the next one is."""
        ip = "ip:" + network_of(self.proxies.client_address(request))
        client = client_of(request) or ip
        wait = max(self.clients.wait(client), self.ips.wait(ip))
        if wait > 0:
            return wait
        self.clients.take(client)
        self.ips.take(ip)
        return 0.0

    def check(self, request: web.Request) -> None:
        """429 when this client or its address is over the limit; else the request is spent."""
        if request.method != "OPTIONS":
            wait = self.take(request)
            if wait > 0:
                raise too_many("too many requests", wait)


def client_of(request: web.Request) -> str | None:
    """The per-client bucket: the respondent token as sent (unchecked); None without one."""
    token = request.headers.get(TOKEN_HEADER) or request.cookies.get(COOKIE)
    if token:
        # surrogateescape: header bytes that are not UTF-8 arrive as lone surrogates; the
        # bucket only needs them hashed (identity refuses the token itself with a 400)
        raw = token[:2048].encode("utf-8", "surrogateescape")
        return "t:" + hashlib.sha256(raw).hexdigest()[:32]
    return None


def network_of(address: str) -> str:
    """The bucket of an address: IPv6 by its /64, which one host or home gets whole (a bucket
    per address would give each of them 2^64 fresh buckets to rotate through)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address


class Proxies:
    """The reverse proxies whose ``X-Forwarded-For`` tells who the client is."""

    def __init__(self, trusted: Sequence[str]) -> None:
        self.networks = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_address(self, request: web.Request) -> str:
        remote = request.remote or "unknown"
        if not self.networks or not self.trusts(remote):
            return remote
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))[:2048]
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):  # nearest first: every proxy appends what it saw
            if not self.trusts(hop):
                return hop[:64]
        return hops[0][:64] if hops else remote


class WrongKeys:
    """Wrong API keys per client address, wherever they are tried (the dashboard's password,
    ``Authorization: Bearer`` on the API): a key reads everyone's answers and acts for any
    user, so guessing gets ``WRONG_KEYS_PER_MINUTE`` tries a minute, whatever
    ``PARLEY_RATE_LIMIT`` says. Behind a proxy not in ``PARLEY_TRUSTED_PROXIES`` every
    client shares the proxy's address, and so these tries."""

    def __init__(
        self,
        api_keys: Sequence[str],
        trusted_proxies: Sequence[str] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_keys = list(api_keys)
        self.wrong = RateLimiter(WRONG_KEYS_PER_MINUTE, clock=clock)
        self.proxies = Proxies(trusted_proxies)

    def _client(self, request: web.Request) -> str:
        return network_of(self.proxies.client_address(request))

    def wait(self, request: web.Request) -> float:
        """Seconds until this client may try a key again (0: now)."""
        return self.wrong.wait(self._client(request))

    def failed(self, request: web.Request) -> None:
        self.wrong.take(self._client(request))

    def check(self, request: web.Request) -> None:
        """For an API request that carries a Bearer key: 429 while this client is guessing,
        401 for a wrong key, which counts as a guess. Checked before anything is awaited, so
        many requests at once cannot all pass before any is counted. Other schemes are not
        counted (a site-wide auth proxy's Basic header is nobody guessing)."""
        if not bearer_key(request):
            return
        wait = self.wait(request)
        if wait > 0:
            raise too_many("too many wrong API keys", wait)
        try:
            api_client(request, self.api_keys)
        except ApiError:
            self.failed(request)
            raise


WRONG_KEYS_PER_MINUTE = 10
WRONG_KEYS = web.AppKey("wrong_api_keys", WrongKeys)


def seconds(wait: float) -> str:
    """A Retry-After value: whole seconds, at least one."""
    return str(max(1, math.ceil(wait)))


def too_many(what: str, wait: float) -> ApiError:
    after = seconds(wait)
    return ApiError(
        429, "rate_limited", f"{what}; try again in {after} s", headers={"Retry-After": after}
    )

"""Unit tests of the web channel's small parts: token bucket, tokens and signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any
from unittest import mock

import pytest
from aiohttp import streams, web
from aiohttp.test_utils import make_mocked_request

from bot.channels.web import ratelimit
from bot.channels.web.api import read_json
from bot.channels.web.errors import parley_error_response
from bot.channels.web.identity import new_token, session_token, sign, token_key
from bot.channels.web.ratelimit import IP_FACTOR, RateLimiter, WebRateLimit
from bot.config import load_settings
from bot.errors import Busy, ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock=clock)  # one per second, bursts of 60
    assert all(limiter.take("a") == 0 for _ in range(60))
    wait = limiter.take("a")
    assert wait == pytest.approx(1.0)
    assert limiter.take("b") == 0  # buckets are per client
    clock.now += 0.5
    assert limiter.take("a") == pytest.approx(0.5)  # refused requests do not drain it further
    clock.now += 0.5
    assert limiter.take("a") == 0
    assert limiter.take("a") > 0


def test_idle_buckets_are_dropped_when_memory_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_BUCKETS", 10)
    clock = Clock()
    limiter = RateLimiter(60, clock=clock)
    for i in range(10):
        limiter.take(f"old{i}")
    clock.now += 120  # all refilled: forgetting them loses nothing
    limiter.take("new")
    assert len(limiter._buckets) == 1


def request(ip: str, token: str | None = None, forwarded: str | None = None) -> web.Request:
    headers = {"X-Parley-Token": token} if token else {}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return make_mocked_request("POST", "/api/v1/conversations", headers=headers).clone(remote=ip)


def test_every_request_is_also_charged_to_its_ip_address() -> None:
    clock = Clock()
    limiter = WebRateLimit(60, clock=clock)  # 60 per token, 300 per IP address
    assert IP_FACTOR == 5
    # A script making up a new token for every request gets the IP's 300, then nothing.
    assert all(limiter.take(request("1.2.3.4", f"made-up-{i}")) == 0 for i in range(300))
    assert limiter.take(request("1.2.3.4", "yet-another")) == pytest.approx(0.2)
    # Refused requests spend nothing: the new token's bucket is still full.
    token_bucket = ratelimit.client_of(request("1.2.3.4", "yet-another"))
    assert token_bucket is not None and limiter.clients.wait(token_bucket) == 0
    # Another address is not affected; a known token still has its own limit too.
    assert all(limiter.take(request("5.6.7.8", "one-token")) == 0 for _ in range(60))
    assert limiter.take(request("5.6.7.8", "one-token")) == pytest.approx(1.0)
    assert limiter.take(request("5.6.7.8", "other-token")) == 0
    clock.now += 0.2  # the IP bucket refills at 5 a second
    assert limiter.take(request("1.2.3.4", "yet-another")) == 0


def test_signature_is_hex_hmac_sha256_of_the_user_id() -> None:
    expected = hmac.new(b"k", b"user-1", hashlib.sha256).hexdigest()
    assert sign("k", "user-1") == expected


def test_session_token_is_not_a_user_signature() -> None:
    token = session_token("k", "user-1")
    assert token.startswith("s.")
    assert token.split(".")[2] != sign("k", "user-1")


def test_token_key_stores_only_a_hash() -> None:
    key = token_key("abc")
    assert key == "web:" + hashlib.sha256(b"abc").hexdigest()
    old = "gk2V" * 10 + "abc"  # made before tokens carried their time: its key stays
    assert token_key(old) == "web:" + hashlib.sha256(old.encode()).hexdigest()


def test_new_tokens_and_their_keys_sort_by_time() -> None:
    tokens = []
    for _ in range(3):
        tokens.append(new_token())
        time.sleep(0.002)
    keys = [token_key(token) for token in tokens]
    assert keys == sorted(keys) and len(set(keys)) == 3
    for token, key in zip(tokens, keys, strict=True):
        secret = token[12:]
        assert len(token) == 55 and len(base64.urlsafe_b64decode(secret + "=")) == 32
        assert key == f"web:{token[:12]}" + hashlib.sha256(token.encode()).hexdigest()
        assert secret not in key


def test_behind_a_trusted_proxy_each_client_gets_its_own_bucket() -> None:
    """All requests come from the proxy; without PARLEY_TRUSTED_PROXIES they share its bucket."""
    clock = Clock()
    shared = WebRateLimit(5, clock=clock)  # no token: the address is the client (5 a minute)
    assert all(shared.take(request("10.0.0.2", forwarded=f"203.0.113.{i}")) == 0 for i in range(5))
    assert shared.take(request("10.0.0.2", forwarded="203.0.113.99")) > 0  # everyone refused

    behind = WebRateLimit(5, clock=clock, trusted_proxies=["10.0.0.0/8", "127.0.0.1"])
    # two proxies in a row: the nearest address that is not a proxy is the client
    assert all(
        behind.take(request("10.0.0.2", forwarded=f"203.0.113.{i}, 10.0.0.9")) == 0
        for i in range(20)
    )
    forwarded = request("10.0.0.2", forwarded="198.51.100.7, 203.0.113.5")
    assert behind.proxies.client_address(forwarded) == "203.0.113.5"
    # a client that is not a trusted proxy cannot choose its bucket with the header
    spoofed = request("198.51.100.1", forwarded="1.1.1.1")
    assert behind.proxies.client_address(spoofed) == "198.51.100.1"
    assert all(behind.take(request("198.51.100.1", forwarded=f"1.1.1.{i}")) == 0 for i in range(5))
    assert behind.take(request("198.51.100.1", forwarded="1.1.1.200")) > 0


def test_trusted_proxies_must_be_addresses() -> None:
    from bot.config import load_settings
    from bot.errors import ConfigError

    assert load_settings(trusted_proxies="127.0.0.1, 10.0.0.0/8").trusted_proxies == [
        "127.0.0.1",
        "10.0.0.0/8",
    ]
    with pytest.raises(ConfigError, match=r"PARLEY_TRUSTED_PROXIES: 'proxy\.local'"):
        load_settings(trusted_proxies="proxy.local")


def test_ipv6_clients_share_the_bucket_of_their_slash_64() -> None:
    """One host gets a whole /64: a bucket per address would be 2^64 fresh buckets."""
    limiter = WebRateLimit(1, clock=Clock())  # 1 a minute per token, 5 per address
    home = [f"2001:db8:1:2::{i:x}" for i in range(6)]
    taken = [limiter.take(request(address, f"token-{address}")) == 0 for address in home]
    assert taken == [True] * 5 + [False]
    assert limiter.take(request("2001:db8:1:3::1", "another")) == 0  # the next /64: someone else
    assert ratelimit.network_of("::ffff:1.2.3.4") == "::ffff:1.2.3.4"  # IPv4 as itself
    assert ratelimit.network_of("1.2.3.4") == "1.2.3.4"


def test_api_keys_must_be_long_enough_to_be_a_password() -> None:
    from bot.config import load_settings
    from bot.errors import ConfigError

    with pytest.raises(ConfigError, match=r"PARLEY_API_KEYS: key 2 is 6 characters.*at least 16"):
        load_settings(api_keys="a-long-enough-key-here,secret")
    assert load_settings(api_keys="a-long-enough-key-here").api_keys == ["a-long-enough-key-here"]


def test_the_database_comes_from_parley_db_or_database_url_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Other tools set a bare DB (docker-compose files, shells): it must not pick Parley's."""
    from bot.config import load_settings

    monkeypatch.chdir(tmp_path)  # no .env here
    for name in ("DATABASE_URL", "PARLEY_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DB", "/tmp/someone-elses.db")
    assert load_settings().db == "parley.db"
    monkeypatch.setenv("PARLEY_DB", "mine.db")
    assert load_settings().db == "mine.db"
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.example/parley")
    assert load_settings().db == "postgresql://db.example/parley"
    assert load_settings(db="given.db").db == "given.db"


def test_the_public_url_must_be_a_whole_web_address() -> None:
    """It becomes links (the App Home's dashboard button: Slack refuses the whole Home view
    over a bad one) and the cookie's Secure flag."""
    from bot.config import load_settings
    from bot.errors import ConfigError

    with pytest.raises(ConfigError, match=r"PARLEY_PUBLIC_URL: 'parley.example.com' is not"):
        load_settings(public_url="parley.example.com")
    assert load_settings(public_url="https://parley.example.com").public_url.startswith("https")


def test_busy_is_a_503_to_retry_shortly() -> None:
    response = parley_error_response(Busy("could not opt out just now; please try again"))
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert json.loads(response.text or "") == {
        "error": "could not opt out just now; please try again",
        "code": "busy",
    }


def test_the_frequency_cap_takes_a_duration_and_errors_name_the_variable() -> None:
    """Flows write durations as 12h, 7d or 2w: so may the cap; a mistake names the env var
    the user set, not the field behind it."""
    assert load_settings(recontact_days="12h").recontact_days == 0.5
    assert load_settings(recontact_days="2w").recontact_days == 14
    assert load_settings(recontact_days="3").recontact_days == 3
    with pytest.raises(
        ConfigError, match=r"^bad setting: PARLEY_RECONTACT_DAYS: '7x' is not a duration"
    ):
        load_settings(recontact_days="7x")
    with pytest.raises(ConfigError, match=r"^bad setting: SLACK_API_URL: "):
        load_settings(slack_api_url=5)


@pytest.mark.parametrize(
    ("raw", "read"),
    [
        (b'{"value": 123456789012345678901234567890}', {"value": 123456789012345678901234567890}),
        (b'{"value": -9223372036854775808, "n": 18446744073709551615}', None),
        (b'{"value": -9999999999999999999}', {"value": -9999999999999999999}),
        (b'{"value": 0.1, "e": 2.5e-300, "s": "\\ud83d\\ude00 \\u00e9"}', None),
        (b'\xef\xbb\xbf{"value": [1, {"a": null}]}', {"value": [1, {"a": None}]}),
    ],
)
async def test_bodies_read_exactly_as_json_reads_them(raw: bytes, read: Any) -> None:
    """orjson reads bodies; integers past 64 bits must stay exact integers all the same."""
    payload = streams.StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=mock.Mock())
    payload.feed_data(raw)
    payload.feed_eof()
    request = make_mocked_request(
        "POST", "/", headers={"Content-Length": str(len(raw))}, payload=payload
    )
    expected = read if read is not None else json.loads(raw)
    got = await read_json(request)
    assert got == expected and json.dumps(got) == json.dumps(expected)

"""The public web API: every status code, identity, CORS, resume, double submit.

Database-backed tests take ``db_url``, so they run on SQLite and, when
``PARLEY_TEST_DATABASE_URL`` is set, on PostgreSQL too.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from web_helpers import answers, counts, make_app, make_flows, rows

from bot.channels.web.cors import Cors
from bot.channels.web.identity import sign, token_key
from bot.config import load_settings
from bot.errors import ConfigError
from bot.scheduler import SCHEDULER, empty_sqlite_wal, release_anonymous_answers

SECRET = "s3cret-for-tests"
API_KEY = "key-for-the-api-tests"

Client = TestClient  # type: ignore[type-arg]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    return make_flows(tmp_path)


@pytest.fixture
def make_client(aiohttp_client: Any, db_url: str, flows: Path) -> MakeClient:
    """A client for an app with these settings; no cookie jar unless a test asks for one."""

    async def build(**overrides: Any) -> Client:
        jar = overrides.pop("cookie_jar", aiohttp.DummyCookieJar())
        return await aiohttp_client(make_app(db_url, flows, **overrides), cookie_jar=jar)

    return build


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client()


def auth(token: str) -> dict[str, str]:
    return {"X-Parley-Token": token}


async def start(client: Client, flow: str = "nps", **extra: Any) -> dict[str, Any]:
    headers = extra.pop("headers", None)
    resp = await client.post("/api/v1/conversations", json={"flow": flow, **extra}, headers=headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def finished_nps(client: Client) -> tuple[dict[str, Any], str]:
    """A new respondent who has answered the whole nps flow: (conversation, token)."""
    conv = await start(client)
    token = conv["respondent_token"]
    await answer(client, conv, token, "score", 10)
    await answer(client, conv, token, "why_high", "Speed")
    return conv, token


async def answer(
    client: Client, conv: dict[str, Any], token: str, step: str, value: Any
) -> aiohttp.ClientResponse:
    return await client.post(
        f"/api/v1/conversations/{conv['id']}/answers",
        json={"step": step, "value": value},
        headers=auth(token),
    )


def current_ask(body: dict[str, Any]) -> dict[str, Any]:
    return next(m for m in body["messages"] if m["type"] == "ask")


# --- starting, answering, resuming ------------------------------------------------------------


async def test_start_returns_201_token_cookie_and_first_question(
    client: Client, db_url: str
) -> None:
    resp = await client.post(
        "/api/v1/conversations", json={"flow": "nps", "timezone": "Europe/Paris"}
    )
    assert resp.status == 201
    body = await resp.json()
    assert set(body) >= {"id", "respondent_token", "messages", "done"}
    assert body["done"] is False
    assert [m["type"] for m in body["messages"]] == ["say", "ask"]
    ask = current_ask(body)
    assert ask["step"] == "score"
    assert ask["input"]["kind"] == "nps" and ask["input"]["min"] == 0 and ask["input"]["max"] == 10
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"parley_token={body['respondent_token']};")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain http and no https PARLEY_PUBLIC_URL
    # Only a hash of the token is stored, never the token itself.
    stored = await rows(db_url, "SELECT key, timezone FROM respondent")
    assert stored == [(token_key(body["respondent_token"]), "Europe/Paris")]
    token = body["respondent_token"]
    made = token[:12]  # the time the token was made, then its hash: never the token
    assert stored[0][0] == f"web:{made}" + hashlib.sha256(token.encode()).hexdigest()
    assert token[12:] not in stored[0][0]


async def test_bad_timezone_is_ignored_not_fatal(client: Client, db_url: str) -> None:
    await start(client, timezone="Mars/Olympus_Mons")
    assert await rows(db_url, "SELECT timezone FROM respondent") == [(None,)]


async def test_complete_nps_and_answers_are_stored(client: Client, db_url: str) -> None:
    conv = await start(client)
    token = conv["respondent_token"]
    resp = await answer(client, conv, token, "score", 3)
    assert resp.status == 200
    body = await resp.json()
    assert body["done"] is False and current_ask(body)["step"] == "why_low"
    resp = await answer(client, conv, token, "why_low", "Too slow on big projects")
    body = await resp.json()
    assert resp.status == 200 and body["done"] is True
    assert body["messages"][-1]["type"] == "end"
    assert await answers(db_url) == [
        ("score", 3),
        ("why_low", "Too slow on big projects"),
    ]


async def test_start_again_resumes_with_200(client: Client) -> None:
    conv = await start(client)
    token = conv["respondent_token"]
    assert (await answer(client, conv, token, "score", 9)).status == 200
    resp = await client.post("/api/v1/conversations", json={"flow": "nps"}, headers=auth(token))
    assert resp.status == 200
    body = await resp.json()
    assert body["id"] == conv["id"]
    assert body["respondent_token"] == token
    assert current_ask(body)["step"] == "why_high"
    assert "Set-Cookie" in resp.headers  # header users may switch to the cookie later


async def test_cookie_is_secure_behind_a_tls_proxy(make_client: MakeClient) -> None:
    client = await make_client(public_url="https://parley.example.com")
    resp = await client.post("/api/v1/conversations", json={"flow": "nps"})  # arrives as http
    assert resp.status == 201
    cookie = resp.headers["Set-Cookie"]
    assert "; Secure" in cookie and "HttpOnly" in cookie


async def test_cookie_identifies_a_same_origin_page(make_client: MakeClient) -> None:
    client = await make_client(cookie_jar=aiohttp.CookieJar(unsafe=True))
    conv = await start(client)
    # No header at all: the HttpOnly cookie set on 201 is the identity.
    resp = await client.post("/api/v1/conversations", json={"flow": "nps"})
    assert resp.status == 200
    assert (await resp.json())["id"] == conv["id"]
    resp = await client.post(
        f"/api/v1/conversations/{conv['id']}/answers", json={"step": "score", "value": 10}
    )
    assert resp.status == 200
    resp = await client.get(f"/api/v1/conversations/{conv['id']}")
    assert resp.status == 200 and (await resp.json())["step"] == "why_high"


async def test_get_shows_state_and_resume_messages(client: Client) -> None:
    conv = await start(client)
    token = conv["respondent_token"]
    await answer(client, conv, token, "score", 7)
    resp = await client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(token))
    assert resp.status == 200
    body = await resp.json()
    assert body["id"] == conv["id"] and body["flow"] == "nps"
    assert body["status"] == "active" and body["step"] == "why_mid" and body["done"] is False
    assert [m["type"] for m in body["messages"]] == ["ask"]
    await answer(client, conv, token, "why_mid", "More integrations")
    body = await (
        await client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(token))
    ).json()
    assert body["done"] is True and body["status"] == "completed"
    # a reload after the end shows the flow's own closing words again
    (end,) = body["messages"]
    assert end == {"type": "end", "text": end["text"], "reason": "completed"}
    assert end["text"].startswith("Thanks — your 7")


async def test_restart_mid_flow_goes_on_where_it_stopped(
    aiohttp_client: Any, db_url: str, flows: Path
) -> None:
    first = await aiohttp_client(make_app(db_url, flows), cookie_jar=aiohttp.DummyCookieJar())
    conv = await start(first)
    token = conv["respondent_token"]
    await answer(first, conv, token, "score", 2)
    await first.close()  # the server stops

    second = await aiohttp_client(make_app(db_url, flows), cookie_jar=aiohttp.DummyCookieJar())
    resp = await second.post("/api/v1/conversations", json={"flow": "nps"}, headers=auth(token))
    assert resp.status == 200
    body = await resp.json()
    assert body["id"] == conv["id"] and current_ask(body)["step"] == "why_low"
    assert (await answer(second, conv, token, "why_low", "Price")).status == 200


async def test_every_step_type_through_the_api(client: Client, db_url: str) -> None:
    conv = await start(client, "every-step")
    token = conv["respondent_token"]
    kinds = []
    plan: dict[str, Any] = {
        "likely": 10,
        "happy": "4",  # a button may send a string; it is stored as an int
        "easy": 6,
        "stars": 5,
        "need": "quality",
        "features": ["alerts", "reports"],
        "why": "Because",
        "extra": None,
        "again": True,
        "contact": {"email": "ana@example.com", "consent": True},
    }
    body = conv
    assert body["messages"][1] == {"type": "say", "text": "First, a little scale."}
    while not body["done"]:
        ask = current_ask(body)
        kinds.append(ask["input"]["kind"])
        resp = await answer(client, conv, token, ask["step"], plan[ask["step"]])
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert kinds == [
        "nps",
        "csat",
        "ces",
        "rating",
        "choice",
        "multi_choice",
        "text",
        "text",
        "yes_no",
        "email",
    ]
    assert dict(await answers(db_url)) == {
        "likely": 10,
        "happy": 4,
        "easy": 6,
        "stars": 5,
        "need": "quality",
        "features": ["reports", "alerts"],
        "why": "Because",
        "again": True,
        "contact": "ana@example.com",
    }


async def test_input_specs_carry_what_the_widget_renders(client: Client) -> None:
    conv = await start(client, "every-step")
    token = conv["respondent_token"]
    specs = {}
    body = conv
    values = {
        "likely": 1,
        "happy": 1,
        "easy": 1,
        "stars": 1,
        "need": "price",
        "features": ["api"],
        "why": "x",
        "extra": "y",
        "again": False,
    }
    while not body["done"]:
        ask = current_ask(body)
        specs[ask["step"]] = ask["input"]
        value = values.get(ask["step"])
        body = await (await answer(client, conv, token, ask["step"], value)).json()
    assert specs["stars"] == {
        "kind": "rating",
        "required": True,
        "min": 1,
        "max": 5,
        "labels": ["Bad", "Great"],
    }
    assert specs["need"]["choices"] == [
        {"value": "price", "label": "Low price"},
        {"value": "quality", "label": "Quality"},
    ]
    assert specs["features"]["min_picks"] == 1 and specs["features"]["max_picks"] == 2
    assert specs["why"]["max_length"] == 40
    assert specs["extra"]["required"] is False
    assert specs["contact"] == {
        "kind": "email",
        "required": False,
        "consent": "You may email me about this.",
    }


# --- 422 / 409: the conversation rules ----------------------------------------------------------


async def test_invalid_value_is_422_with_the_same_question_and_stores_nothing(
    client: Client, db_url: str
) -> None:
    conv = await start(client)
    token = conv["respondent_token"]
    before = await counts(db_url)
    resp = await answer(client, conv, token, "score", 11)
    assert resp.status == 422
    body = await resp.json()
    assert body["code"] == "invalid_answer" and body["step"] == "score"
    assert "0 to 10" in body["error"]
    assert current_ask(body) == current_ask(conv)  # the same question again
    assert await counts(db_url) == before


@pytest.mark.parametrize("value", ["eleven", True, [1], {"a": 1}, None, "x" * 30_000])
async def test_values_of_the_wrong_shape_are_422(client: Client, value: Any) -> None:
    conv = await start(client)
    resp = await answer(client, conv, conv["respondent_token"], "score", value)
    assert resp.status == 422
    assert (await resp.json())["code"] == "invalid_answer"


async def test_text_over_max_length_is_422(client: Client) -> None:
    conv = await start(client, "every-step")
    token = conv["respondent_token"]
    for step, value in [
        ("likely", 1),
        ("happy", 1),
        ("easy", 1),
        ("stars", 1),
        ("need", "price"),
        ("features", ["api"]),
    ]:
        assert (await answer(client, conv, token, step, value)).status == 200
    resp = await answer(client, conv, token, "why", "y" * 41)
    assert resp.status == 422 and (await resp.json())["step"] == "why"


async def test_step_that_is_not_current_is_409(client: Client, db_url: str) -> None:
    conv = await start(client)
    token = conv["respondent_token"]
    before = await counts(db_url)
    resp = await answer(client, conv, token, "why_low", "skipping ahead")
    assert resp.status == 409
    body = await resp.json()
    assert body["code"] == "not_current_step" and body["error"]
    made_up = await (await answer(client, conv, token, "nope", 1)).json()
    assert made_up["error"] == (
        "there is no question 'nope' in this survey; the current question is 'score'"
    )
    assert await counts(db_url) == before


async def test_finished_conversation_is_409(client: Client, db_url: str) -> None:
    conv, token = await finished_nps(client)
    before = await counts(db_url)
    resp = await answer(client, conv, token, "why_high", "Something else")
    assert resp.status == 409
    resp = await answer(client, conv, token, "why_low", "late")
    assert resp.status == 409
    assert (await resp.json())["code"] == "conversation_closed"
    assert await counts(db_url) == before


async def test_the_frequency_cap_is_a_409_that_says_until_when(client: Client, db_url: str) -> None:
    _conv, token = await finished_nps(client)
    before = await counts(db_url)
    for flow in ("nps", "csat"):  # the same survey again, or another one: not this week
        resp = await client.post("/api/v1/conversations", json={"flow": flow}, headers=auth(token))
        assert resp.status == 409
        body = await resp.json()
        assert body["code"] == "recently_surveyed" and "PARLEY_RECONTACT_DAYS" in body["error"]
        assert datetime.fromisoformat(body["retry_after"]) > datetime.now(UTC)
    assert await counts(db_url) == before


async def test_double_submit_records_one_answer(client: Client, db_url: str) -> None:
    conv = await start(client)
    token = conv["respondent_token"]
    first = await answer(client, conv, token, "score", 8)
    again = await answer(client, conv, token, "score", 8)
    assert first.status == 200 and again.status == 200
    assert (await again.json())["duplicate"] is True
    assert current_ask(await again.json())["step"] == "why_mid"
    assert await rows(db_url, "SELECT count(*) FROM answer WHERE step_id = 'score'") == [(1,)]
    # The same step with a different value is a conflict, not an edit.
    changed = await answer(client, conv, token, "score", 2)
    assert changed.status == 409


async def test_concurrent_double_click_records_one_answer(client: Client, db_url: str) -> None:
    conv = await start(client)
    token = conv["respondent_token"]
    responses = await asyncio.gather(*(answer(client, conv, token, "score", 5) for _ in range(4)))
    assert sorted(r.status for r in responses) == [200, 200, 200, 200]
    assert await rows(db_url, "SELECT count(*) FROM answer") == [(1,)]


# --- identity -----------------------------------------------------------------------------------


async def test_wrong_respondent_is_403_and_stores_nothing(client: Client, db_url: str) -> None:
    conv = await start(client)
    other = await start(client)
    before = await counts(db_url)
    resp = await answer(client, conv, other["respondent_token"], "score", 10)
    assert resp.status == 403 and (await resp.json())["code"] == "forbidden"
    resp = await client.get(
        f"/api/v1/conversations/{conv['id']}", headers=auth(other["respondent_token"])
    )
    assert resp.status == 403
    assert await counts(db_url) == before


async def test_no_identity_is_401(client: Client) -> None:
    conv = await start(client)
    resp = await client.post(
        f"/api/v1/conversations/{conv['id']}/answers", json={"step": "score", "value": 1}
    )
    assert resp.status == 401 and (await resp.json())["code"] == "missing_identity"
    resp = await client.get(f"/api/v1/conversations/{conv['id']}")
    assert resp.status == 401


async def test_malformed_token_is_400(client: Client) -> None:
    resp = await client.post("/api/v1/conversations", json={"flow": "nps"}, headers=auth("short!"))
    assert resp.status == 400 and (await resp.json())["code"] == "bad_token"


async def test_header_bytes_that_are_not_utf8_are_a_400_not_a_crash(
    make_client: MakeClient,
) -> None:
    # aiohttp hands such bytes over as lone surrogates; nothing may try to encode them blindly
    # (the rate limit hashes the token, signed users are checked against the secret)
    client = await make_client(rate_limit="100", web_secret="s3cret")
    body = b'{"flow": "nps"}'
    for header, code in [
        (b"X-Parley-Token: abc\xff\xfedefghijklmnopqrstuvwxyz", "bad_token"),
        (b"Cookie: parley_token=abc\xff\xfedefghijklmnopqrstuvwxyz", "bad_token"),
        (b"X-Parley-User: jos\xe9\r\nX-Parley-Signature: " + b"a" * 64, "bad_user"),
    ]:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(
            b"POST /api/v1/conversations HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n\r\n%s"
            % (len(body), header, body)
        )
        response = await reader.read()
        writer.close()
        status = int(response.split(b" ", 2)[1])
        payload = json.loads(response.split(b"\r\n\r\n", 1)[1])
        assert (status, payload["code"]) == (400, code), (header, response)


async def test_odd_bodies_paths_and_ids_are_json_4xx(make_client: MakeClient) -> None:
    client = await make_client(web_secret="s3cret")
    resp = await client.post(
        "/api/v1/conversations",
        data=b"not gzip",
        headers={"Content-Encoding": "gzip", "Connection": "close"},  # aiohttp drops it after
    )
    assert resp.status == 400 and (await resp.json())["code"] == "bad_body"
    for path in ("/api", "/api/v2"):
        resp = await client.get(path)
        assert resp.status in (404, 405) and "code" in await resp.json(), path
    conv = await start(client)
    resp = await client.post(
        f"/api/v1/conversations/{conv['id']}/answers",
        json={"step": "score\n", "value": 5},
        headers=auth(conv["respondent_token"]),
    )
    assert resp.status == 400 and (await resp.json())["code"] == "bad_step"
    for user in ("ann\u202eevil", "ann\u200b", "ann\x85"):  # shows as another id
        body = {"flow": "nps", "user": user, "signature": sign("s3cret", user)}
        resp = await client.post("/api/v1/conversations", json=body)
        assert resp.status == 400 and (await resp.json())["code"] == "bad_user", repr(user)


async def test_an_emoji_written_as_an_escaped_surrogate_pair_is_fine(client: Client) -> None:
    conv = await start(client, "csat")
    url = f"/api/v1/conversations/{conv['id']}/answers"
    token = auth(conv["respondent_token"])
    await client.post(url, json={"step": conv["messages"][-1]["step"], "value": 2}, headers=token)
    raw = b'{"step": "why_low", "value": "slow \\ud83d\\ude00"}'
    resp = await client.post(url, data=raw, headers={**token, "Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()


async def test_unknown_conversation_is_404(client: Client) -> None:
    conv = await start(client)
    token = conv["respondent_token"]
    for cid in ("0" * 32, "not-an-id", "f" * 200):
        resp = await client.get(f"/api/v1/conversations/{cid}", headers=auth(token))
        assert resp.status == 404, cid
        assert (await resp.json())["code"] == "conversation_not_found"
    resp = await client.post(
        f"/api/v1/conversations/{'0' * 32}/answers",
        json={"step": "score", "value": 1},
        headers=auth(token),
    )
    assert resp.status == 404


def signature(user: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), user.encode(), hashlib.sha256).hexdigest()


async def test_signed_user_is_the_same_person_on_every_device(
    make_client: MakeClient, db_url: str
) -> None:
    client = await make_client(web_secret=SECRET)
    conv = await start(client, user="u-42", signature=signature("u-42"))
    token = conv["respondent_token"]
    assert token.startswith("s.")
    assert await rows(db_url, "SELECT key FROM respondent") == [("user:u-42",)]
    assert (await answer(client, conv, token, "score", 9)).status == 200
    # Another device: no token, only the host app's signature → the same open conversation.
    resp = await client.post(
        "/api/v1/conversations",
        json={"flow": "nps", "user": "u-42", "signature": signature("u-42")},
    )
    assert resp.status == 200
    assert (await resp.json())["id"] == conv["id"]


async def test_forged_signature_is_403_and_stores_nothing(
    make_client: MakeClient, db_url: str
) -> None:
    client = await make_client(web_secret=SECRET)
    before = await counts(db_url)
    for sig in (signature("u-43"), signature("u-42", "wrong secret"), "zz", "", None):
        resp = await client.post(
            "/api/v1/conversations", json={"flow": "nps", "user": "u-42", "signature": sig}
        )
        assert resp.status == 403, sig
        assert (await resp.json())["code"] == "bad_signature"
    assert await counts(db_url) == before


async def test_tampered_session_token_is_403(make_client: MakeClient) -> None:
    client = await make_client(web_secret=SECRET)
    conv = await start(client, user="u-42", signature=signature("u-42"))
    _, user_b64, mac = conv["respondent_token"].split(".")
    forged = f"s.{user_b64[:-1]}x.{mac}"
    resp = await client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(forged))
    assert resp.status == 403 and (await resp.json())["code"] == "bad_token"


async def test_signed_users_are_refused_without_a_secret(client: Client, db_url: str) -> None:
    resp = await client.post(
        "/api/v1/conversations",
        json={"flow": "nps", "user": "u-42", "signature": signature("u-42")},
    )
    assert resp.status == 403
    assert (await resp.json())["code"] == "signed_users_disabled"
    assert (await counts(db_url))["respondent"] == 0


async def test_api_key_client_names_a_user_without_signature(
    make_client: MakeClient, db_url: str
) -> None:
    client = await make_client(api_keys=[API_KEY])
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    conv = await start(client, user="crm-7", headers=bearer)
    assert await rows(db_url, "SELECT key FROM respondent") == [("user:crm-7",)]
    resp = await client.post(
        f"/api/v1/conversations/{conv['id']}/answers",
        json={"step": "score", "value": 6},
        headers={**bearer, "X-Parley-User": "crm-7"},
    )
    assert resp.status == 200
    resp = await client.post(
        "/api/v1/conversations",
        json={"flow": "nps", "user": "crm-7"},
        headers={"Authorization": "Bearer nope"},
    )
    assert resp.status == 401 and (await resp.json())["code"] == "unauthorized"


# --- opt-out ------------------------------------------------------------------------------------


async def test_opt_out_sticks(client: Client, db_url: str) -> None:
    conv = await start(client)
    token = conv["respondent_token"]
    resp = await client.post("/api/v1/respondents/me/opt-out", headers=auth(token))
    assert resp.status == 200
    assert await resp.json() == {"opted_out": True, "changed": True}
    again = await client.post("/api/v1/respondents/me/opt-out", headers=auth(token))
    assert (await again.json())["changed"] is False
    # Never surveyed again: not this flow, not another one.
    for flow in ("nps", "every-step"):
        resp = await client.post("/api/v1/conversations", json={"flow": flow}, headers=auth(token))
        assert resp.status == 403 and (await resp.json())["code"] == "opted_out"
    resp = await answer(client, conv, token, "score", 10)
    assert resp.status == 403 and (await resp.json())["code"] == "opted_out"
    assert await rows(db_url, "SELECT count(*) FROM answer") == [(0,)]
    assert await rows(db_url, "SELECT opted_out FROM respondent") in ([(1,)], [(True,)])
    # reading the closed conversation says why it ended
    shown = await client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(token))
    assert (await shown.json())["messages"][-1] == {
        "type": "end",
        "text": "",
        "reason": "opted_out",
    }


async def test_a_visitor_who_never_started_can_opt_out_for_good(client: Client) -> None:
    resp = await client.post("/api/v1/respondents/me/opt-out")  # no token, no body
    assert resp.status == 200
    data = await resp.json()
    assert data["opted_out"] is True and data["respondent_token"]
    resp = await client.post(
        "/api/v1/conversations", json={"flow": "nps"}, headers=auth(data["respondent_token"])
    )
    assert resp.status == 403 and (await resp.json())["code"] == "opted_out"


# --- bad input ----------------------------------------------------------------------------------


async def test_unknown_flow_is_404_and_stores_nothing(client: Client, db_url: str) -> None:
    before = await counts(db_url)
    for flow in ("nope", "../etc/passwd", "x" * 500):
        resp = await client.post("/api/v1/conversations", json={"flow": flow})
        assert resp.status == 404, flow
        assert (await resp.json())["code"] == "unknown_flow"
    assert await counts(db_url) == before


async def test_unknown_flow_does_not_list_the_flows(client: Client) -> None:
    resp = await client.post("/api/v1/conversations", json={"flow": "zzz"})
    assert resp.status == 404
    assert await resp.json() == {"error": "no flow with that id", "code": "unknown_flow"}


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1, 2]",
        b'"nps"',
        b"",
        b"[" * 30_000 + b"]" * 30_000,
        b"\xff\xfe",
        b'{"flow": "nps", "x": NaN}',
        b'{"flow": "nps", "x": [Infinity]}',
        b'{"flow": "nps", "note": "a\\ud800b"}',
        b'{"flow": "nps", "a\\uDFFF": 1}',
        b'{"flow": "nps", "x": 1e999}',
        b'{"flow": "nps", "n": "\\ud800", "x": ' + b"[" * 600 + b"]" * 600 + b"}",
        '{"flow": "nps", "note": "a\\ud800b"}'.encode("utf-16"),
    ],
    ids=[
        "broken",
        "array",
        "string",
        "empty",
        "deep",
        "binary",
        "nan",
        "infinity",
        "lone-surrogate",
        "lone-surrogate-key",
        "overflowing-number",
        "deep-with-escapes",
        "utf-16",
    ],
)
async def test_malformed_json_is_400(client: Client, db_url: str, raw: bytes) -> None:
    before = await counts(db_url)
    resp = await client.post(
        "/api/v1/conversations", data=raw, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == "bad_json" and body["error"]
    assert await counts(db_url) == before


async def test_missing_fields_are_400(client: Client) -> None:
    conv = await start(client)
    token = conv["respondent_token"]
    url = f"/api/v1/conversations/{conv['id']}/answers"
    assert (await client.post("/api/v1/conversations", json={})).status == 400
    assert (await client.post("/api/v1/conversations", json={"flow": 7})).status == 400
    assert (await client.post(url, json={"value": 1}, headers=auth(token))).status == 400
    assert (await client.post(url, json={"step": "score"}, headers=auth(token))).status == 400
    assert (
        await client.post(url, json={"step": "S" * 100, "value": 1}, headers=auth(token))
    ).status == 400


async def test_body_over_64_kib_is_413_json(client: Client, db_url: str) -> None:
    conv = await start(client)
    token = conv["respondent_token"]
    before = await counts(db_url)
    big = json.dumps({"step": "score", "value": "x" * 70_000}).encode()
    resp = await client.post(
        f"/api/v1/conversations/{conv['id']}/answers", data=big, headers=auth(token)
    )
    assert resp.status == 413
    assert (await resp.json())["code"] == "body_too_large"

    async def chunks() -> Any:  # no Content-Length: aiohttp's own limit must answer in JSON too
        for _ in range(20):
            yield b"x" * 8192

    resp = await client.post("/api/v1/conversations", data=chunks())
    assert resp.status == 413
    assert (await resp.json())["code"] == "body_too_large"
    assert await counts(db_url) == before


@pytest.mark.parametrize("encodings", [["gzip"], ["", "gzip"]])
async def test_a_compressed_body_is_held_to_64_kib_unpacked(
    client: Client, db_url: str, encodings: list[str]
) -> None:
    """A few hundred bytes of gzip that unpack to 600 KB: refused as they unpack, however the
    Content-Encoding header is written (an empty one first must not hide the gzip)."""
    before = await counts(db_url)
    body = gzip.compress(json.dumps({"flow": "nps", "pad": "x" * 600_000}).encode())
    head = "".join(f"Content-Encoding: {e}\r\n" for e in encodings)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        (
            f"POST /api/v1/conversations HTTP/1.1\r\nHost: x\r\n{head}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        + body
    )
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"body_too_large"' in answer
    assert await counts(db_url) == before


async def test_wrong_method_and_unknown_api_path_are_json(client: Client) -> None:
    resp = await client.delete("/api/v1/conversations")
    assert resp.status == 405 and (await resp.json())["code"] == "method_not_allowed"
    resp = await client.get("/api/v1/nothing-here")
    assert resp.status == 404 and (await resp.json())["code"] == "not_found"


async def test_too_many_requests_is_429_with_retry_after(
    make_client: MakeClient, db_url: str
) -> None:
    client = await make_client(rate_limit="3")
    conv = await start(client)
    token = conv["respondent_token"]
    for _ in range(3):  # the token's own bucket: three requests a minute
        assert (
            await client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(token))
        ).status == 200
    before = await counts(db_url)
    resp = await answer(client, conv, token, "score", 10)
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["code"] == "rate_limited"
    assert await counts(db_url) == before
    # Another client (another token) has its own bucket.
    assert (
        await client.post("/api/v1/conversations", json={"flow": "nps"}, headers=auth("b" * 43))
    ).status == 201
    # Health checks and the widget are never rate limited.
    for _ in range(5):
        assert (await client.get("/healthz")).status == 200


async def test_rotating_made_up_tokens_still_hits_the_per_ip_limit(
    make_client: MakeClient, db_url: str
) -> None:
    client = await make_client(rate_limit="5")  # 5 per token, 25 per IP address

    async def fresh_token_start() -> int:
        resp = await client.post(
            "/api/v1/conversations", json={"flow": "nps"}, headers=auth(secrets.token_urlsafe(32))
        )
        return resp.status

    statuses = [await fresh_token_start() for _ in range(30)]
    assert statuses[:25] == [201] * 25  # an office NAT's worth of respondents gets through
    assert statuses.count(429) >= 4  # (one may slip through as the bucket refills meanwhile)
    before = await counts(db_url)
    resp = await client.post(
        "/api/v1/conversations", json={"flow": "nps"}, headers=auth(secrets.token_urlsafe(32))
    )
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert await counts(db_url) == before


async def test_behind_a_trusted_proxy_clients_do_not_share_a_bucket(
    make_client: MakeClient,
) -> None:
    """The test client connects from 127.0.0.1, as a reverse proxy on the same host would."""
    client = await make_client(rate_limit="5", trusted_proxies=["127.0.0.1"])

    async def start_from(address: str) -> int:
        resp = await client.post(
            "/api/v1/conversations",
            json={"flow": "nps"},
            headers={**auth(secrets.token_urlsafe(32)), "X-Forwarded-For": address},
        )
        return resp.status

    # 40 visitors, each with one request: far past the 25 one address may send
    assert [await start_from(f"203.0.113.{i}") for i in range(40)] == [201] * 40
    # one visitor rotating tokens still meets its own address's limit
    statuses = [await start_from("198.51.100.7") for _ in range(30)]
    assert statuses[:25] == [201] * 25 and statuses.count(429) >= 4


async def test_rate_limit_off_limits_neither_tokens_nor_addresses(client: Client) -> None:
    for _ in range(30):  # the fixture's app runs with PARLEY_RATE_LIMIT=off
        resp = await client.post(
            "/api/v1/conversations", json={"flow": "nps"}, headers=auth(secrets.token_urlsafe(32))
        )
        assert resp.status == 201


# --- CORS ---------------------------------------------------------------------------------------

SITE = "https://shop.example.com"


async def test_preflight_from_an_allowed_origin(make_client: MakeClient) -> None:
    client = await make_client(allowed_origins=[SITE])
    resp = await client.options(
        "/api/v1/conversations",
        headers={
            "Origin": SITE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-parley-token",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == SITE
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    allowed = resp.headers["Access-Control-Allow-Headers"].lower()
    assert "x-parley-token" in allowed and "content-type" in allowed


async def test_cross_origin_calls_carry_cors_headers_even_on_errors(
    make_client: MakeClient,
) -> None:
    client = await make_client(allowed_origins=[SITE])
    resp = await client.post(
        "/api/v1/conversations", json={"flow": "nps"}, headers={"Origin": SITE}
    )
    assert resp.status == 201
    assert resp.headers["Access-Control-Allow-Origin"] == SITE
    assert "Origin" in resp.headers["Vary"]
    resp = await client.post(
        "/api/v1/conversations", json={"flow": "nope"}, headers={"Origin": SITE}
    )
    assert resp.status == 404
    assert resp.headers["Access-Control-Allow-Origin"] == SITE


async def test_origin_not_allowed_is_refused_and_stores_nothing(
    make_client: MakeClient, db_url: str
) -> None:
    client = await make_client(allowed_origins=[SITE])
    before = await counts(db_url)
    evil = "https://evil.example.net"
    resp = await client.options(
        "/api/v1/conversations", headers={"Origin": evil, "Access-Control-Request-Method": "POST"}
    )
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.post(
        "/api/v1/conversations",
        data=b'{"flow": "nps"}',
        headers={"Origin": evil, "Content-Type": "text/plain"},
    )
    assert resp.status == 403 and (await resp.json())["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert await counts(db_url) == before


async def test_same_origin_needs_no_allow_list(client: Client) -> None:
    own = f"http://{client.server.host}:{client.server.port}"
    resp = await client.post("/api/v1/conversations", json={"flow": "nps"}, headers={"Origin": own})
    assert resp.status == 201
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_same_host_with_another_scheme_is_not_same_origin(
    client: Client, db_url: str
) -> None:
    before = await counts(db_url)
    other = f"https://{client.server.host}:{client.server.port}"  # the server speaks http
    resp = await client.post(
        "/api/v1/conversations", json={"flow": "nps"}, headers={"Origin": other}
    )
    assert resp.status == 403 and (await resp.json())["code"] == "origin_not_allowed"
    assert "set PARLEY_PUBLIC_URL" in (await resp.json())["error"]  # a TLS proxy, likely
    assert await counts(db_url) == before


async def test_public_url_is_the_own_origin_behind_a_tls_proxy(make_client: MakeClient) -> None:
    # The proxy terminates TLS: Parley sees http, browsers are on https://parley.example.com.
    client = await make_client(public_url="https://parley.example.com/")
    proxied = {"Host": "parley.example.com"}
    resp = await client.post(
        "/api/v1/conversations",
        json={"flow": "nps"},
        headers={**proxied, "Origin": "https://parley.example.com"},
    )
    assert resp.status == 201
    assert "Access-Control-Allow-Origin" not in resp.headers
    for origin in ("http://parley.example.com", "https://parley.example.com.evil.net"):
        resp = await client.post(
            "/api/v1/conversations", json={"flow": "nps"}, headers={**proxied, "Origin": origin}
        )
        assert resp.status == 403, origin
        assert (await resp.json())["code"] == "origin_not_allowed"


async def test_wildcard_allows_any_origin(make_client: MakeClient) -> None:
    client = await make_client(allowed_origins=["*"])
    resp = await client.post(
        "/api/v1/conversations",
        json={"flow": "nps"},
        headers={"Origin": "https://anywhere.example"},
    )
    assert resp.status == 201
    assert resp.headers["Access-Control-Allow-Origin"] == "https://anywhere.example"


async def test_the_cookie_speaks_only_for_parleys_own_pages(make_client: MakeClient) -> None:
    """Browsers send the cookie to Parley from any page of the same site: a sibling page,
    even an allowed one, must not opt the visitor out or start surveys in their name."""
    client = await make_client(allowed_origins=[SITE], cookie_jar=aiohttp.CookieJar(unsafe=True))
    mine = await start(client)
    elsewhere = {"Origin": SITE, "Content-Type": "text/plain"}
    resp = await client.post("/api/v1/respondents/me/opt-out", data=b"{}", headers=elsewhere)
    assert resp.status == 200  # someone new opted out: not the visitor
    resp = await client.post("/api/v1/conversations", data=b'{"flow": "nps"}', headers=elsewhere)
    assert resp.status == 201 and (await resp.json())["id"] != mine["id"]
    resp = await client.post("/api/v1/conversations", json={"flow": "nps"})  # Parley's page
    assert resp.status == 200 and (await resp.json())["id"] == mine["id"]


def test_allowed_origins_are_origins() -> None:
    """An entry that can never equal a browser's Origin would fail silently in the widget."""
    wrong = (
        "localhost:8000",
        "https://shop.example.com/embed",
        "shop.example.com",
        "https://user@shop.example.com",
        "https://shop.example.com:99999",
        "http://[::1",
    )
    for entry in wrong:
        with pytest.raises(ConfigError, match=r"PARLEY_ALLOWED_ORIGINS: .* is not an origin"):
            load_settings(allowed_origins=entry)
    settings = load_settings(
        allowed_origins="HTTPS://Shop.Example.com:443/, http://x.test:8080, "
        "capacitor://localhost, http://[::1]:3000"
    )
    assert settings.allowed_origins == [
        "https://shop.example.com",
        "http://x.test:8080",
        "capacitor://localhost",  # a mobile app's web view
        "http://[::1]:3000",
    ]
    cors = Cors(settings.allowed_origins)
    assert cors.allows("https://shop.example.com") and cors.allows("https://shop.example.com:443")
    assert not cors.allows("https://shop.example.com:8443") and not cors.allows("null")


# --- static -------------------------------------------------------------------------------------


async def test_healthz_widget_and_demo_page(make_client: MakeClient) -> None:
    client = await make_client(demo_flow="every-step")
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"ok": True}
    resp = await client.get("/widget.js")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/javascript")
    assert "X-Parley-Token" in await resp.text()
    resp = await client.get("/")
    page = await resp.text()
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html")
    assert '<script src="/widget.js" data-flow="every-step"' in page


async def test_demo_flow_is_escaped(make_client: MakeClient) -> None:
    client = await make_client(demo_flow='"><script>alert(1)</script>')
    page = await (await client.get("/")).text()
    assert "<script>alert(1)</script>" not in page
    assert 'data-flow="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page  # kept, as text


async def test_flows_left_out_of_parley_web_flows_need_a_signed_user(
    make_client: MakeClient, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone can mint a respondent, so a script could fill a flow's results; the operator
    names the flows open to everyone and the rest take only users the host app signs."""
    client = await make_client(web_flows="welcome,welcom", web_secret=SECRET)
    assert any("'welcom', which is not a flow here" in r.getMessage() for r in caplog.records)
    before = await counts(db_url)
    refused = await client.post("/api/v1/conversations", json={"flow": "nps"})
    assert refused.status == 403
    assert (await refused.json())["code"] == "signed_user_required"
    assert await counts(db_url) == before  # nothing stored, no respondent minted
    assert (await client.post("/api/v1/conversations", json={"flow": "welcome"})).status == 201
    signed = {"flow": "nps", "user": "ann", "signature": sign(SECRET, "ann")}
    assert (await client.post("/api/v1/conversations", json=signed)).status == 201


async def test_the_server_runs_its_jobs_on_a_schedule(make_client: MakeClient) -> None:
    """Expiry and the release of anonymous answers in batches happen without anyone asking."""
    client = await make_client()
    jobs = {job.id for job in client.app[SCHEDULER].get_jobs()}
    assert jobs == {
        "expire_conversations",
        "release_anonymous_answers",
        "empty_sqlite_wal",
        "let_go_of_recent_conversations",
    }
    await release_anonymous_answers(client.app)  # nothing waits: nothing happens
    await empty_sqlite_wal(client.app)

"""A local fake of Slack for the tests and the bench: the Web API (``/api/<method>``), a
``response_url`` endpoint and a Socket Mode websocket, all in one aiohttp app.

It records every call, answers like Slack (``ok``, ``channel``, ``ts``, errors), and can be
told to fail a method (an error, a 5xx, or 429 with ``Retry-After``). Also: helpers that sign
requests exactly like Slack and build real payload shapes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import WSMsgType, web

TEAM = "T1"
BOT_USER = "UBOT"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str | None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def posted(self) -> dict[str, Any]:
        """The message as Slack holds it (blocks, channel, ts) — what a click refers to."""
        return {
            "blocks": self.args.get("blocks") or [],
            "channel": self.args.get("channel"),
            "ts": self.result.get("ts"),
        }


@dataclass
class Failure:
    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    after: int = 0  # calls that still succeed before this failure


@dataclass
class FakeSlack:
    calls: list[Call] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # per method, never cleared
    keep_calls: bool = True  # the benchmark only counts: a growing history slows the GC
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    ws_received: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""
    group_members: list[str] = field(default_factory=list)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # channel → posts
    _ts: itertools.count = field(default_factory=lambda: itertools.count(1))
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{id}", self._response_url)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/_fake/counts", self._counts)  # for a fake in another process
        return app

    async def _counts(self, _request: web.Request) -> web.Response:
        return web.json_response(dict(self.counts))

    # --- control ------------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        *,
        error: str | None = None,
        status: int = 200,
        retry_after: int | None = None,
        times: int = 1,
        after: int = 0,
    ) -> None:
        """Fail the next ``times`` calls of ``method``, once ``after`` more have succeeded."""
        self.failures.setdefault(method, []).extend(
            Failure(status, error, retry_after, after if n == 0 else 0) for n in range(times)
        )

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll until ``predicate()`` is truthy (bounded), so tests never race Bolt's tasks."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting; calls so far: {[c.method for c in self.calls]}"
                )
            await asyncio.sleep(0.01)

    async def wait_calls(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        return await self.wait_for(
            lambda: len(self.calls_to(method)) >= count and self.calls_to(method), timeout
        )

    async def send_envelope(self, envelope: dict[str, Any]) -> None:
        await self.wait_for(lambda: self._sockets)
        await self._sockets[-1].send_str(json.dumps(envelope))

    # --- handlers -----------------------------------------------------------------------------

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            raw = await request.text()
            if request.content_type == "application/json":
                args.update(json.loads(raw or "{}"))
            else:
                args.update(dict(parse_qsl(raw)))
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") or args.get("token")
        call = Call(method, args, token)
        if self.keep_calls:
            self.calls.append(call)
        self.counts[method] += 1
        queued = self.failures.get(method)
        if queued and queued[0].after > 0:
            queued[0].after -= 1
            queued = None
        if queued:
            failure = queued.pop(0)
            headers = (
                {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            )
            if failure.status != 200:
                return web.json_response(
                    {"ok": False, "error": failure.error or "ratelimited"},
                    status=failure.status,
                    headers=headers,
                )
            return web.json_response({"ok": False, "error": failure.error})
        if id_problems(_blocks_of(args)):
            call.result = {"ok": False, "error": "invalid_blocks"}
        else:
            call.result = self.answer(method, args)
        return web.json_response(call.result)

    def answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        ts = f"{1700000000 + next(self._ts)}.000100"
        if method == "auth.test":
            return {
                "ok": True,
                "user_id": BOT_USER,
                "bot_id": "BBOT",
                "team_id": TEAM,
                "team": "Test",
                "url": "https://test.slack.com/",
            }
        if method == "chat.postMessage":
            message: dict[str, Any] = {"text": args.get("text"), "ts": ts}
            metadata = args.get("metadata")
            if isinstance(metadata, str):  # a form-encoded call sends it as JSON text
                metadata = json.loads(metadata)
            if metadata:
                message["metadata"] = metadata
            if self.keep_calls:
                self.history.setdefault(str(args.get("channel")), []).append(message)
            return {"ok": True, "channel": args.get("channel"), "ts": ts, "message": message}
        if method == "conversations.history":
            newest_first = list(reversed(self.history.get(str(args.get("channel")), [])))
            limit = int(args.get("limit") or 100)
            start = int(args.get("cursor") or 0)  # Slack's cursors are opaque: an offset here
            with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
            messages = [
                m if with_metadata else {k: v for k, v in m.items() if k != "metadata"}
                for m in newest_first[start : start + limit]
            ]
            more = len(newest_first) > start + limit
            page: dict[str, Any] = {"ok": True, "messages": messages, "has_more": more}
            if more:
                page["response_metadata"] = {"next_cursor": str(start + limit)}
            return page
        if method == "chat.update":
            return {
                "ok": True,
                "channel": args.get("channel"),
                "ts": args.get("ts"),
                "text": args.get("text"),
            }
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": ts}
        if method == "conversations.open":
            user = str(args.get("users", "U")).split(",")[0]
            return {"ok": True, "channel": {"id": f"D{user}"}}
        if method == "users.info":
            user = args.get("user", "U")
            return {
                "ok": True,
                "user": {
                    "id": user,
                    "tz": "Europe/Berlin",
                    "real_name": "Ada Lovelace",
                    "profile": {"first_name": "Ada", "real_name": "Ada Lovelace"},
                },
            }
        if method in ("views.publish", "views.open", "views.update"):
            return {"ok": True, "view": {"id": "V1"}}
        if method == "usergroups.list":
            return {
                "ok": True,
                "usergroups": [{"id": "S1", "handle": "research"}, {"id": "S2", "handle": "other"}],
            }
        if method == "usergroups.users.list":
            return {
                "ok": True,
                "users": self.group_members if args.get("usergroup") == "S1" else [],
            }
        if method == "oauth.v2.access":
            return {
                "ok": True,
                "app_id": "A1",
                "authed_user": {"id": "U_INSTALLER"},
                "scope": "chat:write,commands,im:history,im:write,users:read,usergroups:read",
                "token_type": "bot",
                "access_token": "xoxb-installed",
                "bot_user_id": BOT_USER,
                "team": {"id": "T2", "name": "Second"},
                "enterprise": None,
                "is_enterprise_install": False,
            }
        if method == "apps.connections.open":
            return {"ok": True, "url": self.base_url.replace("http", "ws", 1) + "/ws"}
        return {"ok": True}

    async def _response_url(self, request: web.Request) -> web.Response:
        self.calls.append(Call("response_url", await request.json(), None))
        return web.Response(text="ok")

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(
            json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}})
        )
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                self.ws_received.append(json.loads(message.data))
        return ws


# --- signing and payloads ---------------------------------------------------------------------


def id_problems(blocks: list[dict[str, Any]]) -> list[str]:
    """What Slack refuses as invalid_blocks and slack_sdk's models do not check: a block_id
    twice in a message or view, an action_id twice within one block."""
    problems: list[str] = []
    block_ids = [b["block_id"] for b in blocks if "block_id" in b]
    if len(block_ids) != len(set(block_ids)):
        problems.append(f"block_ids repeat: {sorted(block_ids)}")
    for block in blocks:
        elements = [*block.get("elements", []), block.get("accessory"), block.get("element")]
        ids = [e["action_id"] for e in elements if isinstance(e, dict) and "action_id" in e]
        if len(ids) != len(set(ids)):
            problems.append(f"action_ids repeat in {block.get('block_id')}: {ids}")
    return problems


def _blocks_of(args: dict[str, Any]) -> list[dict[str, Any]]:
    view = args.get("view")
    if isinstance(view, str):
        view = json.loads(view)
    blocks = args.get("blocks") or (view or {}).get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else blocks


def sign(body: str, secret: str = "secret", timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def event_body(event: dict[str, Any], *, event_id: str = "Ev1", team: str = TEAM) -> str:
    return json.dumps(
        {
            "token": "legacy",
            "team_id": team,
            "api_app_id": "A1",
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [{"team_id": team, "user_id": BOT_USER, "is_bot": True}],
        }
    )


def dm_event(
    user: str,
    text: str,
    *,
    client_msg_id: str,
    channel: str | None = None,
    ts: str | None = None,
    thread_ts: str | None = None,
) -> dict[str, Any]:
    event = {
        "type": "message",
        "channel": channel or f"D{user}",
        "user": user,
        "text": text,
        # as Slack sends it: the text again, as rich text (so a long message counts twice)
        "blocks": [
            {
                "type": "rich_text",
                "block_id": "rt",
                "elements": [
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
                ],
            }
        ],
        "ts": ts or f"{time.time():.6f}",
        "client_msg_id": client_msg_id,
        "channel_type": "im",
        "event_ts": f"{time.time():.6f}",
    }
    if thread_ts:  # a reply in a message's thread
        event["thread_ts"] = thread_ts
        event["parent_user_id"] = BOT_USER
    return event


def interactive_body(payload: dict[str, Any]) -> str:
    return urlencode({"payload": json.dumps(payload)})


def block_actions(
    user: str,
    action: dict[str, Any],
    *,
    message: dict[str, Any] | None = None,
    channel: str | None = None,
    team: str = TEAM,
    state: dict[str, Any] | None = None,
    home: bool = False,
) -> dict[str, Any]:
    channel = channel or f"D{user}"
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user, "username": "ada", "team_id": team},
        "api_app_id": "A1",
        "token": "legacy",
        "trigger_id": "123.456.abc",
        "team": {"id": team, "domain": "test"},
        "actions": [action | {"action_ts": f"{time.time():.6f}"}],
    }
    if home:
        payload["container"] = {"type": "view", "view_id": "V1"}
        payload["view"] = {"id": "V1", "type": "home"}
    else:
        payload["container"] = {
            "type": "message",
            "message_ts": (message or {}).get("ts", "1.0"),
            "channel_id": channel,
            "is_ephemeral": False,
        }
        payload["channel"] = {"id": channel, "name": "directmessage"}
        payload["message"] = message or {}
    if state is not None:
        payload["state"] = {"values": state}
    return payload


def click(
    user: str,
    posted: dict[str, Any],
    *,
    block_type: str = "actions",
    index: int = 0,
    text: str | None = None,
) -> dict[str, Any]:
    """A block_actions payload clicking a button of a message Parley posted (from the fake's record)."""
    blocks = posted["blocks"]
    actions = [
        b for b in blocks if b["type"] == block_type and b.get("block_id", "").startswith("parley:")
    ]
    if text is not None:
        for block in actions:
            for element in block["elements"]:
                if element.get("type") == "button" and element["text"]["text"] == text:
                    return block_actions(
                        user,
                        element | {"block_id": block["block_id"]},
                        message={"ts": posted["ts"], "blocks": blocks},
                        channel=posted["channel"],
                    )
        raise AssertionError(f"no button {text!r} in {blocks}")
    element = actions[0]["elements"][index]
    return block_actions(
        user,
        element | {"block_id": actions[0]["block_id"]},
        message={"ts": posted["ts"], "blocks": blocks},
        channel=posted["channel"],
    )


def slash_command(user: str, text: str, *, response_url: str, team: str = TEAM) -> str:
    return urlencode(
        {
            "token": "legacy",
            "team_id": team,
            "team_domain": "test",
            "channel_id": "C1",
            "channel_name": "research",
            "user_id": user,
            "user_name": "res",
            "command": "/survey",
            "text": text,
            "api_app_id": "A1",
            "response_url": response_url,
            "trigger_id": "1.2.3",
        }
    )

"""Handlers of the public JSON API (``/api/v1``), documented in ``docs/api.md``.

Each handler is a thin translation: bounded JSON in → one call on the ``Surveys`` service →
JSON out. Validation here is about shape and size only (what an HTTP client can get wrong);
what an answer means is the engine's business, and its refusals come back as 422.
"""

from __future__ import annotations

import codecs
import json
import re
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.web import RequestPayloadError

from bot.app import SURVEYS
from bot.channels.web import identity as ident
from bot.channels.web.errors import ApiError, json_response
from bot.services.conversations import Reply

MAX_BODY = 64 * 1024
CHANNEL = "web"

# \Z, not $: "$" also matches before a trailing newline
_FLOW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_STEP_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")
_CONVERSATION_ID = re.compile(r"^[0-9a-f]{32}\Z")
_TIMEZONE = re.compile(r"^[A-Za-z0-9_+\-/]{1,64}\Z")


@dataclass(frozen=True)
class WebChannel:
    """Per-app settings of the web channel, read once from Settings at start-up."""

    secret: str
    api_keys: list[str]
    widget_js: bytes
    demo_html: str
    public_url: str = ""  # PARLEY_PUBLIC_URL: https there makes the cookie Secure
    public_flows: frozenset[str] = frozenset()  # PARLEY_WEB_FLOWS (empty: every flow)


WEB = web.AppKey("web_channel", WebChannel)


# --- request parsing -----------------------------------------------------------------------


async def read_json(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object; 413 over 64 KiB, 400 when it is not a JSON object of text."""
    try:
        raw = await _read_at_most(request, MAX_BODY)
    except RequestPayloadError as err:  # e.g. "gzip" that is not gzip
        raise ApiError(
            400,
            "bad_body",
            "the request body cannot be read: is its Content-Encoding right? (or send it "
            "uncompressed)",
        ) from err
    try:
        # "utf-8-sig" (a byte-order mark is tolerated), but its codec is written in Python
        text = (raw[3:] if raw.startswith(codecs.BOM_UTF8) else raw).decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(400, "bad_json", "the request body must be UTF-8 text") from err
    if not text.strip():
        if optional:
            return {}
        raise ApiError(400, "bad_json", "send a JSON object as the request body")
    try:
        data = orjson.loads(text)  # refuses NaN, Infinity, 1e999 and lone surrogates too
        if _LONG_NUMBER.search(text):  # orjson reads integers past 64 bits (or -2**63) as floats
            data = _DECODER.decode(text)
    except (ValueError, RecursionError) as err:
        raise ApiError(400, "bad_json", "the request body is not valid JSON") from err
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "the request body must be a JSON object")
    return data


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    """The body, refusing it (413) as soon as it passes ``limit``: a chunked or compressed body
    is never buffered further (the app's own limit is 1 MiB, for Slack's events)."""
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large()
    if length is not None and hdrs.CONTENT_ENCODING not in request.headers:  # even empty
        return await request.read()  # exactly `length` bytes: nothing more is read
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise _too_large()
    return b"".join(chunks)


def _too_large() -> ApiError:
    return ApiError(413, "body_too_large", "the request body is larger than 64 KiB")


_LONG_NUMBER = re.compile(r"[0-9]{19}")
_DECODER = json.JSONDecoder()  # exact integers (what orjson let through is valid JSON)


def _flow_id(value: Any) -> str:
    if not isinstance(value, str):
        raise ApiError(400, "bad_request", 'give the flow to start, e.g. {"flow": "nps"}')
    if not _FLOW_ID.match(value):
        raise ApiError(404, "unknown_flow", "no flow with that id")
    return value


def _step_id(value: Any) -> str:
    if not isinstance(value, str) or not _STEP_ID.match(value):
        raise ApiError(400, "bad_step", "step must be the id of the question being answered")
    return value


def _conversation_id(request: web.Request) -> str:
    value = request.match_info["id"]
    if not _CONVERSATION_ID.match(value):
        raise ApiError(404, "conversation_not_found", "no such conversation")
    return value


@lru_cache(maxsize=1024)
def _known_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _timezone(value: Any) -> str | None:
    """The browser's IANA zone (for quiet hours); an unusable one is ignored, not an error."""
    if isinstance(value, str) and _TIMEZONE.match(value) and _known_zone(value):
        return value
    return None


def _identity(request: web.Request, body: dict[str, Any] | None = None) -> ident.Identity | None:
    channel = request.app[WEB]
    return ident.resolve(request, secret=channel.secret, api_keys=channel.api_keys, body=body)


def _required_identity(request: web.Request, body: dict[str, Any] | None = None) -> ident.Identity:
    found = _identity(request, body)
    if found is None:
        raise ApiError(
            401,
            "missing_identity",
            f"send the respondent_token as {ident.TOKEN_HEADER} (or a signed user)",
        )
    return found


def _reply_body(reply: Reply) -> dict[str, Any]:
    data = reply.to_dict()
    if reply.duplicate:
        data["duplicate"] = True
    return data


# --- handlers --------------------------------------------------------------------------------


async def start_conversation(request: web.Request) -> web.Response:
    """201 with a new conversation, or 200 with the one this respondent already has open."""
    body = await read_json(request)
    flow_id = _flow_id(body.get("flow"))
    who = _identity(request, body) or ident.mint()
    public = request.app[WEB].public_flows
    if public and flow_id not in public and who.kind != "user":
        # Anyone can mint a respondent: a flow whose numbers matter takes only people the
        # host app vouches for, or a script could fill its results.
        raise ApiError(
            403,
            "signed_user_required",
            f"'{flow_id}' is only for the host app's signed-in users: send \"user\" and "
            '"signature" (see docs/api.md, Identity)',
        )
    reply = await request.app[SURVEYS].start(
        flow_id=flow_id,
        respondent_key=who.key,
        channel=CHANNEL,
        timezone=_timezone(body.get("timezone")),
        minted=who.new,
    )
    data = _reply_body(reply)
    data["respondent_token"] = who.token
    response = json_response(data, status=201 if reply.created else 200)
    ident.set_cookie(request, response, who, public_url=request.app[WEB].public_url)
    return response


async def answer(request: web.Request) -> web.Response:
    conversation_id = _conversation_id(request)
    body = await read_json(request)
    who = _required_identity(request, body)
    step = _step_id(body.get("step"))
    if "value" not in body:
        raise ApiError(400, "bad_request", 'give the answer as "value" (null skips)')
    reply = await request.app[SURVEYS].answer(
        conversation_id=conversation_id, respondent_key=who.key, step=step, value=body["value"]
    )
    return json_response(_reply_body(reply))


async def show_conversation(request: web.Request) -> web.Response:
    conversation_id = _conversation_id(request)
    who = _required_identity(request)
    reply = await request.app[SURVEYS].show(conversation_id=conversation_id, respondent_key=who.key)
    return json_response(_reply_body(reply))


async def opt_out(request: web.Request) -> web.Response:
    """Never survey this person again (idempotent); their open conversations close.

    A visitor with no identity yet (who never started a survey) becomes a new respondent who
    is opted out from the start; the token in the answer is what makes that stick."""
    body = await read_json(request, optional=True)
    who = _identity(request, body) or ident.mint()
    changed = await request.app[SURVEYS].opt_out(respondent_key=who.key, source=CHANNEL)
    data: dict[str, Any] = {"opted_out": True, "changed": changed}
    if who.new:
        data["respondent_token"] = who.token
    response = json_response(data)
    if who.new:
        ident.set_cookie(request, response, who, public_url=request.app[WEB].public_url)
    return response


# --- static ------------------------------------------------------------------------------------


async def healthz(_request: web.Request) -> web.Response:
    return json_response({"ok": True})


async def widget_js(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[WEB].widget_js,
        content_type="application/javascript",
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )


async def demo_page(request: web.Request) -> web.Response:
    return web.Response(text=request.app[WEB].demo_html, content_type="text/html")

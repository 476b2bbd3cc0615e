"""Every failure of the public API is JSON: ``{"error": message, "code": code, ...}``.

Parley's exception tree already carries a stable ``code``; this module only decides the
HTTP status for each branch, so services never learn about HTTP. aiohttp's own errors
(unknown route 404, wrong method 405, body too large 413) are turned into the same shape,
so a client never has to parse an HTML error page.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot import jsontext
from bot.errors import (
    Busy,
    ConversationClosed,
    ConversationNotFound,
    FlowNotFound,
    InvalidAnswer,
    NotCurrentStep,
    NotYourConversation,
    OptedOut,
    ParleyError,
    RecentlySurveyed,
    RespondentNotFound,
)

log = logging.getLogger("parley.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Most specific first: isinstance() walks this list in order.
STATUS: tuple[tuple[type[ParleyError], int], ...] = (
    (InvalidAnswer, 422),
    (FlowNotFound, 404),
    (ConversationNotFound, 404),
    (RespondentNotFound, 404),
    (NotYourConversation, 403),
    (OptedOut, 403),
    (NotCurrentStep, 409),
    (ConversationClosed, 409),
    (RecentlySurveyed, 409),
    (Busy, 503),
)
RETRY_BUSY_AFTER = "1"  # seconds: the requests it collided with take milliseconds

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class ApiError(Exception):
    """A request the channel itself refuses (bad JSON, bad identity, rate limit...)."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {"error": message, "code": code, **extra}
    return json_response(body, status=status, headers=headers)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """``web.json_response`` with the faster encoder (bot/jsontext.py)."""
    return web.Response(
        body=jsontext.dumps_bytes(data),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


def status_for(err: ParleyError) -> int:
    for kind, status in STATUS:
        if isinstance(err, kind):
            return status
    return 400


def parley_error_response(err: ParleyError) -> web.Response:
    status = status_for(err)
    if isinstance(err, InvalidAnswer):
        messages = [o.to_dict() for o in err.outputs]
        return error_response(status, err.code, err.message, step=err.step, messages=messages)
    if isinstance(err, RecentlySurveyed):
        until = err.until.isoformat(timespec="seconds")
        return error_response(status, err.code, err.message, retry_after=until)
    if isinstance(err, Busy):
        return error_response(
            status, err.code, err.message, headers={"Retry-After": RETRY_BUSY_AFTER}
        )
    if isinstance(err, FlowNotFound):
        # Its message lists every flow id (handy in the CLI and Slack); the public API must
        # not hand that list to anyone who asks for a made-up flow.
        return error_response(status, err.code, "no flow with that id")
    return error_response(status, err.code, err.message)


def failure_response(request: web.Request, err: Exception) -> web.StreamResponse:
    """The JSON error response for an API request that failed with ``err``. Raises it again
    where there is nobody to answer (the client left) or aiohttp answers (a redirect)."""
    if isinstance(err, ApiError):
        return error_response(err.status, err.code, err.message, headers=err.headers)
    if isinstance(err, ParleyError):
        return parley_error_response(err)
    if isinstance(err, ConnectionResetError):
        raise err
    if isinstance(err, web.HTTPException):
        if err.status < 400:
            raise err
        headers = {k: v for k, v in err.headers.items() if k.lower() in ("allow", "retry-after")}
        code = HTTP_CODES.get(err.status, "http_error")
        message = err.reason if err.status != 413 else "the request body is larger than 64 KiB"
        return error_response(err.status, code, message, headers=headers)
    log.error("unhandled error in %s %s", request.method, request.path, exc_info=err)
    return error_response(500, "internal_error", "something went wrong on our side")


_API_PATH = re.compile(r"^/+api(?:/|\Z)")


def is_api(request: web.Request) -> bool:
    """``/api``, ``/api/…`` and the same with doubled slashes (which no route matches, but
    whose 404 must still be JSON)."""
    path = request.path
    return path.startswith("/api/") or _API_PATH.match(path) is not None

"""The API's one middleware: what every ``/api/`` request passes, in this order.

1. CORS — an ``Origin`` neither the server's own nor in ``PARLEY_ALLOWED_ORIGINS`` is
   refused (403) before anything else; a preflight is answered here.
2. Wrong keys — ten wrong API keys a minute per address (the dashboard's passwords too).
3. Rate limit — per-client and per-IP token buckets (``PARLEY_RATE_LIMIT``), when set.
4. The handler.

Whatever fails on the way comes back as ``{"error", "code"}`` JSON, and an allowed
cross-origin caller gets CORS headers on errors too, so the widget can read them. One
middleware rather than one per step: each costs aiohttp a wrapper and a coroutine on every
request, the widget's answers included. Other paths (the Slack endpoint, the dashboard's
pages) pass straight through: this channel does not decide how another reports its errors.
"""

from __future__ import annotations

from aiohttp import web

from bot.channels.web.cors import Cors, add_cors_headers, is_preflight, preflight_response
from bot.channels.web.errors import Handler, failure_response, is_api
from bot.channels.web.ratelimit import WebRateLimit, WrongKeys


def api_middleware(cors: Cors, wrong_keys: WrongKeys, limit: WebRateLimit | None) -> web.middleware:  # type: ignore[valid-type]
    @web.middleware
    async def api(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_api(request):
            return await handler(request)
        origin: str | None = None
        response: web.StreamResponse
        try:
            origin = cors.check(request)
            if is_preflight(request):
                response = preflight_response()
            else:
                wrong_keys.check(request)
                if limit is not None:
                    limit.check(request)
                response = await handler(request)
        except Exception as err:
            response = failure_response(request, err)
        if origin is not None:
            add_cors_headers(response, origin)
        return response

    return api

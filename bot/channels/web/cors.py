"""CORS for the public API: the widget runs on the host's origin and calls Parley's.

Only origins listed in ``PARLEY_ALLOWED_ORIGINS`` (or ``*``) get CORS headers, and a
request whose ``Origin`` is neither the server's own nor allowed is refused with 403 before
any handler runs, so a page on a foreign site cannot make a browser write answers even with
"simple" requests that skip the preflight.

The server's own origin is scheme + host: ``PARLEY_PUBLIC_URL``'s when it is set (behind a
TLS-terminating proxy the request itself says ``http``), else the request's own.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from bot.channels.web.errors import ApiError
from bot.channels.web.identity import CROSS_ORIGIN
from bot.config import web_origin

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Content-Type, X-Parley-Token, X-Parley-User, X-Parley-Signature, Authorization"
EXPOSE_HEADERS = "Retry-After"
MAX_AGE = "600"
log = logging.getLogger(__name__)


class Cors:
    """The allow-list, normalised once (scheme://host[:port], no trailing slash)."""

    def __init__(self, origins: list[str], *, public_url: str = "") -> None:
        self.any = "*" in origins
        self.origins = frozenset(o for o in origins if o != "*")  # normalised by Settings
        public = urlsplit(public_url.strip())
        self.own = (
            web_origin(public.scheme, public.netloc) if public.scheme and public.netloc else None
        )

    def same_origin(self, request: web.Request, origin: str) -> bool:
        parts = urlsplit(origin)
        if not parts.scheme or not parts.netloc:
            return False  # "null" and other opaque origins are never our own
        own = self.own or web_origin(request.scheme, request.host or "")
        return web_origin(parts.scheme, parts.netloc) == own

    def allows(self, origin: str) -> bool:
        if self.any:
            return True
        parts = urlsplit(origin)
        return bool(parts.scheme and parts.netloc) and (
            web_origin(parts.scheme, parts.netloc) in self.origins
        )

    def _refusal(self, request: web.Request, origin: str) -> str:
        message = f"origin {origin} is not in PARLEY_ALLOWED_ORIGINS"
        if urlsplit(origin).netloc.lower() == (request.host or "").lower():
            # Parley's own page seen through a TLS proxy: the request came in as http
            message += " (behind an HTTPS proxy? set PARLEY_PUBLIC_URL to Parley's address)"
        log.info("refused a request from %s: not in PARLEY_ALLOWED_ORIGINS", origin[:200])
        return message

    def check(self, request: web.Request) -> str | None:
        """The origin to answer with CORS headers, None for none (no ``Origin``, or the
        server's own); 403 for an origin that is neither own nor allowed."""
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return None  # not a browser cross-origin call (curl, a server)
        same = self.same_origin(request, origin)
        request[CROSS_ORIGIN] = not same
        if same:
            return None
        if not self.allows(origin):
            raise ApiError(403, "origin_not_allowed", self._refusal(request, origin))
        return origin


def is_preflight(request: web.Request) -> bool:
    return request.method == "OPTIONS" and hdrs.ORIGIN in request.headers


def preflight_response() -> web.Response:
    response = web.Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
    response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
    response.headers["Access-Control-Max-Age"] = MAX_AGE
    return response


def add_cors_headers(response: web.StreamResponse, origin: str) -> None:
    response.headers.update(_cors_headers(origin))


def _cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": EXPOSE_HEADERS,
        "Vary": "Origin",
    }

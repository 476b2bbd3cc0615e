"""The web chat channel: public JSON API, embeddable widget and demo page.

``setup(app)`` registers the routes and three middlewares, outermost first:

1. ``json_errors`` — every failure leaves as ``{"error", "code"}`` JSON;
2. CORS — origin checks and headers for ``/api/`` (``PARLEY_ALLOWED_ORIGINS``);
3. rate limit — per-client and per-IP token buckets for ``/api/`` (``PARLEY_RATE_LIMIT``).
"""

from __future__ import annotations

import html
from importlib import resources

from aiohttp import web

from bot.app import SETTINGS
from bot.channels.web import api, dashboard
from bot.channels.web.cors import Cors
from bot.channels.web.errors import json_errors
from bot.channels.web.ratelimit import WebRateLimit

healthz = api.healthz

__all__ = ["healthz", "setup"]


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    demo = _static("demo.html").decode()
    demo = demo.replace("{{flow}}", html.escape(settings.demo_flow, quote=True))
    app[api.WEB] = api.WebChannel(
        secret=settings.web_secret,
        api_keys=list(settings.api_keys),
        widget_js=_static("widget.js"),
        demo_html=demo,
        public_url=settings.public_url,
        public_flows=frozenset(settings.web_flows),
    )
    app.middlewares.append(json_errors)
    app.middlewares.append(
        Cors(settings.allowed_origins, public_url=settings.public_url).middleware()
    )
    per_minute = settings.rate_limit_per_minute
    if per_minute is not None:
        limit = WebRateLimit(per_minute, trusted_proxies=settings.trusted_proxies)
        app.middlewares.append(limit.middleware())

    router = app.router
    router.add_get("/healthz", api.healthz)
    router.add_get("/widget.js", api.widget_js)
    router.add_get("/", api.demo_page)
    router.add_post("/api/v1/conversations", api.start_conversation)
    router.add_get("/api/v1/conversations/{id}", api.show_conversation)
    router.add_post("/api/v1/conversations/{id}/answers", api.answer)
    router.add_post("/api/v1/respondents/me/opt-out", api.opt_out)
    dashboard.setup(app)

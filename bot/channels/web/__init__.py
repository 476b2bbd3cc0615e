"""The web chat channel: public JSON API, embeddable widget and demo page.

``setup(app)`` registers the routes and the API's middleware (``gate.py``: CORS, wrong API
keys, rate limit, JSON errors).
"""

from __future__ import annotations

import html
import logging
from importlib import resources

from aiohttp import web

from bot.app import CATALOG, SETTINGS
from bot.channels.web import api, dashboard
from bot.channels.web.cors import Cors
from bot.channels.web.gate import api_middleware
from bot.channels.web.ratelimit import WRONG_KEYS, WebRateLimit, WrongKeys

log = logging.getLogger("parley.web")
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
    known = {flow.id for flow in app[CATALOG].all()}
    for flow_id in sorted(set(settings.web_flows) - known):
        log.warning(
            "PARLEY_WEB_FLOWS names %r, which is not a flow here: it starts for nobody (flows: %s)",
            flow_id,
            ", ".join(sorted(known)),
        )
    app[WRONG_KEYS] = WrongKeys(settings.api_keys, settings.trusted_proxies)
    per_minute = settings.rate_limit_per_minute
    limit = (
        WebRateLimit(per_minute, trusted_proxies=settings.trusted_proxies)
        if per_minute is not None
        else None
    )
    cors = Cors(settings.allowed_origins, public_url=settings.public_url)
    app.middlewares.append(api_middleware(cors, app[WRONG_KEYS], limit))

    router = app.router
    router.add_get("/healthz", api.healthz)
    router.add_get("/widget.js", api.widget_js)
    router.add_get("/", api.demo_page)
    # answers first: the most frequent request, and aiohttp tries routes sharing a prefix in
    # the order they were added
    router.add_post("/api/v1/conversations/{id}/answers", api.answer)
    router.add_post("/api/v1/conversations", api.start_conversation)
    router.add_get("/api/v1/conversations/{id}", api.show_conversation)
    router.add_post("/api/v1/respondents/me/opt-out", api.opt_out)
    dashboard.setup(app)

"""The web chat channel: public JSON API, widget and demo page."""

from aiohttp import web


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)

"""``/dashboard``: results at a glance for researchers, with pictures.

Server-rendered HTML (no build step, no script) from the same ``flow_results`` the CLI and
``/survey results`` use, so every surface shows the same numbers. Sign-in is HTTP Basic with
one of ``PARLEY_API_KEYS`` as the password (or ``Authorization: Bearer KEY``); with no keys
configured the dashboard stays off, because answers are personal data.
"""

from __future__ import annotations

import base64
import binascii
from html import escape

from aiohttp import web

from analysis.charts import bar_chart, column_chart, nps_colours
from bot.app import CATALOG, DATABASE, SETTINGS
from bot.channels.web.identity import key_matches
from bot.channels.web.ratelimit import WRONG_KEYS, seconds
from bot.errors import FlowNotFound
from bot.services.anonymous import waiting_note
from bot.services.results import (
    FlowResults,
    StepResult,
    counted,
    flow_results,
    percent,
    score_text,
)

REALM = 'Basic realm="Parley dashboard", charset="UTF-8"'
MAX_AUTH_HEADER = 1024

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1f2937;background:#f8fafc}
header{background:#4f46e5;color:#fff;padding:14px 28px}header a{color:#fff;text-decoration:none}
main{max-width:980px;margin:0 auto;padding:20px 28px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:10px;padding:16px 20px;margin:0 0 16px}
.muted{color:#6b7280}table{border-collapse:collapse}td,th{padding:4px 12px 4px 0;text-align:left}
blockquote{margin:6px 0;padding:4px 10px;border-left:3px solid #c7d2fe;background:#f5f7ff}
.score{font-size:28px;font-weight:600}
"""


def _authorised(request: web.Request, keys: list[str]) -> bool:
    header = request.headers.get("Authorization", "")
    if not keys or not header or len(header) > MAX_AUTH_HEADER:
        return False
    scheme, _, value = header.partition(" ")
    secret = ""
    if scheme.lower() == "bearer":
        secret = value.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        secret = decoded.partition(":")[2]
    return key_matches(secret, keys)


def _page(
    title: str, body: str, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    html = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · Parley</title><style>{STYLE}</style>"
        f'<header><a href="/dashboard"><b>Parley</b> dashboard</a></header><main>{body}</main></html>'
    )
    response = web.Response(text=html, status=status, content_type="text/html", headers=headers)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'"
    )
    return response


def _gate(request: web.Request) -> web.Response | None:
    keys = list(request.app[SETTINGS].api_keys)
    if not keys:
        return _page(
            "Dashboard off",
            "<div class=card><h2>The dashboard is off</h2><p>It shows people's answers, so it needs a "
            "key: set <code>PARLEY_API_KEYS</code> and sign in with one of the keys as the password.</p></div>",
            status=403,
        )
    guesses = request.app[WRONG_KEYS]
    wait = guesses.wait(request)
    if wait > 0:
        after = seconds(wait)
        return _page(
            "Too many tries",
            f"<div class=card><p>Too many wrong passwords; try again in {after} s.</p></div>",
            status=429,
            headers={"Retry-After": after},
        )
    if not _authorised(request, keys):
        if "Authorization" in request.headers:  # not a browser's first, bare request
            guesses.failed(request)
        return _page(
            "Sign in",
            "<div class=card><p>Sign in with one of <code>PARLEY_API_KEYS</code> as the password.</p></div>",
            status=401,
            headers={"WWW-Authenticate": REALM},
        )
    return None


async def overview(request: web.Request) -> web.Response:
    refused = _gate(request)
    if refused is not None:
        return refused
    db = request.app[DATABASE]
    catalog = request.app[CATALOG]
    catalog.refresh()  # flows edited while serving show up here as in `parley results`
    cards = []
    for flow in catalog.all():
        results = await flow_results(db, flow)
        cards.append(
            f'<div class=card><h3><a href="/dashboard/{escape(flow.id)}">{escape(flow.title)}</a> '
            f"<span class=muted>({escape(flow.id)}, {escape(flow.kind)})</span></h3>"
            f"<p>{escape(results.headline)}</p>{_first_chart(results)}</div>"
        )
    return _page("Flows", "<h2>Flows</h2>" + ("".join(cards) or "<p>No flows.</p>"))


async def flow_page(request: web.Request) -> web.Response:
    refused = _gate(request)
    if refused is not None:
        return refused
    catalog = request.app[CATALOG]
    catalog.refresh()
    try:
        flow = catalog.get(request.match_info["flow"][:64])
    except FlowNotFound:
        return _page("Not found", "<div class=card><p>No flow with that id.</p></div>", status=404)
    results = await flow_results(request.app[DATABASE], flow)
    rate = percent(results.completion_rate) if results.completion_rate is not None else "–"
    summary = (
        f"<h2>{escape(results.title)}</h2><div class=card><table>"
        f"<tr><th>Responses</th><td>{results.started}</td><th>Completed</th><td>{results.completed}</td>"
        f"<th>Open</th><td>{results.open}</td><th>Completion</th><td>{rate}</td></tr></table>"
        + (
            "<p class=muted>By channel: "
            + ", ".join(f"{escape(c)} {n}" for c, n in results.channels.items())
            + "</p>"
            if results.channels
            else ""
        )
        + (
            f"<p class=muted>{counted(results.retired, 'answer')} to questions no longer in this flow "
            "(edited since) are not counted here: <code>parley export</code> has them.</p>"
            if results.retired
            else ""
        )
        + (
            f"<p class=muted>{escape(waiting_note(results.waiting))}.</p>"
            if results.waiting
            else ""
        )
        + "</div>"
    )
    return _page(results.title, summary + "".join(_step_card(step) for step in results.steps))


def _first_chart(results: FlowResults) -> str:
    lead = results.lead_step  # the question the headline's score is about
    if lead is None:
        return ""
    return f"<p class=muted>{escape(lead.text)}</p>{_scale_chart(lead)}"


def _scale_chart(step: StepResult) -> str:
    assert step.scale is not None
    points = list(step.scale.distribution.items())
    colours = nps_colours([p for p, _ in points]) if step.type == "nps" else None
    return column_chart(
        [(str(p), n) for p, n in points], colours=colours, title=f"{step.id}: distribution"
    )


def _step_card(step: StepResult) -> str:
    head = f"<h3>{escape(step.text)}</h3><p class=muted>{escape(step.id)} · {step.type} · {counted(step.answers, 'answer')}</p>"
    body = ""
    if step.scale is not None:
        scale = step.scale
        if scale.score is not None and scale.score_name:
            groups = ", ".join(f"{escape(k)} {v}" for k, v in scale.groups.items())
            body += f"<p><span class=score>{score_text(step.type, scale.score)}</span> {escape(scale.score_name)} <span class=muted>({groups}; mean {scale.mean})</span></p>"
        elif scale.mean is not None:
            body += f"<p>mean <b>{scale.mean}</b></p>"
        body += _scale_chart(step)
    elif step.choices:
        body += bar_chart(
            [(label, n) for _, label, n in step.choices], title=f"{step.id}: top answers"
        )
    elif step.type == "yes_no":
        body += bar_chart([("yes", step.yes), ("no", step.no)], title=f"{step.id}: yes and no")
    elif step.recent:
        body += "".join(f"<blockquote>{escape(item['text'])}</blockquote>" for item in step.recent)
    return f"<div class=card>{head}{body}</div>"


def setup(app: web.Application) -> None:
    app.router.add_get("/dashboard", overview)
    app.router.add_get("/dashboard/{flow}", flow_page)

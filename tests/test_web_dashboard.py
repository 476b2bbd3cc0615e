"""The researcher dashboard: off without keys, signed in with an API key, the same numbers
as `parley results`, charts as inline SVG, and answers escaped."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import pytest
from web_helpers import make_app, make_flows

from analysis.charts import bar_chart, column_chart, nps_colours
from bot.app import CATALOG


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()}


async def answer_nps(client: Any, score: int, text: str) -> None:
    """As a new person each time (another browser: no cookie)."""
    client.session.cookie_jar.clear()
    started = await (await client.post("/api/v1/conversations", json={"flow": "nps"})).json()
    token = {"X-Parley-Token": started["respondent_token"]}
    url = f"/api/v1/conversations/{started['id']}/answers"
    reply = await (
        await client.post(url, json={"step": "score", "value": score}, headers=token)
    ).json()
    step = reply["messages"][-1]["step"]
    await client.post(url, json={"step": step, "value": text}, headers=token)


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> Any:
    app = make_app(str(tmp_path / "d.db"), make_flows(tmp_path), api_keys=["k-research-dashboard"])
    return await aiohttp_client(app)


async def test_dashboard_needs_a_key(client: Any) -> None:
    response = await client.get("/dashboard")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert (await client.get("/dashboard", headers=basic("wrong"))).status == 401
    assert (await client.get("/dashboard", headers={"Authorization": "Basic !!!"})).status == 401
    assert (
        await client.get("/dashboard", headers={"Authorization": "Bearer k-research-dashboard"})
    ).status == 200


async def test_dashboard_is_off_without_configured_keys(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await aiohttp_client(make_app(str(tmp_path / "d.db"), make_flows(tmp_path)))
    response = await client.get("/dashboard", headers=basic(""))
    assert response.status == 403
    assert "PARLEY_API_KEYS" in await response.text()


async def test_overview_and_flow_page_show_numbers_charts_and_escaped_answers(client: Any) -> None:
    await answer_nps(client, 10, "Great <script>alert(1)</script> support")
    await answer_nps(client, 3, "Too slow")
    overview = await client.get("/dashboard", headers=basic("k-research-dashboard"))
    assert overview.status == 200
    page = await overview.text()
    assert 'href="/dashboard/nps"' in page
    assert "2 responses · 100% completed · NPS +0" in page
    assert page.count("<svg") >= 1
    assert "no-store" in overview.headers["Cache-Control"]

    detail = await (
        await client.get("/dashboard/nps", headers=basic("k-research-dashboard"))
    ).text()
    assert "<script>" not in detail
    assert "Great &lt;script&gt;alert(1)&lt;/script&gt; support" in detail
    assert "Too slow" in detail
    assert "<rect" in detail and "10: 1</title>" in detail and "3: 1</title>" in detail
    missing = await client.get("/dashboard/nope", headers=basic("k-research-dashboard"))
    assert missing.status == 404


LEAD = """
id: lead
kind: microsurvey
title: Lead
steps:
  - {id: mood, type: rating, text: Your mood today, min: 1, max: 5}
  - {id: score, type: nps, text: Would you recommend us}
"""


async def test_flows_added_while_serving_show_with_the_chart_their_score_is_about(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    flows = make_flows(tmp_path)
    client = await aiohttp_client(
        make_app(str(tmp_path / "d.db"), flows, api_keys=["k-research-dashboard"])
    )
    (flows / "lead.yml").write_text(LEAD)  # added while the server runs
    client.app[CATALOG].refresh(force=True)  # what the next look at the files would find
    started = await (await client.post("/api/v1/conversations", json={"flow": "lead"})).json()
    url = f"/api/v1/conversations/{started['id']}/answers"
    token = {"X-Parley-Token": started["respondent_token"]}
    await client.post(url, json={"step": "mood", "value": 4}, headers=token)
    await client.post(url, json={"step": "score", "value": 9}, headers=token)
    (flows / "later.yml").write_text(LEAD.replace("id: lead", "id: later"))
    os.utime(flows / "later.yml", (time.time() + 5, time.time() + 5))
    client.app[CATALOG]._checked_at = 0.0  # as if the 2 s between looks had passed
    page = await (await client.get("/dashboard", headers=basic("k-research-dashboard"))).text()
    assert 'href="/dashboard/later"' in page  # no survey had to start to see it
    card = page.split('href="/dashboard/lead"')[1].split("</div>")[0]
    assert "NPS +100" in card and "Would you recommend us" in card  # not the mood chart
    assert "Your mood today" not in card


def test_column_chart_scales_bars_and_escapes_labels() -> None:
    svg = column_chart([("a<b", 2), ("c", 4)], title="t & u")
    assert "a&lt;b" in svg and "t &amp; u" in svg and "<script" not in svg
    heights = [float(part.split('"')[0]) for part in svg.split('height="')[2:]]
    assert heights[1] == 2 * heights[0]  # 4 is twice as tall as 2


def test_bar_chart_and_nps_colours() -> None:
    svg = bar_chart([("Price", 3), ("Quality", 1)], title="top")
    assert svg.count("<rect") == 2 and "Price: 3" in svg
    assert nps_colours([0, 6, 7, 8, 9, 10]) == ["#d9534f"] * 2 + ["#f0ad4e"] * 2 + ["#5cb85c"] * 2


async def test_guessing_the_key_gets_a_few_tries_a_minute(client: Any) -> None:
    """The keys also act for any user on the API: wrong passwords are counted per address."""
    assert (await client.get("/dashboard")).status == 401  # a browser's first, bare request
    statuses = [
        (await client.get("/dashboard", headers=basic(f"guess-{n}"))).status for n in range(11)
    ]
    assert statuses == [401] * 10 + [429]
    refused = await client.get("/dashboard", headers=basic("k-research-dashboard"))
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "Too many wrong passwords" in await refused.text()
    # the same keys act on the API: guessing there is the same guessing
    bearer = {"Authorization": "Bearer k-research-dashboard"}
    api = await client.post("/api/v1/conversations", json={"flow": "nps"}, headers=bearer)
    assert api.status == 429 and (await api.json())["code"] == "rate_limited"


async def test_guesses_sent_all_at_once_are_counted_all_the_same(client: Any) -> None:
    """Each is counted before anything is awaited: 25 guesses whose bodies all arrive late
    (so none had been refused yet when the next came in) still get 10 tries, not 25."""
    import asyncio

    body = b'{"flow": "nps"}'
    streams = []
    for n in range(25):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(
            b"POST /api/v1/conversations HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            + f"Authorization: Bearer all-at-once-{n}-0123456789\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:-1]  # the last byte held back
        )
        await writer.drain()
        streams.append((reader, writer))
    await asyncio.sleep(0.2)  # every request is in, waiting for its body
    statuses = []
    for reader, writer in streams:
        writer.write(body[-1:])
        await writer.drain()
        statuses.append(int((await reader.readline()).split()[1]))
        writer.close()
    assert sorted(statuses) == [401] * 10 + [429] * 15


async def test_other_authorization_schemes_are_no_guesses(client: Any) -> None:
    """A site-wide auth proxy, or the browser after a dashboard login, sends Basic to every
    page of the origin, the widget's API requests included: that is nobody guessing keys,
    and the widget keeps working as an anonymous visitor."""
    statuses = []
    for _ in range(12):
        response = await client.post(
            "/api/v1/conversations", json={"flow": "nps"}, headers=basic("proxy-password")
        )
        statuses.append(response.status)
    assert statuses == [201] + [200] * 11  # started, then resumed (the cookie says who)
    page = await client.get("/dashboard", headers=basic("k-research-dashboard"))
    assert page.status == 200


async def test_wrong_api_keys_count_as_guesses_too(client: Any) -> None:
    statuses = []
    for n in range(11):
        wrong = {"Authorization": f"Bearer guess-{n}-0123456789"}
        response = await client.post("/api/v1/conversations", json={"flow": "nps"}, headers=wrong)
        statuses.append(response.status)
    assert statuses == [401] * 10 + [429]
    page = await client.get("/dashboard", headers=basic("k-research-dashboard"))
    assert page.status == 429

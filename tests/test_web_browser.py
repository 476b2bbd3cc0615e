"""The widget in a real browser (Debian's headless Chromium driven by Playwright).

The server runs in-process on a free port. The welcome-flow test answers whatever the
current question is, by the kind of control the widget shows, so it keeps working as the
starter flow evolves; the answers are then read back from the database.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from web_helpers import answers, make_app, make_flows, rows

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (.ci/run installs it)"
    ),
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def parley_site(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[str, str]]:
    """``parley serve`` on the starter flows: (database, the demo page's URL)."""
    db = str(tmp_path / "parley.db")
    port = free_port()
    runner = await serve(make_app(db, make_flows(tmp_path), **overrides), port)
    try:
        yield db, f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def serve(app: web.Application, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


class Driver:
    """Answers the widget's current question by its kind, remembering what it sent."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.sent: dict[str, Any] = {}
        self.kinds: list[str] = []
        self.last: str | None = None

    async def wait_next(self) -> str | None:
        """The step now asked (a different one than before), or None once the flow ended."""
        after = f':not([data-step="{self.last}"])' if self.last else ""
        asking = self.page.locator(f'.panel[data-state="asking"] .controls{after}')
        done = self.page.locator('.panel[data-state="done"]')
        await asking.or_(done).first.wait_for(timeout=15_000)
        if await done.count():
            return None
        step = await asking.get_attribute("data-step")
        self.last = step
        return step

    async def answer(self, step: str) -> None:
        controls = self.page.locator(f'.controls[data-step="{step}"]')
        kind = await controls.get_attribute("data-kind")
        self.kinds.append(kind)
        if kind in ("nps", "csat", "ces", "rating"):
            buttons = controls.locator(".scale button")
            button = buttons.nth(await buttons.count() - 1)  # the top of the scale
            self.sent[step] = int(await button.inner_text())
            await button.click()
        elif kind == "choice":
            button = controls.locator(".choices button").first
            self.sent[step] = await button.get_attribute("data-value")
            await button.click()
        elif kind == "multi_choice":
            boxes = controls.locator("input[type=checkbox]")
            send = controls.get_by_role("button", name="Send")
            assert await send.is_disabled()  # nothing picked yet
            picked = []
            for i in range(await boxes.count()):
                box = boxes.nth(i)
                if await box.is_enabled() and len(picked) < 2:
                    await box.check()
                    picked.append(await box.get_attribute("value"))
            self.sent[step] = picked
            await send.click()
        elif kind == "text":
            area = controls.locator("textarea")
            words = f"Typed answer for {step}"
            await area.click()
            await self.page.keyboard.type(words)
            counter = await controls.locator(".counter").inner_text()
            assert counter.startswith(f"{len(words)} / ")
            self.sent[step] = words
            await self.page.keyboard.press("Enter")  # Enter sends, Shift+Enter is a new line
        elif kind == "yes_no":
            self.sent[step] = True
            await controls.get_by_role("button", name="Yes").click()
        elif kind == "email":
            await controls.locator("input[type=email]").fill("ana@example.com")
            send = controls.get_by_role("button", name="Send")
            assert await send.is_disabled()  # consent first
            await controls.locator("input[type=checkbox]").check()
            self.sent[step] = "ana@example.com"
            await send.click()
        else:
            raise AssertionError(f"the widget shows no controls for kind {kind!r}")

    async def finish(self, limit: int = 60) -> None:
        for _ in range(limit):
            step = await self.wait_next()
            if step is None:
                return
            await self.answer(step)
        raise AssertionError("the flow did not end")


async def test_demo_page_runs_the_welcome_flow_and_answers_are_stored(
    browser: Any, tmp_path: Path
) -> None:
    flows = make_flows(tmp_path)
    db = str(tmp_path / "parley.db")
    port = free_port()
    runner = await serve(make_app(db, flows), port)
    try:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{port}/")
        dialog = page.get_by_role("dialog")
        await dialog.wait_for()  # data-open: the demo opens the chat at once
        assert await page.locator("button.launcher").get_attribute("aria-expanded") == "true"
        assert await page.get_by_role("log").count() == 1

        driver = Driver(page)
        first = await driver.wait_next()
        assert first is not None
        await driver.answer(first)
        second = await driver.wait_next()
        assert second is not None

        # Reload mid-flow: the widget resumes the same conversation at the same question.
        await page.reload()
        await page.locator(
            f'.panel[data-state="asking"] .controls[data-step="{second}"]'
        ).wait_for()
        assert await page.get_by_text("pick up where you left off").count() == 1

        driver.last = None
        await driver.finish()
        await page.locator(".panel[data-state=done]").wait_for()

        stored = dict(await answers(db))
        assert stored == driver.sent
        assert len(stored) >= 5
        assert {"choice", "rating"} <= set(driver.kinds)
        tz = await rows(db, "SELECT timezone FROM respondent")
        assert len(tz) == 1 and tz[0][0]  # the browser's time zone was sent

        # Escape closes the panel and gives focus back to the launcher.
        await page.keyboard.press("Escape")
        assert await page.locator("button.launcher").get_attribute("aria-expanded") == "false"
        assert await page.get_by_role("dialog").is_hidden()
    finally:
        await runner.cleanup()


async def test_widget_embedded_on_another_origin_renders_every_step_type(
    browser: Any, tmp_path: Path
) -> None:
    flows = make_flows(tmp_path, starter=False)
    db = str(tmp_path / "parley.db")
    parley_port, site_port = free_port(), free_port()
    site_origin = f"http://localhost:{site_port}"
    parley = await serve(make_app(db, flows, allowed_origins=[site_origin]), parley_port)

    page_html = f"""<!doctype html><html><head><title>Shop</title></head><body><h1>A shop</h1>
<script src="http://127.0.0.1:{parley_port}/widget.js" data-flow="every-step" data-title="Tell us"></script>
</body></html>"""

    async def shop(_request: web.Request) -> web.Response:
        return web.Response(text=page_html, content_type="text/html")

    site_app = web.Application()
    site_app.router.add_get("/", shop)
    site = await serve(site_app, site_port, host="localhost")
    try:
        page = await browser.new_page()
        await page.goto(f"{site_origin}/")
        launcher = page.get_by_role("button", name="Open survey chat: Tell us")
        assert await launcher.get_attribute("aria-expanded") == "false"
        await launcher.press("Enter")  # keyboard-accessible launcher
        await page.get_by_role("dialog", name="Tell us").wait_for()

        driver = Driver(page)
        # The optional step gets a Skip button; use it there, answer everything else.
        for _ in range(30):
            step = await driver.wait_next()
            if step is None:
                break
            if step == "extra":
                driver.kinds.append("text")
                await (
                    page.locator('.controls[data-step="extra"]')
                    .get_by_role("button", name="Skip")
                    .click()
                )
                continue
            await driver.answer(step)
        assert driver.kinds == [
            "nps",
            "csat",
            "ces",
            "rating",
            "choice",
            "multi_choice",
            "text",
            "text",
            "yes_no",
            "email",
        ]
        await page.get_by_text("All done, thank you!").wait_for()
        assert dict(await answers(db)) == driver.sent

        # The token lives in the host page's localStorage (no third-party cookie needed).
        keys = await page.evaluate("Object.keys(window.localStorage)")
        assert any(k.endswith(":token") for k in keys)

        # "Stop surveying me" needs a confirmation, then sticks.
        await page.get_by_role("button", name="Stop surveying me").click()
        await page.get_by_role("button", name="Yes, never ask me again").click()
        await page.get_by_text("we won't survey you again").wait_for()
        flags = await rows(db, "SELECT opted_out FROM respondent")
        assert flags in ([(1,)], [(True,)])
        # and on the next page the chat bubble is gone (it would offer nothing)
        await page.reload()
        await page.get_by_role("heading", name="A shop").wait_for()
        assert await page.evaluate("typeof window.localStorage") == "object"
        assert await page.locator("button.launcher").count() == 0
    finally:
        await site.cleanup()
        await parley.cleanup()


async def test_a_visitor_whose_survey_never_started_can_still_opt_out(
    browser: Any, tmp_path: Path
) -> None:
    db = str(tmp_path / "parley.db")
    port = free_port()
    runner = await serve(make_app(db, make_flows(tmp_path), demo_flow="gone"), port)
    try:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.locator(".msg.error").first.wait_for()  # the flow is not there
        await page.get_by_role("button", name="Stop surveying me").click()
        await page.get_by_role("button", name="Yes, never ask me again").click()
        await page.get_by_text("we won't survey you again").wait_for()
        assert await rows(db, "SELECT opted_out FROM respondent") in ([(1,)], [(True,)])
        await page.reload()
        await page.get_by_text("You asked us not to survey you").wait_for()
        assert await rows(db, "SELECT count(*) FROM respondent") == [(1,)]
    finally:
        await runner.cleanup()


async def test_widget_on_an_origin_that_is_not_allowed_stores_nothing(
    browser: Any, tmp_path: Path
) -> None:
    flows = make_flows(tmp_path, starter=False)
    db = str(tmp_path / "parley.db")
    parley_port, site_port = free_port(), free_port()
    parley = await serve(
        make_app(db, flows, allowed_origins=["https://elsewhere.example"]), parley_port
    )

    async def shop(_request: web.Request) -> web.Response:
        tag = f'<script src="http://127.0.0.1:{parley_port}/widget.js" data-flow="every-step" data-open="true"></script>'
        return web.Response(text=f"<!doctype html><body>{tag}</body>", content_type="text/html")

    site_app = web.Application()
    site_app.router.add_get("/", shop)
    site = await serve(site_app, site_port, host="localhost")
    try:
        page = await browser.new_page()
        await page.goto(f"http://localhost:{site_port}/")
        await page.locator(".msg.error").first.wait_for()
        assert await page.locator(".controls").count() == 0
        assert await rows(db, "SELECT count(*) FROM respondent") == [(0,)]
    finally:
        await site.cleanup()
        await parley.cleanup()


async def test_widget_fits_a_phone_screen(browser: Any, tmp_path: Path) -> None:
    """On a 375 px wide phone the open panel stays on screen and its buttons are tappable."""
    async with parley_site(tmp_path) as (_db, url):
        page = await browser.new_page(viewport={"width": 375, "height": 667}, is_mobile=True)
        await page.goto(url)
        dialog = page.get_by_role("dialog")
        await dialog.wait_for()
        await page.locator('.panel[data-state="asking"] .controls').wait_for()
        box = await dialog.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375
        assert box["y"] >= 0 and box["y"] + box["height"] <= 667
        buttons = page.locator(".controls button")
        assert await buttons.count() > 0
        for i in range(await buttons.count()):
            button = await buttons.nth(i).bounding_box()
            assert button is not None
            assert button["height"] >= 32  # a thumb can hit it
            assert button["x"] >= 0 and button["x"] + button["width"] <= 375


# --- helpers for the tests below ---------------------------------------------------------------

PHONE: dict[str, Any] = {"viewport": {"width": 375, "height": 667}, "is_mobile": True}

FOCUSED = """() => {
    let node = document.activeElement;
    while (node && node.shadowRoot && node.shadowRoot.activeElement) {
        node = node.shadowRoot.activeElement;
    }
    return node ? node.tagName + ":" + (node.textContent || "").trim() : "NONE";
}"""


async def focused(page: Any) -> str:
    """The element that has keyboard focus, looking inside the widget's shadow root."""
    return str(await page.evaluate(FOCUSED))


async def asking(page: Any, step: str) -> Any:
    controls = page.locator(f'.panel[data-state="asking"] .controls[data-step="{step}"]')
    await controls.wait_for(timeout=15_000)
    return controls


async def respondent_keys(db: str) -> list[str]:
    return [key for (key,) in await rows(db, "SELECT key FROM respondent ORDER BY id")]


async def test_the_current_question_stays_in_view_on_a_phone(browser: Any, tmp_path: Path) -> None:
    """After every answer the question now asked (and its help) is inside the log's box."""
    flows = make_flows(tmp_path)
    long_help = "Some help text that makes this message a lot taller. " * 5
    (flows / "helpful.yml").write_text(
        f"""\
id: helpful
kind: microsurvey
title: Help
intro: "{"A long introduction that fills the log. " * 12}"
steps:
  - id: first
    type: yes_no
    text: "Shall we begin with a question?"
  - id: second
    type: choice
    text: "Which of these is closest?"
    help: "{long_help}"
    choices:
      - {{value: a, label: First}}
      - {{value: b, label: Second}}
      - {{value: c, label: Third}}
      - {{value: d, label: Fourth}}
""",
        encoding="utf-8",
    )
    db = str(tmp_path / "parley.db")
    port, help_port = free_port(), free_port()
    runner = await serve(make_app(db, flows), port)
    helpful = await serve(make_app(str(tmp_path / "h.db"), flows, demo_flow="helpful"), help_port)

    async def question_in_view(page: Any) -> None:
        log = await page.get_by_role("log").bounding_box()
        question = await page.locator(".log .msg.bot").last.bounding_box()
        assert log is not None and question is not None
        assert question["y"] >= log["y"] - 1, (question, log)
        assert question["y"] + question["height"] <= log["y"] + log["height"] + 1, (question, log)

    try:
        page = await browser.new_page(**PHONE)
        await page.goto(f"http://127.0.0.1:{port}/")
        await asking(page, "jtbd")
        await question_in_view(page)
        await page.get_by_role("button", name="I am exploring what it can do").click()
        await asking(page, "jtbd_detail")
        await question_in_view(page)
        await page.get_by_role("button", name="Skip").click()
        await asking(page, "role")
        await question_in_view(page)
        await page.get_by_role("button", name="Engineering").click()
        await asking(page, "company_size")
        await question_in_view(page)

        page = await browser.new_page(**PHONE)
        await page.goto(f"http://127.0.0.1:{help_port}/")
        await asking(page, "first")
        await question_in_view(page)
        await page.get_by_role("button", name="Yes").click()
        await asking(page, "second")
        await question_in_view(page)  # the help text below the question included
    finally:
        await helpful.cleanup()
        await runner.cleanup()


async def test_the_nps_scale_fits_one_row_on_a_phone(browser: Any, tmp_path: Path) -> None:
    """0-10 on one row: a scale split over two lines reads as two scales."""
    db = str(tmp_path / "parley.db")
    port = free_port()
    app = make_app(db, make_flows(tmp_path, starter=False), demo_flow="every-step")
    runner = await serve(app, port)
    try:
        page = await browser.new_page(**PHONE)
        await page.goto(f"http://127.0.0.1:{port}/")
        controls = await asking(page, "likely")
        assert await controls.get_attribute("data-kind") == "nps"
        buttons = controls.locator(".scale button")
        assert await buttons.count() == 11
        boxes = [await buttons.nth(i).bounding_box() for i in range(11)]
        assert all(box is not None for box in boxes)
        assert len({round(box["y"]) for box in boxes}) == 1, [box["y"] for box in boxes]
        for box in boxes:
            assert box["height"] >= 24 and box["width"] >= 24  # still tappable
            assert box["x"] >= 0 and box["x"] + box["width"] <= 375
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("choice", ["cancel", "confirm"])
async def test_opting_out_by_keyboard_keeps_focus_in_the_dialog(
    browser: Any, tmp_path: Path, choice: str
) -> None:
    """Keyboard only: Tab to "Stop surveying me", Enter, then Cancel or confirm with Enter."""
    async with parley_site(tmp_path) as (db, url):
        page = await browser.new_page()
        await page.goto(url)
        await asking(page, "jtbd")
        for _ in range(20):
            if await focused(page) == "BUTTON:Stop surveying me":
                break
            await page.keyboard.press("Tab")
        assert await focused(page) == "BUTTON:Stop surveying me"
        await page.keyboard.press("Enter")
        assert await focused(page) == "BUTTON:Yes, never ask me again"

        if choice == "cancel":  # focus comes back to the link, not to the page's body
            await page.keyboard.press("Tab")
            assert await focused(page) == "BUTTON:Cancel"
            await page.keyboard.press("Enter")
            assert await focused(page) == "BUTTON:Stop surveying me"
            assert await rows(db, "SELECT opted_out FROM respondent") in ([(0,)], [(False,)])
            return

        # Confirmed: focus lands on a Close button inside the dialog, which closes it.
        await page.keyboard.press("Enter")
        await page.get_by_text("we won't survey you again").wait_for()
        await page.locator('.panel[data-state="done"]').wait_for()
        await page.wait_for_function(f"({FOCUSED})() === 'BUTTON:Close'", timeout=5_000)
        await page.keyboard.press("Enter")
        assert await page.get_by_role("dialog").is_hidden()
        assert await focused(page) == "BUTTON:"  # the launcher (an icon with an aria-label)
        assert await rows(db, "SELECT opted_out FROM respondent") in ([(1,)], [(True,)])


@pytest.mark.parametrize("cause", ["closed_port", "origin_not_allowed"])
async def test_an_unreachable_server_sets_the_error_state(
    browser: Any, tmp_path: Path, cause: str
) -> None:
    """The fetch fails (nothing listens, or CORS refuses the origin): data-state is error."""
    api_port, site_port = free_port(), free_port()
    runners = []
    if cause == "origin_not_allowed":
        flows = make_flows(tmp_path, starter=False)
        app = make_app(str(tmp_path / "p.db"), flows, allowed_origins=["https://x.example"])
        runners.append(await serve(app, api_port))
    tag = f'<script src="http://127.0.0.1:{api_port}/widget.js" data-flow="every-step" data-open="true"></script>'

    async def shop(_request: web.Request) -> web.Response:
        return web.Response(text=f"<!doctype html><body>{tag}</body>", content_type="text/html")

    site_app = web.Application()
    site_app.router.add_get("/", shop)
    runners.append(await serve(site_app, site_port, host="localhost"))
    widget = Path(__file__).resolve().parent.parent / "bot/channels/web/static/widget.js"
    try:
        page = await browser.new_page()
        if cause == "closed_port":  # nothing listens on api_port: hand out widget.js only
            await page.route(
                "**/widget.js",
                lambda route: route.fulfill(
                    body=widget.read_text(), content_type="text/javascript"
                ),
            )
        await page.goto(f"http://localhost:{site_port}/")
        await page.get_by_text("Could not reach the survey server.").wait_for()
        assert await page.locator(".panel").get_attribute("data-state") == "error"
        assert await page.locator(".controls").count() == 0
        # Trying again fails the same way: the error state again, never stuck at loading.
        await page.get_by_role("button", name="Try again").click()
        await page.locator(".msg.error").nth(1).wait_for()
        assert await page.locator(".panel").get_attribute("data-state") == "error"
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def test_a_conversation_forgotten_mid_survey_starts_over(
    browser: Any, tmp_path: Path
) -> None:
    from bot.services import privacy
    from bot.store.database import Database

    async with parley_site(tmp_path) as (db, url):
        page = await browser.new_page()
        await page.goto(url)
        await asking(page, "jtbd")
        await page.get_by_role("button", name="I am exploring what it can do").click()
        await asking(page, "jtbd_detail")

        (key,) = await respondent_keys(db)
        database = Database(db)
        try:
            await privacy.forget(database, key=key)  # what `parley forget` does
        finally:
            await database.dispose()
        assert await rows(db, "SELECT count(*) FROM conversation") == [(0,)]

        await page.get_by_role("button", name="Skip").click()
        await asking(page, "jtbd")  # afresh, from the first question
        assert await page.get_by_text("start again").count() == 1
        await page.get_by_role("button", name="Automate repetitive work").click()
        await asking(page, "jtbd_detail")
        assert await answers(db) == [("jtbd", "automate")]


async def expire_conversations(db: str, *, asked_long_ago: bool = True) -> None:
    """Start every conversation long ago: the welcome flow expires after 14 days (and the
    person was last asked then: the frequency cap is long over)."""
    from sqlalchemy import text

    from bot.store.database import Database

    database = Database(db)
    try:
        async with database.engine.begin() as conn:
            # a new version, as every write to a conversation makes: the server keeps what it
            # saved last in memory, and trusts it only while the version is the same
            await conn.execute(
                text(
                    "UPDATE conversation SET started_at = '2000-01-01 00:00:00', "
                    "version = version + 1"
                )
            )
            if asked_long_ago:
                await conn.execute(
                    text("UPDATE respondent SET last_surveyed_at = '2000-01-01 00:00:00'")
                )
    finally:
        await database.dispose()


def record_starts(page: Any) -> list[str]:
    """The POST /api/v1/conversations requests the page makes (each starts or resumes one)."""
    posts: list[str] = []

    def on_request(request: Any) -> None:
        if request.method == "POST" and request.url.endswith("/api/v1/conversations"):
            posts.append(request.url)

    page.on("request", on_request)
    return posts


async def test_an_expired_conversation_is_replaced_on_reload(browser: Any, tmp_path: Path) -> None:
    async with parley_site(tmp_path) as (db, url):
        page = await browser.new_page()
        posts = record_starts(page)
        await page.goto(url)
        await page.get_by_role("button", name="I am exploring what it can do").click()
        await asking(page, "jtbd_detail")
        assert len(posts) == 1

        # Expired while the page was closed: the reload's GET says so, and a new one starts.
        await expire_conversations(db)
        await page.reload()
        await asking(page, "jtbd")
        assert len(posts) == 2
        statuses = await rows(db, "SELECT status FROM conversation ORDER BY started_at")
        assert statuses == [("expired",), ("active",)]
        assert await page.get_by_text("has expired").count() == 0

        # A finished conversation is not surveyed again: a reload shows its thanks.
        await Driver(page).finish()
        await page.reload()
        await page.locator('.panel[data-state="done"]').wait_for()
        await page.get_by_text("Your answers help us shape Acme").wait_for()
        assert len(posts) == 2
        assert await page.locator(".controls").count() == 0


async def test_an_answer_to_an_expired_conversation_starts_a_new_one(
    browser: Any, tmp_path: Path
) -> None:
    async with parley_site(tmp_path) as (db, url):
        page = await browser.new_page()
        posts = record_starts(page)
        await page.goto(url)
        await asking(page, "jtbd")
        await expire_conversations(db)  # expired while the page was open

        # The answer is refused (409 conversation_closed, "expired"): a new conversation.
        await page.get_by_role("button", name="Automate repetitive work").click()
        await page.get_by_text("let's start again").wait_for()
        await asking(page, "jtbd")
        assert len(posts) == 2
        statuses = await rows(db, "SELECT status FROM conversation ORDER BY started_at")
        assert statuses == [("expired",), ("active",)]
        await page.get_by_role("button", name="Automate repetitive work").click()
        await asking(page, "jtbd_detail")
        assert await answers(db) == [("jtbd", "automate")]


async def test_someone_surveyed_this_week_is_not_asked_again(browser: Any, tmp_path: Path) -> None:
    """The frequency cap in the widget: after the welcome survey, the same browser is not
    given the NPS survey the site shows next — a short note instead, no error."""
    db = str(tmp_path / "parley.db")
    port = free_port()
    flows = make_flows(tmp_path)
    runner = await serve(make_app(db, flows), port)
    try:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.get_by_role("button", name="I am exploring what it can do").click()
        await Driver(page).finish()
    finally:
        await runner.cleanup()
    runner = await serve(make_app(db, flows, demo_flow="nps"), port)  # the site's next survey
    try:
        posts = record_starts(page)
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.get_by_text("you answered one of our surveys recently").wait_for()
        assert await page.locator(".panel").get_attribute("data-state") == "done"
        assert len(posts) == 1 and await page.locator(".controls").count() == 0
        flows_asked = await rows(db, "SELECT flow_id FROM conversation")
        assert flows_asked == [("welcome",)]
    finally:
        await runner.cleanup()


async def test_the_pick_hint_reads_like_the_question(browser: Any, tmp_path: Path) -> None:
    """ "Pick all that apply" must not be followed by "Pick 1 to 3"."""
    flows = make_flows(tmp_path, starter=False)
    (flows / "tools.yml").write_text(
        "id: tools\nkind: microsurvey\ntitle: Tools\nsteps:\n"
        "  - id: used\n    type: multi_choice\n    text: Which do you use? Pick all that apply.\n"
        "    choices:\n      - {value: a, label: A}\n      - {value: b, label: B}\n"
        "      - {value: c, label: C}\n"
    )
    port = free_port()
    runner = await serve(make_app(str(tmp_path / "p.db"), flows, demo_flow="tools"), port)
    try:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{port}/")
        legend = page.locator(".controls legend")
        await legend.wait_for()
        assert await legend.inner_text() == "Pick one or more"
    finally:
        await runner.cleanup()


async def test_an_expired_survey_within_the_cap_says_so_without_promising_a_restart(
    browser: Any, tmp_path: Path
) -> None:
    """A flow that expires sooner than the recontact window: the restart is refused, and the
    widget says so once, in words that agree with each other."""
    async with parley_site(tmp_path) as (db, url):
        page = await browser.new_page()
        await page.goto(url)
        await asking(page, "jtbd")
        await expire_conversations(db, asked_long_ago=False)
        await page.get_by_role("button", name="Automate repetitive work").click()
        await page.get_by_text("you answered one of our surveys recently").wait_for()
        await page.get_by_text("This survey had expired.").wait_for()
        assert await page.get_by_text("start again").count() == 0
        assert await page.locator(".panel").get_attribute("data-state") == "done"
        assert await rows(db, "SELECT status FROM conversation") == [("expired",)]

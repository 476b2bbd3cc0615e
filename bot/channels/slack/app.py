"""The slack-bolt ``AsyncApp`` inside Parley's own aiohttp application (no second server).

``setup`` (in ``__init__``) adds plain routes and one ``cleanup_ctx`` entry; everything that
needs a running loop or the database — the Web API client and its HTTP session, the Bolt
app, the installation store, the Socket Mode connection, the recovery sweep — is created at
start-up here and closed at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.slack.dedupe import STALE_CLAIM, Inbox
from bot.channels.slack.delivery import Delivery, holding_claims, seconds_left, slack_error
from bot.channels.slack.people import Profiles
from bot.channels.slack.permissions import Roles
from bot.config import Settings
from bot.errors import ConfigError
from bot.services.catalog import FlowCatalog
from bot.services.conversations import Surveys
from bot.store.database import Database

log = logging.getLogger("parley.slack")
WEB_API_LOG = logging.getLogger("parley.slack.web_api")

EVENTS_PATH = "/slack/events"
SHUTDOWN_GRACE = 10.0  # seconds shutdown waits for listeners still running
INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
MAX_BODY = 1024 * 1024  # a 40,000-character message, JSON-escaped, twice (text and blocks)
RECOVERY_EVERY = timedelta(seconds=30)
RECOVER_AFTER = STALE_CLAIM  # what a live handler may still be retrying is not recovered
MAX_RETRY_WAIT = timedelta(seconds=60)  # per 429 (and never past the claims held: see delivery)

# The bot scopes Parley uses, and no others (app-manifest.yml lists the same).
BOT_SCOPES = (
    "chat:write",  # post questions and update them once answered; ephemeral notes
    "commands",  # /survey
    "im:history",  # read replies in the DM (message.im)
    "im:write",  # conversations.open for a person's DM
    "users:read",  # users.info: first name and time zone for piping
    "usergroups:read",  # @usergroup handles in PARLEY_RESEARCHERS
)


@dataclass
class SlackRuntime:
    """What the listeners need, created at start-up and reached through ``app[SLACK]``."""

    settings: Settings
    surveys: Surveys
    catalog: FlowCatalog
    db: Database
    bolt: AsyncApp
    client: AsyncWebClient
    installation_store: AsyncInstallationStore | None = None
    session: aiohttp.ClientSession | None = None
    researchers: Roles = field(default_factory=lambda: Roles([]))
    profiles: Profiles = field(default_factory=Profiles)
    delivery: Delivery = field(init=False)
    inbox: Inbox = field(init=False)
    respondents: Any = None  # bot.channels.slack.respondents.Respondents, set by register()
    inflight: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.delivery = Delivery(self.db)
        self.inbox = Inbox(self.db)

    def tracked(self, handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """Wrap a Bolt listener so shutdown can wait for it: Bolt runs listeners in tasks of
        its own after the ack, and they must finish before the database closes.

        Errors stop here, logged: every listener acks first, and an error escaping to Bolt
        replaces that ack (slack-bolt 1.30 then answers Slack 404 after three seconds, and
        Slack retries or shows the click as failed). What needs finishing is left to the
        recovery sweep."""

        @functools.wraps(handler)  # Bolt reads the argument names through __wrapped__
        async def run(**kwargs: Any) -> Any:
            task = asyncio.current_task()
            if task is not None:
                self.inflight.add(task)
            try:
                with holding_claims():
                    return await handler(**kwargs)
            except Exception:
                log.exception("Slack listener %s failed", handler.__name__)
                return None
            finally:
                if task is not None:
                    self.inflight.discard(task)

        return run

    async def drain(self, timeout: float = SHUTDOWN_GRACE) -> None:
        """Let listeners still running finish (up to ``timeout`` seconds)."""
        if self.inflight:
            await asyncio.wait(set(self.inflight), timeout=timeout)

    async def client_for(self, team_id: str | None) -> AsyncWebClient:
        """A client with the right bot token for a team (for work outside a request)."""
        if self.installation_store is None or not team_id:
            return self.client
        bot = await self.installation_store.async_find_bot(enterprise_id=None, team_id=team_id)
        if bot is None:
            return self.client
        base = self.client  # everything but the token, as make_client set it up
        return AsyncWebClient(
            token=bot.bot_token,
            base_url=base.base_url,
            session=base.session,
            timeout=base.timeout,
            logger=base.logger,
            retry_handlers=list(base.retry_handlers),
        )


SLACK = web.AppKey("slack", SlackRuntime)


def check_settings(settings: Settings) -> None:
    """Fail at start-up, with the fix, rather than at the first event."""
    http_mode = not settings.slack_app_token
    if http_mode and not settings.slack_signing_secret:
        raise ConfigError(
            "Slack in HTTP mode needs SLACK_SIGNING_SECRET (or set SLACK_APP_TOKEN for Socket Mode)"
        )
    if settings.slack_client_id and not settings.slack_client_secret:
        raise ConfigError(
            "SLACK_CLIENT_ID is set but SLACK_CLIENT_SECRET is not: both are needed for OAuth installs"
        )
    if settings.slack_bot_token and settings.slack_client_id:
        # Bolt ignores the token once OAuth is on: the workspace it belongs to would go quiet
        raise ConfigError(
            "SLACK_BOT_TOKEN and SLACK_CLIENT_ID are both set: choose one. With OAuth each "
            "workspace uses the token of its own install (unset SLACK_BOT_TOKEN and install "
            "the app through /slack/install, the workspace you had included)"
        )
    if not settings.slack_bot_token and not settings.slack_client_id:
        raise ConfigError(
            "Slack needs SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID/SLACK_CLIENT_SECRET (OAuth)"
        )
    if settings.slack_app_token and not settings.slack_app_token.startswith("xapp-"):
        raise ConfigError(
            "SLACK_APP_TOKEN must be an app-level token (xapp-…) with connections:write"
        )


RETRY_BACKOFF_BOUND = 4.0  # seconds: slack_sdk's backoff for the few 5xx/connection retries


class BoundedRateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """Waits out a 429's ``Retry-After`` as slack_sdk's handler does, unless the wait is over
    ``MAX_RETRY_WAIT`` or would outlast the claims this task holds (``delivery.holding_claims``):
    the recovery sweep would take them over and post while this task still meant to. Such a
    call fails now; the sweep posts once the claim is stale, after checking the DM's
    history."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        waits = [v for k, v in response.headers.items() if k.lower() == "retry-after"]
        try:
            wait = int(waits[0][0]) if waits else 1
        except (TypeError, ValueError, IndexError):
            wait = 1
        return wait <= MAX_RETRY_WAIT.total_seconds() and in_time(wait)


def in_time(wait: float) -> bool:
    """Whether a retry after ``wait`` seconds still starts before this task's claims are due
    (``delivery.holding_claims``); a call started by then ends, at the client's timeout,
    within ``CLAIM_MARGIN`` — before the sweep may take the claims over."""
    left = seconds_left()
    return left is None or wait + 1 < left


class BoundedServerErrorRetry(AsyncServerErrorRetryHandler):
    """Backs off on 5xx as slack_sdk does, but only while the claims held last (above)."""

    async def _can_retry_async(self, **kwargs: Any) -> bool:
        return await super()._can_retry_async(**kwargs) and in_time(RETRY_BACKOFF_BOUND)


class BoundedConnectionRetry(AsyncConnectionErrorRetryHandler):
    """Retries a lost connection as slack_sdk does, but only while the claims held last."""

    async def _can_retry_async(self, **kwargs: Any) -> bool:
        return await super()._can_retry_async(**kwargs) and in_time(RETRY_BACKOFF_BOUND)


def quiet(logger: logging.Logger) -> logging.Logger:
    """slack_sdk decides whether to log each request and response body by the logger's own
    level, which is 0 (below DEBUG) until someone sets it: it then formats the whole payload
    for a debug line nobody sees, on every call (an eighth of a Web API call's CPU in
    ``bench/slack_actions.py``). A level set on purpose (to DEBUG, to see the bodies) is kept."""
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return logger


def make_client(
    settings: Settings, session: aiohttp.ClientSession | None, *, token: str | None = None
) -> AsyncWebClient:
    """The Web API client: ``SLACK_API_URL`` as base URL, 429/5xx/connection retries on."""
    kwargs: dict[str, object] = {}
    if settings.slack_api_url:
        base = settings.slack_api_url
        kwargs["base_url"] = base if base.endswith("/") else base + "/"
    client = AsyncWebClient(
        token=token, session=session, timeout=15, logger=quiet(WEB_API_LOG), **kwargs
    )  # type: ignore[arg-type]
    client.retry_handlers.extend(
        [
            BoundedRateLimitRetry(max_retry_count=3),
            BoundedServerErrorRetry(max_retry_count=2),
        ]
    )
    client.retry_handlers[:] = [  # slack_sdk's default one, bounded like the others
        BoundedConnectionRetry(max_retry_count=1)
        if type(h) is AsyncConnectionErrorRetryHandler
        else h
        for h in client.retry_handlers
    ]
    if not any(isinstance(h, AsyncConnectionErrorRetryHandler) for h in client.retry_handlers):
        client.retry_handlers.append(BoundedConnectionRetry(max_retry_count=1))
    return client


class _NotAboutTheEnvToken(logging.Filter):
    """Bolt reads ``SLACK_BOT_TOKEN`` from the environment on its own and then warns that
    the client Parley gives it (which carries that very token) wins: true, and no news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


BOLT_LOG = logging.getLogger("parley.slack.bolt")
BOLT_LOG.addFilter(_NotAboutTheEnvToken())


def build_bolt(
    settings: Settings, db: Database, client: AsyncWebClient
) -> tuple[AsyncApp, AsyncInstallationStore | None]:
    """One workspace with a bot token, or many with OAuth installs kept in Parley's database."""
    common: dict[str, object] = {
        "name": "parley",
        "client": client,
        "signing_secret": settings.slack_signing_secret or None,
        "request_verification_enabled": bool(settings.slack_signing_secret),
        "logger": BOLT_LOG,
    }
    if settings.slack_client_id:
        store = AsyncSQLAlchemyInstallationStore(
            client_id=settings.slack_client_id, engine=db.engine
        )
        redirect = (
            f"{settings.public_url.rstrip('/')}{REDIRECT_PATH}" if settings.public_url else None
        )
        oauth = AsyncOAuthSettings(
            client_id=settings.slack_client_id,
            client_secret=settings.slack_client_secret,
            scopes=list(BOT_SCOPES),
            redirect_uri=redirect,
            install_path=INSTALL_PATH,
            redirect_uri_path=REDIRECT_PATH,
            installation_store=store,
            installation_store_bot_only=True,
            state_store=AsyncSQLAlchemyOAuthStateStore(expiration_seconds=600, engine=db.engine),
        )
        return AsyncApp(
            oauth_settings=oauth,
            installation_store=store,
            installation_store_bot_only=True,
            **common,
        ), store  # type: ignore[arg-type]
    return AsyncApp(**common), None  # the client carries the bot token  # type: ignore[arg-type]


# --- routes -------------------------------------------------------------------------------------


async def events(request: web.Request) -> web.Response:
    """``POST /slack/events``: events, interactivity and slash commands (Bolt verifies)."""
    runtime = request.app.get(SLACK)
    if runtime is None:
        raise web.HTTPServiceUnavailable(text="Slack is starting")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    if runtime.settings.slack_signing_secret and not well_formed_signature(request.headers):
        return web.json_response({"error": "invalid request"}, status=401)  # as Bolt says it
    bolt_request = await to_bolt_request(request)
    bolt_response = await runtime.bolt.async_dispatch(bolt_request)
    return await to_aiohttp_response(bolt_response)


_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def well_formed_signature(headers: Mapping[str, str]) -> bool:
    """Whether the signature headers can be checked at all: slack_sdk's verifier raises (a
    500 and a traceback in the log, for anyone who sends one) on a timestamp that is not an
    integer or a signature that is not ASCII."""
    signature = headers.get("X-Slack-Signature", "")
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    return bool(_SIGNATURE.fullmatch(signature) and _TIMESTAMP.fullmatch(timestamp))


async def oauth(request: web.Request) -> web.Response:
    """``GET /slack/install`` and ``/slack/oauth_redirect``: Bolt's OAuth flow."""
    runtime = request.app.get(SLACK)
    flow = runtime.bolt.oauth_flow if runtime is not None else None
    if flow is None:
        raise web.HTTPNotFound()
    bolt_request = await to_bolt_request(request)
    if request.path == flow.install_path:
        return await to_aiohttp_response(await flow.handle_installation(bolt_request))
    return await to_aiohttp_response(await flow.handle_callback(bolt_request))


# --- lifecycle ----------------------------------------------------------------------------------


TOKEN_REFUSED = frozenset(
    {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"}
)


async def check_token(client: AsyncWebClient) -> bool:
    """Say at start-up, once and plainly, when Slack refuses ``SLACK_BOT_TOKEN`` — else every
    event logs Bolt's authorization error and people read "reinstall this app". Not fatal:
    Slack may be out of reach for a moment, and the web chat works without it."""
    try:
        response = await client.auth_test()
    except SlackApiError as err:
        error = slack_error(err)
        if error in TOKEN_REFUSED:
            log.error(
                "Slack refused SLACK_BOT_TOKEN (%s): copy the Bot User OAuth Token (xoxb-…) "
                "from your app's OAuth & Permissions page, or reinstall the app, and restart",
                error,
            )
            return False
        log.warning("Slack: could not check SLACK_BOT_TOKEN: %s", error or err)
        return False
    except (aiohttp.ClientError, TimeoutError) as err:
        log.warning("Slack: could not reach Slack to check SLACK_BOT_TOKEN: %r", err)
        return False
    except Exception as err:  # e.g. SLACK_API_URL answering something that is not Slack
        log.warning("Slack: could not check SLACK_BOT_TOKEN (is SLACK_API_URL right?): %r", err)
        return False
    who = response.get("user") or response.get("user_id")
    log.info("Slack: signed in as %s in %s", who, response.get("team") or response.get("team_id"))
    return True


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Create the Slack side at start-up (after the database) and close it at shutdown."""
    from bot.app import CATALOG, DATABASE, SETTINGS, SURVEYS
    from bot.channels.slack import commands, respondents
    from bot.channels.slack.recovery import recover_forever

    settings = app[SETTINGS]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    client = make_client(settings, session, token=settings.slack_bot_token or None)
    bolt, store = build_bolt(settings, app[DATABASE], client)
    runtime = SlackRuntime(
        settings,
        app[SURVEYS],
        app[CATALOG],
        app[DATABASE],
        bolt,
        client,
        store,
        session,
        researchers=Roles(settings.researchers),
    )
    respondents.register(runtime)
    commands.register(runtime)
    app[SLACK] = runtime
    socket = None
    sweeper = asyncio.create_task(
        recover_forever(runtime, every=RECOVERY_EVERY, after=RECOVER_AFTER)
    )
    checked = asyncio.create_task(check_token(client)) if settings.slack_bot_token else None
    if not settings.researchers:
        log.info("Slack: nobody may use /survey yet (set PARLEY_RESEARCHERS to Slack user ids)")
    try:
        if settings.slack_app_token:
            from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

            socket = AsyncSocketModeHandler(
                bolt, settings.slack_app_token, web_client=client, ping_interval=10
            )
            await socket.connect_async()
            log.info("Slack: connected in Socket Mode")
        else:
            log.info("Slack: receiving events at %s (HTTP mode)", EVENTS_PATH)
        yield
    finally:
        await runtime.drain()
        for task in (sweeper, checked):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):  # shut down anyway
                    await task
        if socket is not None:
            with contextlib.suppress(Exception):
                await socket.close_async()
        await session.close()

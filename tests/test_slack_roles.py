"""Who counts as a researcher: user ids and @usergroup handles, optionally per workspace.

With OAuth installs anyone's workspace can install the app and create its own ``@research``
group, so a handle must say which workspace it means. Runs the real slack_sdk client against
the fake Slack (its ``@research`` group has the members given below)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from slack_fake import FakeSlack
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.slack.app import make_client
from bot.channels.slack.permissions import Roles
from bot.config import load_settings
from bot.errors import ConfigError

Slack = tuple[FakeSlack, AsyncWebClient]


@pytest.fixture
async def slack(aiohttp_server: Any) -> AsyncIterator[Slack]:
    fake = FakeSlack(group_members=["U_GROUP"])
    server: TestServer = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        settings = load_settings(slack_api_url=fake.base_url + "/api/")
        yield fake, make_client(settings, session, token="xoxb-test")


async def test_a_handle_scoped_to_a_workspace_counts_only_there(slack: Slack) -> None:
    fake, client = slack
    roles = Roles(["T1:@research"])
    assert await roles.allows(client, "T1", "U_GROUP")
    assert not await roles.allows(client, "T2", "U_GROUP")  # T2's own @research: not ours
    assert not await roles.allows(client, None, "U_GROUP")
    assert len(fake.calls_to("usergroups.list")) == 1  # T2 was not even asked


async def test_a_failed_group_lookup_is_no_and_is_not_repeated_at_once(
    slack: Slack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every App Home asks: on a free workspace (no user groups) or while Slack rate-limits,
    each respondent's Home must not wait on the lookup or repeat it."""
    fake, client = slack
    fake.fail("usergroups.list", error="plan_upgrade_required", times=3)
    roles = Roles(["@research"])
    for _ in range(3):
        assert not await roles.allows(client, "T1", "U_GROUP")
    assert len(fake.calls_to("usergroups.list")) == 1
    monkeypatch.setattr(time, "monotonic", lambda: 10**9)  # the failure is forgotten
    fake.failures.clear()
    assert await roles.allows(client, "T1", "U_GROUP")

    waited = Roles(["@research"])
    monkeypatch.undo()
    monkeypatch.setattr("bot.channels.slack.permissions.LOOKUP_TIMEOUT", 0.2)
    fake.fail("usergroups.list", status=429, retry_after=20)  # the client would wait 20 s
    calls = len(fake.calls_to("usergroups.list"))
    # given up before the wait was over: no second try (which would have said yes)
    assert not await waited.allows(client, "T1", "U_GROUP")
    assert len(fake.calls_to("usergroups.list")) == calls + 1


async def test_user_ids_bare_or_scoped(slack: Slack) -> None:
    _fake, client = slack
    roles = Roles(["U_ANY", "T1:U_ONE"])
    assert await roles.allows(client, "T9", "U_ANY")
    assert await roles.allows(client, "T1", "U_ONE")
    assert not await roles.allows(client, "T2", "U_ONE")
    assert not await roles.allows(client, "T1", "U_GROUP")  # no handles configured


async def test_a_bare_handle_counts_in_the_one_workspace(slack: Slack) -> None:
    _fake, client = slack
    roles = Roles(["@Research"])
    assert await roles.allows(client, "T1", "U_GROUP")
    assert not await roles.allows(client, "T1", "U_OTHER")


def test_oauth_installs_refuse_entries_that_do_not_say_whose() -> None:
    """Any workspace may install the app; Slack keeps ids unique only within a workspace."""
    with pytest.raises(ConfigError, match=r"PARLEY_RESEARCHERS: .*T0123ABCD:@research"):
        load_settings(slack_client_id="1.2", researchers="T1:U1,@research")
    with pytest.raises(ConfigError, match=r"PARLEY_RESEARCHERS: .*user ids.*T0123ABCD:U1"):
        load_settings(slack_client_id="1.2", researchers="U1,T0123ABCD:@research")
    with pytest.raises(ConfigError, match=r"PARLEY_PMS: .*T0123ABCD:@pm"):
        load_settings(slack_client_id="1.2", pms="@pm")
    settings = load_settings(slack_client_id="1.2", researchers="T1:U1,T0123ABCD:@research")
    assert settings.researchers == ["T1:U1", "T0123ABCD:@research"]
    one = load_settings(researchers="U1,@research")  # one workspace: no need to say
    assert one.researchers == ["U1", "@research"]


def test_unreadable_role_entries_are_refused_with_the_entry_named() -> None:
    with pytest.raises(
        ConfigError, match=r"PARLEY_RESEARCHERS: 'ann smith' is not a Slack user id"
    ):
        load_settings(researchers="U1,ann smith")


def test_a_bot_token_beside_oauth_is_refused_with_the_fix() -> None:
    """Bolt ignores the token once OAuth is on: the workspace it served would go quiet."""
    from bot.channels.slack.app import check_settings

    settings = load_settings(
        slack_bot_token="xoxb-1",
        slack_signing_secret="s",
        slack_client_id="1.2",
        slack_client_secret="c",
    )
    with pytest.raises(ConfigError, match=r"SLACK_BOT_TOKEN and SLACK_CLIENT_ID are both set"):
        check_settings(settings)
    check_settings(settings.model_copy(update={"slack_bot_token": ""}))


async def test_a_rate_limit_wait_longer_than_a_claim_lives_is_not_waited_out() -> None:
    """Waits must end inside the claims' life (STALE_CLAIM), or the sweep would post what this
    task still meant to: a long Retry-After fails now and the sweep takes over."""
    from slack_sdk.http_retry.request import HttpRequest
    from slack_sdk.http_retry.response import HttpResponse
    from slack_sdk.http_retry.state import RetryState

    from bot.channels.slack.app import BoundedRateLimitRetry
    from bot.channels.slack.delivery import _claims_until, holding_claims

    retry = BoundedRateLimitRetry(max_retry_count=3)
    request = HttpRequest(method="POST", url="https://slack.com/api/chat.postMessage", headers={})

    async def can(status: int, headers: dict[str, str]) -> bool:
        response = HttpResponse(status_code=status, headers=headers)
        return await retry.can_retry_async(state=RetryState(), request=request, response=response)

    assert await can(429, {"Retry-After": "30"})
    assert not await can(429, {"retry-after": "120"})
    assert await can(429, {})  # no header: slack_sdk waits a second
    assert not await can(500, {"Retry-After": "1"})

    # work that holds claims never waits past their life: the sweep would take them over
    with holding_claims():
        assert await can(429, {"Retry-After": "30"})
        token = _claims_until.set(time.monotonic() + 20)  # e.g. after earlier waits
        assert not await can(429, {"Retry-After": "30"})
        assert await can(429, {"Retry-After": "5"})
        _claims_until.reset(token)


async def test_server_and_connection_retries_also_end_inside_the_claims_life() -> None:
    """A retry after a 5xx or a lost connection is a new call of up to the client's timeout:
    started too close to the claims' end, it could post after the sweep took them over."""
    from slack_sdk.http_retry.request import HttpRequest
    from slack_sdk.http_retry.response import HttpResponse
    from slack_sdk.http_retry.state import RetryState

    from bot.channels.slack.app import BoundedConnectionRetry, BoundedServerErrorRetry
    from bot.channels.slack.delivery import _claims_until, holding_claims

    request = HttpRequest(method="POST", url="https://slack.com/api/chat.postMessage", headers={})

    async def can() -> list[bool]:
        down = HttpResponse(status_code=503, headers={})
        server = BoundedServerErrorRetry(max_retry_count=2)
        connection = BoundedConnectionRetry(max_retry_count=1)
        return [
            await server.can_retry_async(state=RetryState(), request=request, response=down),
            await connection.can_retry_async(
                state=RetryState(), request=request, error=aiohttp.ServerDisconnectedError()
            ),
        ]

    assert await can() == [True, True]  # outside any listener: slack_sdk's own rules
    with holding_claims():
        assert await can() == [True, True]
        token = _claims_until.set(time.monotonic() + 2)  # the claims are nearly due
        assert await can() == [False, False]
        _claims_until.reset(token)


async def test_the_client_formats_no_request_bodies_nobody_logs(
    slack: Slack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """slack_sdk builds a debug line with the whole payload unless the logger's own level
    says not to; Parley's client logger says so, and a level set on purpose is kept."""
    fake, client = slack
    lines: list[str] = []
    monkeypatch.setattr(client.logger, "debug", lambda msg, *a, **k: lines.append(str(msg)))
    await client.chat_postMessage(channel="D1", text="secret answer")
    assert fake.calls_to("chat.postMessage")
    assert not any("secret answer" in line for line in lines)

    monkeypatch.setattr(client.logger, "level", logging.DEBUG)  # someone wants the bodies
    settings = load_settings(slack_api_url=fake.base_url + "/api/")
    again = make_client(settings, client.session, token="xoxb-test")
    assert again.logger.level == logging.DEBUG
    await again.chat_postMessage(channel="D1", text="secret answer")
    assert any("secret answer" in line for line in lines)

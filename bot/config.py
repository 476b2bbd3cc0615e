"""Settings from env vars (``PARLEY_*``, ``DATABASE_URL``, Slack's own names) and ``.env``.

CLI flags override these by being passed to :func:`load_settings` as keyword arguments.
Roles are "nobody" when unset: an empty ``PARLEY_RESEARCHERS`` means no one can run
researcher commands, which is the safe default.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError
from bot.flow.durations import parse_duration

CSV = Annotated[list[str], NoDecode]
# A Slack user id or @usergroup handle, optionally after a workspace id: T0123ABCD:@research
ROLE_ENTRY = re.compile(r"^(?:[A-Z][A-Z0-9_]{1,30}:)?(?:[A-Z][A-Z0-9_]{1,30}|@[\w.-]{1,80})$")
MIN_KEY_LENGTH = 16  # PARLEY_API_KEYS: the dashboard password, and acts for any user


def _csv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(v).strip() for v in value if str(v).strip()]


def _slack(name: str) -> AliasChoices:
    """Slack's own variable name, and the field name for keyword arguments."""
    return AliasChoices(name, name.lower())


DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def web_origin(scheme: str, netloc: str) -> str:
    """``scheme://host[:port]`` in lower case, without the scheme's default port: two
    spellings of one origin compare equal."""
    scheme, netloc = scheme.lower(), netloc.lower()
    default = DEFAULT_PORTS.get(scheme)
    if default and netloc.endswith(default):
        netloc = netloc[: -len(default)]
    return f"{scheme}://{netloc}"


class Settings(BaseSettings):
    # Plain fields read PARLEY_<NAME> (PARLEY_HOST, PARLEY_RATE_LIMIT, ...); the others name
    # their variables because they are shared conventions (DATABASE_URL, Slack's own names).
    model_config = SettingsConfigDict(
        env_prefix="PARLEY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    db: str = Field(default="parley.db", validation_alias=AliasChoices("DATABASE_URL", "PARLEY_DB"))
    flows: Path = Path("flows")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str = ""
    demo_flow: str = "welcome"

    web_secret: str = ""
    allowed_origins: CSV = Field(default_factory=list)
    api_keys: CSV = Field(default_factory=list)
    # flows anyone may start in the web chat; the others need a signed user (empty: all)
    web_flows: CSV = Field(default_factory=list)
    rate_limit: str = "600"
    # the frequency cap: a new conversation at most once per this many days a person (0: off)
    recontact_days: float = Field(default=7, ge=0, le=3650)
    trusted_proxies: CSV = Field(default_factory=list)

    researchers: CSV = Field(default_factory=list)
    pms: CSV = Field(default_factory=list)

    slack_bot_token: str = Field(default="", validation_alias=_slack("SLACK_BOT_TOKEN"))
    slack_signing_secret: str = Field(default="", validation_alias=_slack("SLACK_SIGNING_SECRET"))
    slack_app_token: str = Field(default="", validation_alias=_slack("SLACK_APP_TOKEN"))
    slack_client_id: str = Field(default="", validation_alias=_slack("SLACK_CLIENT_ID"))
    slack_client_secret: str = Field(default="", validation_alias=_slack("SLACK_CLIENT_SECRET"))
    slack_api_url: str = Field(default="", validation_alias=_slack("SLACK_API_URL"))
    slack_team_join: bool = False

    @field_validator(
        "allowed_origins", "api_keys", "web_flows", "researchers", "pms", mode="before"
    )
    @classmethod
    def _split(cls, value: Any) -> list[str]:
        return _csv(value)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        value = value.strip()
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(
                    f"PARLEY_PUBLIC_URL: {value!r} is not a web address; give it whole, "
                    "e.g. https://parley.example.com"
                )
        return value

    @field_validator("recontact_days", mode="before")
    @classmethod
    def _recontact(cls, value: Any) -> Any:
        # a duration as flows write them (12h, 7d, 2w) or a plain number of days
        if isinstance(value, str) and value.strip()[-1:].isalpha():
            return parse_duration(value.strip()) / 86_400
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        # A browser's Origin is exactly scheme://host[:port]: anything else would load and
        # never match, and the widget on that page would only say it cannot reach Parley.
        normal = []
        for entry in origins:
            if entry == "*":
                normal.append(entry)
                continue
            try:
                parts = urlsplit(entry)
                parts.port  # noqa: B018 - raises for a port that is no number or out of range
                why = ""
            except ValueError as err:
                why = f" ({err})"
            if why or not (
                parts.scheme  # http(s), and app schemes such as capacitor://localhost
                and parts.netloc
                and "@" not in parts.netloc
                and parts.path in ("", "/")
                and not (parts.query or parts.fragment)
            ):
                raise ValueError(
                    f"PARLEY_ALLOWED_ORIGINS: {entry!r} is not an origin{why}; write "
                    "scheme://host[:port] and nothing after it, e.g. https://www.example.com"
                )
            normal.append(web_origin(parts.scheme, parts.netloc))
        return normal

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for n, key in enumerate(keys, 1):
            if len(key) < MIN_KEY_LENGTH:
                raise ValueError(
                    f"PARLEY_API_KEYS: key {n} is {len(key)} characters; a key opens everyone's "
                    f"answers, so use at least {MIN_KEY_LENGTH} (e.g. the output of python -c "
                    "'import secrets; print(secrets.token_urlsafe(24))')"
                )
        return keys

    @field_validator("researchers", "pms")
    @classmethod
    def _roles(cls, entries: list[str], info: Any) -> list[str]:
        name = f"PARLEY_{info.field_name.upper()}"
        for entry in entries:
            if not ROLE_ENTRY.match(entry):
                raise ValueError(
                    f"{name}: {entry!r} is not a Slack user id (U0123ABCD), a user group handle "
                    "(@research) or either one after a workspace id (T0123ABCD:@research)"
                )
        return entries

    @model_validator(mode="after")
    def _roles_per_workspace(self) -> Settings:
        # With OAuth installs, any workspace can install the app and make its own @research
        # group, and Slack keeps a user id unique only within its workspace: an entry that
        # does not say whose would let strangers in.
        if self.slack_client_id:
            for name, entries in (
                ("PARLEY_RESEARCHERS", self.researchers),
                ("PARLEY_PMS", self.pms),
            ):
                for entry in entries:
                    if ":" not in entry:
                        what = "user groups" if entry.startswith("@") else "user ids"
                        raise ValueError(
                            f"{name}: with OAuth installs (SLACK_CLIENT_ID) every workspace has "
                            f"its own {what}; say whose: T0123ABCD:{entry}"
                        )
        return self

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> list[str]:
        proxies = _csv(value)
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"PARLEY_TRUSTED_PROXIES: {proxy!r} is not an IP address or network "
                    "(e.g. 127.0.0.1 or 10.0.0.0/8)"
                ) from None
        return proxies

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        value = value.strip().lower()
        if value != "off" and not (value.isdigit() and int(value) > 0):
            raise ValueError(
                "PARLEY_RATE_LIMIT is requests per client per minute (a whole number) or 'off'"
            )
        return value

    @property
    def rate_limit_per_minute(self) -> int | None:
        return None if self.rate_limit == "off" else int(self.rate_limit)

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token or self.slack_app_token or self.slack_client_id)


def load_settings(**overrides: Any) -> Settings:
    """Env vars and .env, with CLI flags (non-None keyword arguments) taking precedence."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as err:
        problems = "; ".join(_problem(e["loc"], e["msg"]) for e in err.errors())
        raise ConfigError(f"bad setting: {problems}") from err


def _setting_name(loc: tuple[Any, ...]) -> str:
    """The env var a user sets, not the field it fills (PARLEY_RECONTACT_DAYS, not
    recontact_days; SLACK_BOT_TOKEN as Slack names it)."""
    name = str(loc[0]) if loc else "setting"
    if name.isupper():
        return name  # given by its env name already
    field = Settings.model_fields.get(name)
    alias = field.validation_alias if field is not None else None
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"PARLEY_{name.upper()}"


def _problem(loc: tuple[Any, ...], message: str) -> str:
    message = message.removeprefix("Value error, ")
    name = _setting_name(loc)
    return message if message.startswith(name) else f"{name}: {message}"

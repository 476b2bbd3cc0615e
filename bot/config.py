"""Settings from env vars (``PARLEY_*``, ``DATABASE_URL``, Slack's own names) and ``.env``.

CLI flags override these by being passed to :func:`load_settings` as keyword arguments.
Roles are "nobody" when unset: an empty ``PARLEY_RESEARCHERS`` means no one can run
researcher commands, which is the safe default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError

CSV = Annotated[list[str], NoDecode]


def _csv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(v).strip() for v in value if str(v).strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    db: str = Field(
        default="parley.db", validation_alias=AliasChoices("DATABASE_URL", "PARLEY_DB", "db")
    )
    flows: Path = Field(
        default=Path("flows"), validation_alias=AliasChoices("PARLEY_FLOWS", "flows")
    )
    host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("PARLEY_HOST", "host"))
    port: int = Field(
        default=8080, ge=0, le=65535, validation_alias=AliasChoices("PARLEY_PORT", "port")
    )
    public_url: str = Field(
        default="", validation_alias=AliasChoices("PARLEY_PUBLIC_URL", "public_url")
    )
    demo_flow: str = Field(
        default="welcome", validation_alias=AliasChoices("PARLEY_DEMO_FLOW", "demo_flow")
    )

    web_secret: str = Field(
        default="", validation_alias=AliasChoices("PARLEY_WEB_SECRET", "web_secret")
    )
    allowed_origins: CSV = Field(
        default_factory=list,
        validation_alias=AliasChoices("PARLEY_ALLOWED_ORIGINS", "allowed_origins"),
    )
    api_keys: CSV = Field(
        default_factory=list, validation_alias=AliasChoices("PARLEY_API_KEYS", "api_keys")
    )
    rate_limit: str = Field(
        default="600", validation_alias=AliasChoices("PARLEY_RATE_LIMIT", "rate_limit")
    )

    researchers: CSV = Field(
        default_factory=list, validation_alias=AliasChoices("PARLEY_RESEARCHERS", "researchers")
    )
    pms: CSV = Field(default_factory=list, validation_alias=AliasChoices("PARLEY_PMS", "pms"))

    slack_bot_token: str = Field(
        default="", validation_alias=AliasChoices("SLACK_BOT_TOKEN", "slack_bot_token")
    )
    slack_signing_secret: str = Field(
        default="", validation_alias=AliasChoices("SLACK_SIGNING_SECRET", "slack_signing_secret")
    )
    slack_app_token: str = Field(
        default="", validation_alias=AliasChoices("SLACK_APP_TOKEN", "slack_app_token")
    )
    slack_client_id: str = Field(
        default="", validation_alias=AliasChoices("SLACK_CLIENT_ID", "slack_client_id")
    )
    slack_client_secret: str = Field(
        default="", validation_alias=AliasChoices("SLACK_CLIENT_SECRET", "slack_client_secret")
    )
    slack_api_url: str = Field(
        default="", validation_alias=AliasChoices("SLACK_API_URL", "slack_api_url")
    )
    slack_team_join: bool = Field(
        default=False, validation_alias=AliasChoices("PARLEY_SLACK_TEAM_JOIN", "slack_team_join")
    )

    @field_validator("allowed_origins", "api_keys", "researchers", "pms", mode="before")
    @classmethod
    def _split(cls, value: Any) -> list[str]:
        return _csv(value)

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
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"bad setting: {problems}") from err

"""Alembic environment: Parley passes its own connection in (see bot/store/database.py)."""

from alembic import context
from sqlmodel import SQLModel

import bot.store.models
import bot.store.slack  # noqa: F401 - the Slack channel's tables (incl. slack_sdk's installation store)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `parley db upgrade`, which passes a connection")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

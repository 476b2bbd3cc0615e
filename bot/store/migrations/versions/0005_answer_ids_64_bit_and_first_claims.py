"""answer.id 64-bit on PostgreSQL; slack_message.first_claimed_at

An id given in insertion order ranked an anonymous answer beside the respondent's other
rows; a random one (negative, so it never meets the sequence) does not. SQLite's INTEGER
PRIMARY KEY is already 64-bit: nothing changes there.

A question's claim is retaken on every recovery pass, so ``claimed_at`` cannot say how long
it has been failing: ``first_claimed_at`` does (null for rows from before: they count from
``claimed_at``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("answer", "id", type_=sa.BigInteger(), existing_type=sa.Integer())
    with op.batch_alter_table("slack_message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("first_claimed_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("slack_message", schema=None) as batch_op:
        batch_op.drop_column("first_claimed_at")
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("answer", "id", type_=sa.Integer(), existing_type=sa.BigInteger())

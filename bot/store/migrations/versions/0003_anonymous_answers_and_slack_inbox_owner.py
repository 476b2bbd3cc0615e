"""anonymous answers and slack inbox owner

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 11:19:08.225715
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("answer", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("response_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
        batch_op.alter_column("conversation_id", existing_type=sa.VARCHAR(length=32), nullable=True)
        batch_op.create_unique_constraint("uq_answer_response_step", ["response_id", "step_id"])

    with op.batch_alter_table("slack_inbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("respondent_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_slack_inbox_respondent_key"), ["respondent_key"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("slack_inbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slack_inbox_respondent_key"))
        batch_op.drop_column("respondent_key")

    with op.batch_alter_table("answer", schema=None) as batch_op:
        batch_op.drop_constraint("uq_answer_response_step", type_="unique")
        batch_op.alter_column(
            "conversation_id", existing_type=sa.VARCHAR(length=32), nullable=False
        )
        batch_op.drop_column("response_id")

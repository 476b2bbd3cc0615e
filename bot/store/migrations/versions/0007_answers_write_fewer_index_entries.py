"""drop ix_conversation_status; uq_answer_response_step only over anonymous answers

Every index is written by every answer, and these two served nothing: no query picks
conversations by status alone (a flow's counts by status go through ix_conversation_flow_id),
and only anonymous answers have a ``response_id``, so every other answer added a
(NULL, step) entry to a unique index where it can never conflict. strace on ``parley serve``
under ``bench/web_api.py``: a quarter of the pages its commits wrote were
ix_conversation_status's.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 00:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANONYMOUS = "response_id IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversation_status"))
    with op.batch_alter_table("answer", schema=None) as batch_op:
        batch_op.drop_constraint("uq_answer_response_step", type_="unique")
    op.create_index(
        "uq_answer_response_step",
        "answer",
        ["response_id", "step_id"],
        unique=True,
        sqlite_where=sa.text(ANONYMOUS),
        postgresql_where=sa.text(ANONYMOUS),
    )


def downgrade() -> None:
    op.drop_index("uq_answer_response_step", table_name="answer")
    with op.batch_alter_table("answer", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_answer_response_step", ["response_id", "step_id"])
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_conversation_status"), ["status"], unique=False)

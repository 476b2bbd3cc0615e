"""drop ix_answer_conversation_id: uq_answer_conversation_step starts with the same column

Every answer wrote one more index entry than any query needs; lookups by conversation use
the unique (conversation_id, step_id) index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 13:35:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("answer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_answer_conversation_id"))


def downgrade() -> None:
    with op.batch_alter_table("answer", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_answer_conversation_id"), ["conversation_id"], unique=False
        )

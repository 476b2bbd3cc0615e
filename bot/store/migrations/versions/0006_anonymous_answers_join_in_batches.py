"""anonymous_pending: anonymous answers wait to join ``answer`` in batches

Rows written in one transaction share its id (PostgreSQL's xmin) and neighbour each other in
the table: an anonymous answer written with the conversation's closing update could be joined
back to that conversation, and so to the person. Closing now queues the answers here; a job
moves several responses' answers together, shuffled, in a transaction of their own.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 16:20:00
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "anonymous_pending",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("response_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("flow_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("flow_version_id", sa.Integer(), nullable=False),
        sa.Column("step_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("step_type", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["flow_version_id"], ["flow_version.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("anonymous_pending", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_anonymous_pending_flow_id"), ["flow_id"], unique=False)


def downgrade() -> None:
    # answers still waiting are not lost: they join the others now, as 0005 stored them
    # (a random negative id, the day only; their queued response id is unknown elsewhere)
    bind = op.get_bind()
    common = [
        sa.column("response_id", sa.String()),
        sa.column("flow_id", sa.String()),
        sa.column("flow_version_id", sa.Integer()),
        sa.column("step_id", sa.String()),
        sa.column("step_type", sa.String()),
        sa.column("value", sa.JSON()),
    ]
    pending = sa.table("anonymous_pending", *common, sa.column("day", sa.DateTime(timezone=True)))
    answer = sa.table(
        "answer",
        sa.column("id", sa.BigInteger()),
        *[sa.column(c.name, c.type) for c in common],
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    for row in bind.execute(sa.select(pending)).mappings().all():
        waiting = dict(row)
        waiting["created_at"] = waiting.pop("day")
        bind.execute(answer.insert().values(id=-1 - secrets.randbelow(2**62), **waiting))
    with op.batch_alter_table("anonymous_pending", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_anonymous_pending_flow_id"))
    op.drop_table("anonymous_pending")

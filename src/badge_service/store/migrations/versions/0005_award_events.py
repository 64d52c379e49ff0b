"""Award events (per-org sequence) and recipient badge states.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "org_event_sequences",
        sa.Column("org_id", _ID, nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["orgs.id"],
            name=op.f("fk_org_event_sequences_org_id_orgs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_org_event_sequences")),
    )
    op.create_table(
        "award_events",
        sa.Column("org_id", _ID, nullable=False),
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_award_events_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("org_id", "sequence", name=op.f("pk_award_events")),
    )
    op.create_table(
        "recipient_badge_states",
        sa.Column("org_id", _ID, nullable=False),
        sa.Column("badge_id", _ID, nullable=False),
        sa.Column("recipient_key", sa.String(length=2100), nullable=False),
        sa.Column("recipient", _json(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("order", sa.Integer(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["badge_id"],
            ["badges.id"],
            name=op.f("fk_recipient_badge_states_badge_id_badges"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["orgs.id"],
            name=op.f("fk_recipient_badge_states_org_id_orgs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "org_id", "badge_id", "recipient_key", name=op.f("pk_recipient_badge_states")
        ),
    )
    with op.batch_alter_table("recipient_badge_states", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_recipient_badge_states_org_id_recipient_key_badge_id"),
            ["org_id", "recipient_key", "badge_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("recipient_badge_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recipient_badge_states_org_id_recipient_key_badge_id"))
    op.drop_table("recipient_badge_states")
    op.drop_table("award_events")
    op.drop_table("org_event_sequences")

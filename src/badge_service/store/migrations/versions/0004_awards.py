"""Awards and award counters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _c_string(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length=length).with_variant(
        sa.String(length=length, collation="C"), "postgresql"
    )


def _sort_text() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "awards",
        sa.Column("id", _c_string(24), nullable=False),
        sa.Column("org_id", _ID, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("badge_id", _ID, nullable=True),
        sa.Column("badge_template_id", _c_string(36), nullable=True),
        sa.Column("badge_class_id", sa.String(length=24), nullable=True),
        sa.Column("recipient_key", _sort_text(), nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("narrative", sa.Text(), nullable=False),
        sa.Column("evidence", _json(), nullable=False),
        sa.Column("custom_data", _json(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("revocation_reason", sa.Text(), nullable=False),
        sa.Column("claim_code", sa.String(length=16), nullable=False),
        sa.Column("salt", sa.String(length=16), nullable=False),
        sa.Column("dedupe_key", sa.Text(), nullable=True),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "(CASE WHEN badge_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN badge_template_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN badge_class_id IS NULL THEN 0 ELSE 1 END) = 1",
            name=op.f("ck_awards_one_definition"),
        ),
        sa.ForeignKeyConstraint(
            ["badge_class_id"],
            ["badgr_badge_classes.id"],
            name=op.f("fk_awards_badge_class_id_badgr_badge_classes"),
        ),
        sa.ForeignKeyConstraint(
            ["badge_id"], ["badges.id"], name=op.f("fk_awards_badge_id_badges")
        ),
        sa.ForeignKeyConstraint(
            ["badge_template_id"],
            ["badge_templates.id"],
            name=op.f("fk_awards_badge_template_id_badge_templates"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_awards_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_awards")),
        sa.UniqueConstraint("org_id", "dedupe_key", name=op.f("uq_awards_org_id_dedupe_key")),
    )
    with op.batch_alter_table("awards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_awards_badge_id_id"), ["badge_id", "id"])
        batch_op.create_index(
            batch_op.f("ix_awards_badge_template_id_id"), ["badge_template_id", "id"]
        )
        batch_op.create_index(batch_op.f("ix_awards_badge_class_id_id"), ["badge_class_id", "id"])
        batch_op.create_index(
            batch_op.f("ix_awards_org_id_recipient_key_id"), ["org_id", "recipient_key", "id"]
        )
    op.create_table(
        "award_counters",
        sa.Column("badge_id", _ID, nullable=False),
        sa.Column("recipient_key", _sort_text(), nullable=False),
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("org_id", _ID, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("cap", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "count >= 0 AND count <= cap", name=op.f("ck_award_counters_count_within_cap")
        ),
        sa.ForeignKeyConstraint(
            ["badge_id"],
            ["badges.id"],
            name=op.f("fk_award_counters_badge_id_badges"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_award_counters_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "badge_id", "recipient_key", "period", name=op.f("pk_award_counters")
        ),
    )


def downgrade() -> None:
    op.drop_table("award_counters")
    with op.batch_alter_table("awards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_awards_org_id_recipient_key_id"))
        batch_op.drop_index(batch_op.f("ix_awards_badge_class_id_id"))
        batch_op.drop_index(batch_op.f("ix_awards_badge_template_id_id"))
        batch_op.drop_index(batch_op.f("ix_awards_badge_id_id"))
    op.drop_table("awards")

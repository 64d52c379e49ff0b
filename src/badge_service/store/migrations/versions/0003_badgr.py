"""Badgr issuers, badge classes and claim codes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "badgr_issuers",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("org_id", _ID, nullable=False),
        sa.Column("entity_id", sa.String(length=22), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("badgr_domain", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("source_url", sa.String(length=2048), nullable=False),
        sa.Column("image_path", sa.String(length=1024), nullable=False),
        sa.Column("original_json", sa.Text(), nullable=False),
        sa.Column("extensions", _json(), nullable=False),
        sa.Column("staff", _json(), nullable=False),
        sa.Column("skill_linking", _json(), nullable=False),
        sa.Column("preferences", _json(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_badgr_issuers_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_badgr_issuers")),
        sa.UniqueConstraint("entity_id", name=op.f("uq_badgr_issuers_entity_id")),
    )
    with op.batch_alter_table("badgr_issuers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_badgr_issuers_org_id_id"), ["org_id", "id"], unique=False
        )

    op.create_table(
        "badgr_badge_classes",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("org_id", _ID, nullable=False),
        sa.Column("issuer_id", sa.String(length=24), nullable=False),
        sa.Column("entity_id", sa.String(length=22), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("achievement_type", sa.String(length=255), nullable=False),
        sa.Column("criteria_url", sa.String(length=2048), nullable=False),
        sa.Column("criteria_narrative", sa.Text(), nullable=False),
        sa.Column("alignments", _json(), nullable=False),
        sa.Column("tags", _json(), nullable=False),
        sa.Column("expires_amount", sa.Integer(), nullable=True),
        sa.Column("expires_duration", sa.String(length=16), nullable=True),
        sa.Column("extensions", _json(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("source_url", sa.String(length=2048), nullable=False),
        sa.Column("image_path", sa.String(length=1024), nullable=False),
        sa.Column("original_json", sa.Text(), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("archived_date", sa.BigInteger(), nullable=True),
        sa.Column("archival_note", sa.Text(), nullable=False),
        sa.Column("ob3_properties", _json(), nullable=False),
        sa.Column("preferences", _json(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["issuer_id"],
            ["badgr_issuers.id"],
            name=op.f("fk_badgr_badge_classes_issuer_id_badgr_issuers"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["orgs.id"],
            name=op.f("fk_badgr_badge_classes_org_id_orgs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_badgr_badge_classes")),
        sa.UniqueConstraint("entity_id", name=op.f("uq_badgr_badge_classes_entity_id")),
    )
    with op.batch_alter_table("badgr_badge_classes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_badgr_badge_classes_org_id_id"), ["org_id", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_badgr_badge_classes_org_id_issuer_id_id"),
            ["org_id", "issuer_id", "id"],
            unique=False,
        )

    op.create_table(
        "badgr_claim_codes",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("org_id", _ID, nullable=False),
        sa.Column("badge_class_id", sa.String(length=24), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("use_limit", sa.Integer(), nullable=False),
        sa.Column("uses_remaining", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "uses_remaining >= 0 AND uses_remaining <= use_limit",
            name=op.f("ck_badgr_claim_codes_uses_remaining_range"),
        ),
        sa.ForeignKeyConstraint(
            ["badge_class_id"],
            ["badgr_badge_classes.id"],
            name=op.f("fk_badgr_claim_codes_badge_class_id_badgr_badge_classes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["orgs.id"],
            name=op.f("fk_badgr_claim_codes_org_id_orgs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_badgr_claim_codes")),
        sa.UniqueConstraint(
            "badge_class_id", "code", name=op.f("uq_badgr_claim_codes_badge_class_id_code")
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("badgr_claim_codes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_badgr_claim_codes_badge_class_id_id"),
            ["badge_class_id", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("badgr_claim_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_badgr_claim_codes_badge_class_id_id"))
    op.drop_table("badgr_claim_codes")
    with op.batch_alter_table("badgr_badge_classes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_badgr_badge_classes_org_id_issuer_id_id"))
        batch_op.drop_index(batch_op.f("ix_badgr_badge_classes_org_id_id"))
    op.drop_table("badgr_badge_classes")
    with op.batch_alter_table("badgr_issuers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_badgr_issuers_org_id_id"))
    op.drop_table("badgr_issuers")

"""Imported Badgr objects keep their former openBadgeId as a lookup alias.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

``badge-service import badgr`` keeps an issuer's or badge class's ids (its 24-hex id and
entityId) and its openBadgeId at the vendor (``https://api.badgr.io/public/issuers/...``),
which references stored elsewhere use: that URL names the object by base64 and by ``ref``
beside its openBadgeId under this service's base URL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "badgr_open_badge_aliases",
        sa.Column("url_sha256", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.String(length=24), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["orgs.id"],
            name=op.f("fk_badgr_open_badge_aliases_org_id_orgs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("url_sha256", name=op.f("pk_badgr_open_badge_aliases")),
    )
    op.create_index(
        op.f("ix_badgr_open_badge_aliases_org_id_kind_target_id"),
        "badgr_open_badge_aliases",
        ["org_id", "kind", "target_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_badgr_open_badge_aliases_org_id_kind_target_id"),
        table_name="badgr_open_badge_aliases",
    )
    op.drop_table("badgr_open_badge_aliases")

"""Per-org badge counts, backfilled from the badges already stored.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Runs in the migration's transaction. It is exact when nothing writes badges while it runs
# and no server from before 0006 writes afterwards (those do not keep the count), so stop
# older servers before migrating (at start-up or with `badge-service migrate`).
BACKFILL = (
    "INSERT INTO org_badge_counts (org_id, badges) "
    "SELECT org_id, count(*) FROM badges GROUP BY org_id"
)


def upgrade() -> None:
    op.create_table(
        "org_badge_counts",
        sa.Column("org_id", _ID, nullable=False),
        sa.Column("badges", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("badges >= 0", name=op.f("ck_org_badge_counts_badges_not_negative")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["orgs.id"],
            name=op.f("fk_org_badge_counts_org_id_orgs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_org_badge_counts")),
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_table("org_badge_counts")

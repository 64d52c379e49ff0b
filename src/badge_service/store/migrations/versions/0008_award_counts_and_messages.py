"""Per-definition award counts, backfilled from the awards already stored, and each award's
serialized badges.v1.Award reply kept beside its columns.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23

ListAwards of a definition reads its total from one award_counts row instead of counting the
definition's awards (a count grows with them), and sends each award's stored bytes plus the
fields that change (state, revocation) instead of decoding JSON columns and building a message
per award per call. Awards written before this revision keep NULL in ``message``, which reads
treat as "build it from the columns". A later change to what an Award message holds must set
the column back to NULL (or rebuild it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Run in the migration's transaction. They are exact when nothing writes awards while they run
# and no server from before 0008 writes afterwards (those do not keep the counts), so stop
# older servers before migrating (at start-up or with `badge-service migrate`).
BACKFILL = [
    "INSERT INTO award_counts (org_id, kind, ref, awards) "
    "SELECT org_id, 'badge', CAST(badge_id AS VARCHAR(36)), count(*) FROM awards "
    "WHERE badge_id IS NOT NULL GROUP BY org_id, badge_id",
    "INSERT INTO award_counts (org_id, kind, ref, awards) "
    "SELECT org_id, 'template', badge_template_id, count(*) FROM awards "
    "WHERE badge_template_id IS NOT NULL GROUP BY org_id, badge_template_id",
    "INSERT INTO award_counts (org_id, kind, ref, awards) "
    "SELECT org_id, 'class', badge_class_id, count(*) FROM awards "
    "WHERE badge_class_id IS NOT NULL GROUP BY org_id, badge_class_id",
]


def upgrade() -> None:
    op.create_table(
        "award_counts",
        sa.Column("org_id", _ID, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("ref", sa.String(length=36), nullable=False),
        sa.Column("awards", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("awards >= 0", name=op.f("ck_award_counts_awards_not_negative")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_award_counts_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("org_id", "kind", "ref", name=op.f("pk_award_counts")),
    )
    for statement in BACKFILL:
        op.execute(statement)
    # A plain ADD COLUMN on both databases: no table rebuild, whatever the table's size.
    op.add_column("awards", sa.Column("message", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("awards") as batch:
        batch.drop_column("message")
    op.drop_table("award_counts")

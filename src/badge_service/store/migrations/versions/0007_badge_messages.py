"""Each badge's serialized badges.v1.Badge reply, kept beside its columns.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23

GetBadge and ListBadges send these bytes as they are, instead of decoding four JSON columns and
building a message per badge per call. Rows written before this revision keep NULL, which reads
treat as "build it from the columns"; the next update of such a badge fills it. A later change
to what a Badge message holds must set the column back to NULL (or rebuild it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN on both databases: no table rebuild, whatever the table's size.
    op.add_column("badges", sa.Column("message", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("badges") as batch:
        batch.drop_column("message")

"""Request ids: the first result of each write that carried a client's request_id, so that a
retry answers with it (AIP-155).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "request_ids",
        sa.Column("org_id", _ID, nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("request", sa.String(100), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(32), nullable=False),
        sa.Column("reply", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_request_ids_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("org_id", "request_id", name=op.f("pk_request_ids")),
    )
    op.create_index(op.f("ix_request_ids_created_at"), "request_ids", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_request_ids_created_at"), table_name="request_ids")
    op.drop_table("request_ids")

"""The API key lifecycle: expiry, last use and rotation, no part of a secret in clear, and a
counter every process polls to see key changes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

``key_prefix`` used to keep a key's first 12 characters, 8 of them secret; it now holds only
the key's non-secret head (``bsk_<id>_`` for keys with their id embedded, ``bsk_`` for keys made
before this revision, which keep working). ``api_key_epoch`` is one row whose ``epoch`` grows
with every key created, revoked or rotated, in the same transaction: each serving process
polls it and reloads its keys when it moves.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column(
            "key_prefix", existing_type=sa.String(length=12), type_=sa.String(length=32)
        )
        batch_op.add_column(sa.Column("expires_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("rotated_to", sa.BigInteger(), nullable=True))
    op.execute("UPDATE api_keys SET key_prefix = 'bsk_'")
    op.create_table(
        "api_key_epoch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key_epoch")),
    )
    op.execute("INSERT INTO api_key_epoch (id, epoch) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("api_key_epoch")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("rotated_to")
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
        batch_op.alter_column(
            "key_prefix", existing_type=sa.String(length=32), type_=sa.String(length=12)
        )

"""Credly badge templates: templates, their filter terms and the links between them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _template_id() -> sa.types.TypeEngine[str]:
    return sa.String(length=36).with_variant(sa.String(length=36, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "badge_templates",
        sa.Column("id", _template_id(), nullable=False),
        sa.Column("org_id", _ID, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column(
            "name_key", sa.Text().with_variant(sa.Text(collation="C"), "postgresql"), nullable=False
        ),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("description_key", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("vanity_slug", sa.String(length=255), nullable=False),
        sa.Column("primary_badge_template_id", _template_id(), nullable=True),
        sa.Column("badges_count", sa.BigInteger(), nullable=False),
        sa.Column("image_id", sa.String(length=36), nullable=True),
        sa.Column("state_updated_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("doc", _JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_badge_templates_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["primary_badge_template_id"],
            ["badge_templates.id"],
            name=op.f("fk_badge_templates_primary_badge_template_id_badge_templates"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_badge_templates")),
        sa.UniqueConstraint(
            "org_id", "vanity_slug", name=op.f("uq_badge_templates_org_id_vanity_slug")
        ),
    )
    for cols in (
        ["org_id", "created_at", "id"],
        ["org_id", "updated_at", "id"],
        ["org_id", "name_key", "id"],
        ["org_id", "badges_count", "id"],
        ["primary_badge_template_id"],
    ):
        op.create_index(op.f(f"ix_badge_templates_{'_'.join(cols)}"), "badge_templates", cols)

    op.create_table(
        "badge_template_terms",
        sa.Column("template_id", _template_id(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("org_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["badge_templates.id"],
            name=op.f("fk_badge_template_terms_template_id_badge_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "template_id", "kind", "value", name=op.f("pk_badge_template_terms")
        ),
    )
    op.create_index(
        op.f("ix_badge_template_terms_org_id_kind_value_template_id"),
        "badge_template_terms",
        ["org_id", "kind", "value", "template_id"],
    )

    op.create_table(
        "badge_template_links",
        sa.Column("template_id", _template_id(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target_id", _template_id(), nullable=False),
        sa.Column("org_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["badge_templates.id"],
            name=op.f("fk_badge_template_links_template_id_badge_templates"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target_id"],
            ["badge_templates.id"],
            name=op.f("fk_badge_template_links_target_id_badge_templates"),
        ),
        sa.PrimaryKeyConstraint(
            "template_id", "kind", "target_id", name=op.f("pk_badge_template_links")
        ),
    )
    op.create_index(
        op.f("ix_badge_template_links_target_id_kind"),
        "badge_template_links",
        ["target_id", "kind"],
    )
    op.create_index(
        op.f("ix_badge_template_links_org_id_kind"), "badge_template_links", ["org_id", "kind"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_badge_template_links_org_id_kind"), table_name="badge_template_links")
    op.drop_index(op.f("ix_badge_template_links_target_id_kind"), table_name="badge_template_links")
    op.drop_table("badge_template_links")
    op.drop_index(
        op.f("ix_badge_template_terms_org_id_kind_value_template_id"),
        table_name="badge_template_terms",
    )
    op.drop_table("badge_template_terms")
    for cols in (
        ["primary_badge_template_id"],
        ["org_id", "badges_count", "id"],
        ["org_id", "name_key", "id"],
        ["org_id", "updated_at", "id"],
        ["org_id", "created_at", "id"],
    ):
        op.drop_index(op.f(f"ix_badge_templates_{'_'.join(cols)}"), table_name="badge_templates")
    op.drop_table("badge_templates")

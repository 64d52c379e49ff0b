"""Tables. Times are stored as integer microseconds since the epoch (UTC): portable between
SQLite and PostgreSQL, exact, and cheap to compare in keyset and window filters."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

# Named constraints so that Alembic migrations are the same on every database.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
Id = BigInteger().with_variant(Integer, "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")
Micros = BigInteger

orgs = Table(
    "orgs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("created_at", Micros, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("role", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(12), nullable=False),
    Column("created_at", Micros, nullable=False),
    Column("revoked_at", Micros, nullable=True),
)

org_meta = Table(
    "org_meta",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False, unique=True),
    Column("tags", Json, nullable=False),
    Column("created_on", Micros, nullable=False),
    Column("created_by", BigInteger, nullable=False),
    Column("last_updated_on", Micros, nullable=False),
    Column("last_updated_by", BigInteger, nullable=False),
)

custom_fields = Table(
    "custom_fields",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("data_type", String(16), nullable=False),
    Column("is_mandatory", Boolean, nullable=False),
    Column("default_value", Text, nullable=True),
    Column("is_active", Boolean, nullable=False),
    Column("created_on", Micros, nullable=False),
    Column("created_by", BigInteger, nullable=False),
    Column("last_updated_on", Micros, nullable=False),
    Column("last_updated_by", BigInteger, nullable=False),
    # Capillary 740: names are unique per org, and case sensitive (no lower()).
    UniqueConstraint("org_id", "name"),
    Index(None, "org_id", "id"),
)

badges = Table(
    "badges",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("title", String(255), nullable=False),
    Column("date_start", Micros, nullable=False),
    Column("date_end", Micros, nullable=True),
    Column("display_date_start", Micros, nullable=False),
    Column("display_date_end", Micros, nullable=True),
    Column("is_enabled", Boolean, nullable=False),
    Column("badge_states", Json, nullable=False),
    Column("freq_cap", Integer, nullable=True),
    Column("freq_period", Integer, nullable=True),
    Column("freq_max", Integer, nullable=True),
    Column("tags", Json, nullable=False),
    Column("segments", Json, nullable=False),
    Column("extra_data", Json, nullable=False),
    Column("create_time", Micros, nullable=False),
    Column("update_time", Micros, nullable=False),
    UniqueConstraint("org_id", "name"),
    # Keyset paging walks (org_id, id).
    Index(None, "org_id", "id"),
)

# The tag names of each badge, for the tag_name filter; the badge row's `tags` column stays the
# document that reads return. Written in the same transaction as the badge.
badge_tags = Table(
    "badge_tags",
    metadata,
    Column("badge_id", Id, ForeignKey("badges.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_name", String(255), primary_key=True),
    Column("org_id", Id, nullable=False),
    Index(None, "org_id", "tag_name", "badge_id"),
)

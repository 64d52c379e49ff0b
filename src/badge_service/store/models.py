"""Tables. Times are stored as integer microseconds since the epoch (UTC): portable between
SQLite and PostgreSQL, exact, and cheap to compare in keyset and window filters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

from badge_service.domain import badges as badge_rules
from badge_service.domain import custom_fields as field_rules
from badge_service.domain.badge_templates import referenced_template_gone
from badge_service.domain.errors import DomainError, NotFound

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
    # The key's non-secret head: "bsk_<id>_" (migration 0010), "bsk_" for older keys.
    Column("key_prefix", String(32), nullable=False),
    Column("created_at", Micros, nullable=False),
    Column("revoked_at", Micros, nullable=True),
    Column("expires_at", Micros, nullable=True),
    Column("last_used_at", Micros, nullable=True),
    # The key that replaced this one (keys rotate), if any.
    Column("rotated_to", BigInteger, nullable=True),
)

# One row (id 1) whose epoch grows in the transaction of every key created, revoked or rotated;
# each serving process polls it and reloads its keys when it moves (rpc/auth.py).
api_key_epoch = Table(
    "api_key_epoch",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("epoch", BigInteger, nullable=False),
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
    # The badge's serialized badges.v1.Badge without its id (reads prefix the id), written with
    # the row; NULL for rows from before migration 0007, which reads build from the columns.
    Column("message", LargeBinary, nullable=True),
    UniqueConstraint("org_id", "name"),
    # Keyset paging walks (org_id, id).
    Index(None, "org_id", "id"),
    # Without AUTOINCREMENT SQLite hands a deleted max id out again; ids are never reused.
    sqlite_autoincrement=True,
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


# --- Badgr: issuers, badge classes and claim codes (migration 0003) ---------------------------
# Rows are keyed by Badgr's 24-hex id; entity ids are unique across organisations because
# openBadgeIds built from them are public URLs. Nested documents (staff, preferences, ...) are
# JSON columns: they are read and written whole with their row.

badgr_issuers = Table(
    "badgr_issuers",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("entity_id", String(22), nullable=False, unique=True),
    Column("name", String(1024), nullable=False),
    Column("email", String(320), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("image", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("badgr_domain", String(255), nullable=False),
    Column("source", String(64), nullable=False),
    Column("source_url", String(2048), nullable=False),
    Column("image_path", String(1024), nullable=False),
    Column("original_json", Text, nullable=False),
    Column("extensions", Json, nullable=False),
    Column("staff", Json, nullable=False),
    Column("skill_linking", Json, nullable=False),
    Column("preferences", Json, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", Micros, nullable=False),
    Column("updated_at", Micros, nullable=False),
    # Keyset paging walks (org_id, id).
    Index(None, "org_id", "id"),
)

badgr_badge_classes = Table(
    "badgr_badge_classes",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    # No ON DELETE: an issuer with classes cannot be deleted by accident; the store deletes
    # classes first when the caller asks to cascade.
    Column("issuer_id", String(24), ForeignKey("badgr_issuers.id"), nullable=False),
    Column("entity_id", String(22), nullable=False, unique=True),
    Column("name", String(1024), nullable=False),
    Column("description", Text, nullable=False),
    Column("image", Text, nullable=False),
    Column("achievement_type", String(255), nullable=False),
    Column("criteria_url", String(2048), nullable=False),
    Column("criteria_narrative", Text, nullable=False),
    Column("alignments", Json, nullable=False),
    Column("tags", Json, nullable=False),
    Column("expires_amount", Integer, nullable=True),
    Column("expires_duration", String(16), nullable=True),
    Column("extensions", Json, nullable=False),
    Column("source", String(64), nullable=False),
    Column("source_url", String(2048), nullable=False),
    Column("image_path", String(1024), nullable=False),
    Column("original_json", Text, nullable=False),
    Column("archived", Boolean, nullable=False),
    Column("archived_date", Micros, nullable=True),
    Column("archival_note", Text, nullable=False),
    Column("ob3_properties", Json, nullable=False),
    Column("preferences", Json, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", Micros, nullable=False),
    Column("updated_at", Micros, nullable=False),
    Index(None, "org_id", "id"),
    Index(None, "org_id", "issuer_id", "id"),
)

# An imported issuer's or badge class's openBadgeId at its former host (Badgr's
# https://api.badgr.io/public/issuers/...), kept as a lookup alias beside the one under this
# service's base URL (migration 0011). Keyed by the SHA-256 of the URL (an index on the URL
# itself would bound its length); the target is the row's 24-hex id, found with the org and
# kind, so an alias whose object was deleted names nothing.
badgr_open_badge_aliases = Table(
    "badgr_open_badge_aliases",
    metadata,
    Column("url_sha256", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("target_id", String(24), nullable=False),
    Index(None, "org_id", "kind", "target_id"),
)

# Claim codes of a badge class. uses_remaining counts down on redemption with one atomic
# UPDATE ... SET uses_remaining = uses_remaining - 1 WHERE uses_remaining > 0; the check
# constraint keeps it within 0..use_limit whatever a writer does.
badgr_claim_codes = Table(
    "badgr_claim_codes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column(
        "badge_class_id",
        String(24),
        ForeignKey("badgr_badge_classes.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("code", String(16), nullable=False),
    Column("label", String(255), nullable=False),
    Column("use_limit", Integer, nullable=False),
    Column("uses_remaining", Integer, nullable=False),
    Column("expires_at", Micros, nullable=True),
    Column("created_at", Micros, nullable=False),
    UniqueConstraint("badge_class_id", "code"),
    CheckConstraint(
        "uses_remaining >= 0 AND uses_remaining <= use_limit", name="uses_remaining_range"
    ),
    Index(None, "badge_class_id", "id"),
    # Ids are never handed out again, so keyset pages never see a new code behind them.
    sqlite_autoincrement=True,
)


# --- Credly: badge templates (migration 0002) --------------------------------------------------
# One row per template; what is only read back whole (settings, alignments, activities, ...)
# is the `doc` JSON column. What lists filter or sort on are columns, and the list-valued
# filters (skills, reporting tags, collections, recommendation ids) are rows of
# badge_template_terms, so both databases filter them with plain indexed joins. On PostgreSQL
# the keys that order pages use the "C" collation, so that the order is by code point as on
# SQLite, whatever the database's locale.
TemplateId = String(36).with_variant(String(36, collation="C"), "postgresql")
SortText = Text().with_variant(Text(collation="C"), "postgresql")

badge_templates = Table(
    "badge_templates",
    metadata,
    Column("id", TemplateId, primary_key=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    # Lower-cased name (Python's lower(), the same on both databases): sort and partial match.
    Column("name_key", SortText, nullable=False),
    Column("description", Text, nullable=False),
    Column("description_key", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("public", Boolean, nullable=False),
    Column("vanity_slug", String(255), nullable=False),
    # A variant's primary template; NO ACTION so a primary with variants cannot be deleted.
    Column(
        "primary_badge_template_id",
        TemplateId,
        ForeignKey("badge_templates.id"),
        nullable=True,
    ),
    Column("badges_count", BigInteger, nullable=False),
    Column("image_id", String(36), nullable=True),
    Column("state_updated_at", Micros, nullable=True),
    Column("created_at", Micros, nullable=False),
    Column("updated_at", Micros, nullable=False),
    Column("doc", Json, nullable=False),
    UniqueConstraint("org_id", "vanity_slug"),
    # One index per sort key: any sort walks (org_id, key, id).
    Index(None, "org_id", "created_at", "id"),
    Index(None, "org_id", "updated_at", "id"),
    Index(None, "org_id", "name_key", "id"),
    Index(None, "org_id", "badges_count", "id"),
    Index(None, "primary_badge_template_id"),
)

# Filter terms of a template: kind is "skill" or "reporting_tag" (value lower-cased),
# "collection" or "recommendation" (value a lower-case UUID).
badge_template_terms = Table(
    "badge_template_terms",
    metadata,
    Column(
        "template_id",
        TemplateId,
        ForeignKey("badge_templates.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("kind", String(16), primary_key=True),
    Column("value", Text, primary_key=True),
    Column("org_id", Id, nullable=False),
    Index(None, "org_id", "kind", "value", "template_id"),
)

# Links between templates of one organisation: kind "requires" (required_badge_templates and
# badge activities) or "recommends" (badge recommendations). The target's foreign key has no
# ON DELETE action, so a template others still point at cannot be deleted.
badge_template_links = Table(
    "badge_template_links",
    metadata,
    Column(
        "template_id",
        TemplateId,
        ForeignKey("badge_templates.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("kind", String(16), primary_key=True),
    Column("target_id", TemplateId, ForeignKey("badge_templates.id"), primary_key=True),
    Column("org_id", Id, nullable=False),
    Index(None, "target_id", "kind"),
    Index(None, "org_id", "kind"),
)


# --- Award events and recipient badge states (migration 0005) ----------------------------------
# Each org's events are numbered 1, 2, 3, ... by org_event_sequences: a writer bumps its org's
# row (UPDATE ... RETURNING) in its own transaction, so on PostgreSQL the row lock makes an
# org's events commit in sequence order, and a watcher reading "sequence > last seen" never
# skips one. The payload is what the stream needs to rebuild the event (an award id, or the
# recorded state).
org_event_sequences = Table(
    "org_event_sequences",
    metadata,
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
)

award_events = Table(
    "award_events",
    metadata,
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("type", String(16), nullable=False),
    Column("payload", Json, nullable=False),
    Column("time", Micros, nullable=False),
)

# A recipient's recorded state on a CrowdTwist badge. No row means the badge's first state.
# `state` is the BadgeStateType number: badge validation makes orders follow unearned <
# in progress < earned, so comparing state numbers compares orders, even after the badge's
# orders are renumbered. `order` is the state's order when it was recorded.
recipient_badge_states = Table(
    "recipient_badge_states",
    metadata,
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    Column("badge_id", Id, ForeignKey("badges.id", ondelete="CASCADE"), primary_key=True),
    Column("recipient_key", String(2100), primary_key=True),
    Column("recipient", Json, nullable=False),
    Column("state", Integer, nullable=False),
    Column("order", Integer, nullable=False),
    Column("update_time", Micros, nullable=False),
    # ListRecipientBadgeStates reads one recipient's rows across badges.
    Index(None, "org_id", "recipient_key", "badge_id"),
)


# --- Awards and award counters (migration 0004) ------------------------------------------------
# One row per award. Exactly one definition column is set. dedupe_key is Credly's "one live
# award of a template per recipient": unique with org_id, NULL when the template allows
# duplicates and once the award is revoked. Definition foreign keys have no ON DELETE, so a
# definition with awards cannot be deleted by accident (the stores refuse first, the keys hold
# under concurrency). Ids are 24-hex, made in time order, so "oldest first" is id order; on
# PostgreSQL they use the "C" collation so that order is by code point, as on SQLite.
AwardId = String(24).with_variant(String(24, collation="C"), "postgresql")

awards = Table(
    "awards",
    metadata,
    Column("id", AwardId, primary_key=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("badge_id", Id, ForeignKey("badges.id"), nullable=True),
    Column("badge_template_id", TemplateId, ForeignKey("badge_templates.id"), nullable=True),
    Column("badge_class_id", String(24), ForeignKey("badgr_badge_classes.id"), nullable=True),
    Column("recipient_key", SortText, nullable=False),
    Column("issued_at", Micros, nullable=False),
    Column("narrative", Text, nullable=False),
    Column("evidence", Json, nullable=False),
    Column("custom_data", Json, nullable=False),
    Column("expires_at", Micros, nullable=True),
    Column("revoked_at", Micros, nullable=True),
    Column("revocation_reason", Text, nullable=False),
    Column("claim_code", String(16), nullable=False),
    Column("salt", String(16), nullable=False),
    Column("dedupe_key", Text, nullable=True),
    Column("create_time", Micros, nullable=False),
    Column("created_by", BigInteger, nullable=False),
    # The award's serialized badges.v1.Award without the fields that change or depend on the
    # server (state, revocation_reason, revoke_time, open_badge_id, open_badge); NULL for
    # awards from before migration 0008.
    Column("message", LargeBinary, nullable=True),
    UniqueConstraint("org_id", "dedupe_key"),
    CheckConstraint(
        "(CASE WHEN badge_id IS NULL THEN 0 ELSE 1 END)"
        " + (CASE WHEN badge_template_id IS NULL THEN 0 ELSE 1 END)"
        " + (CASE WHEN badge_class_id IS NULL THEN 0 ELSE 1 END) = 1",
        name="one_definition",
    ),
    # Lists by definition walk (definition, id); definition ids are unique across orgs, and
    # the same indexes serve the foreign key checks when a definition is deleted.
    Index(None, "badge_id", "id"),
    Index(None, "badge_template_id", "id"),
    Index(None, "badge_class_id", "id"),
    Index(None, "org_id", "recipient_key", "id"),
)

# How many live awards of a badge a recipient holds per period key ("total" for freq_max,
# "week:2026-W48" etc. for freq_cap). Taken with one conditional upsert (... ON CONFLICT DO
# UPDATE SET count = count + 1, cap = excluded.cap WHERE count < excluded.cap RETURNING), so
# concurrent awards cannot pass a cap; given back when an award is revoked. `cap` is the limit
# the last slot was taken under, and the check constraint holds count to it whatever a writer
# does.
award_counters = Table(
    "award_counters",
    metadata,
    Column("badge_id", Id, ForeignKey("badges.id", ondelete="CASCADE"), primary_key=True),
    Column("recipient_key", SortText, primary_key=True),
    Column("period", String(32), primary_key=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("count", Integer, nullable=False),
    Column("cap", Integer, nullable=False),
    CheckConstraint("count >= 0 AND count <= cap", name="count_within_cap"),
)


# --- Per-org badge counts (migration 0006) ------------------------------------------------------
# How many badges each org holds, so an unfiltered ListBadges reads its total from one row
# instead of counting the org's badges (a count grows with the org: 23 ms at 1M badges).
# insert_badge and delete_badge move it with an atomic `badges = badges +/- 1` in the badge's
# own transaction, so it is exact under concurrency and rolls back with a failed write. No row
# means no badges; deleting the org cascades.
org_badge_counts = Table(
    "org_badge_counts",
    metadata,
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    Column("badges", BigInteger, nullable=False),
    CheckConstraint("badges >= 0", name="badges_not_negative"),
)


# --- Per-definition award counts (migration 0008) -----------------------------------------------
# How many awards (live or revoked) each definition has, so ListAwards of a definition reads its
# total from one row instead of counting the definition's awards. `kind` is "badge", "template"
# or "class" and `ref` the definition's id as text. Creating awards moves it with one atomic
# `awards = awards + n` upsert in the awards' own transaction, so it is exact under concurrency
# and rolls back with a failed write; deleting a badge class's awards deletes its row. No row
# means no awards; deleting the org cascades.
award_counts = Table(
    "award_counts",
    metadata,
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("ref", String(36), primary_key=True),
    Column("awards", BigInteger, nullable=False),
    CheckConstraint("awards >= 0", name="awards_not_negative"),
)


# --- Request ids (migration 0009) ---------------------------------------------------------------
# A write that carried a client's request_id (AIP-155), kept so that a retry answers with the
# first result: `request` names the request message type, `fingerprint` is the SHA-256 of the
# request without its request_id, and `reply` the serialized reply. The row is written in the
# write's own transaction, so it exists exactly when the write committed. Rows are kept for at
# least 24 hours (request_ids.RETENTION), then purged; deleting the org cascades.
request_ids = Table(
    "request_ids",
    metadata,
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    Column("request_id", String(36), primary_key=True),
    Column("request", String(100), nullable=False),
    Column("fingerprint", LargeBinary(32), nullable=False),
    Column("reply", LargeBinary, nullable=True),
    Column("created_at", Micros, nullable=False, index=True),
)


# --- Constraint violations a caller can cause -----------------------------------------------------
# The domain error each constraint's violation is, built from the failed statement's parameters
# by name; store/errors.py translates every transaction's failure through this one table. Keyed
# by the constraint's name and whether the statement was a DELETE (of a row still referred to,
# the other side of a foreign key). A violation not named here is a bug of ours (INTERNAL),
# unless the store function that runs the statement acts on it itself.
def _template_gone(_params: Mapping[str, Any]) -> DomainError:
    return referenced_template_gone()


VIOLATIONS: dict[tuple[str, bool], Callable[[Mapping[str, Any]], DomainError]] = {
    # CreateBadge, UpdateBadge: the name is taken.
    ("uq_badges_org_id_name", False): lambda p: badge_rules.duplicate_name(p["name"]),
    # DeleteBadge: an award of the badge committed after delete_badge looked for one.
    ("fk_awards_badge_id_badges", True): lambda p: badge_rules.badge_awarded(p["id"]),
    # Progress of a badge deleted after it was read.
    ("fk_recipient_badge_states_badge_id_badges", False): (
        lambda p: NotFound("badge", p["badge_id"])
    ),
    # CreateCustomField, UpdateCustomField: the name is taken (Capillary 740).
    ("uq_custom_fields_org_id_name", False): lambda p: field_rules.duplicate_name(p["name"]),
    # A template's terms and links name one deleted between the check and the write (its
    # target, or itself under an update).
    ("fk_badge_template_links_target_id_badge_templates", False): _template_gone,
    ("fk_badge_template_links_template_id_badge_templates", False): _template_gone,
    ("fk_badge_template_terms_template_id_badge_templates", False): _template_gone,
}

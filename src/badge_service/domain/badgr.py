"""Badgr v2 issuers, badge classes and claim codes: identifiers as Badgr forms them, lookups
by id, entityId, openBadgeId and reference, every rule a resource must satisfy before it is
stored, and the Open Badges 2.0 documents of issuers and badge classes."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from badge_service.domain import limits
from badge_service.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    LimitExceeded,
    NotFound,
)
from badge_service.domain.ids import is_hex_id, new_hex_id

ENTITY_TYPE_ISSUER = "Issuer"
ENTITY_TYPE_BADGE_CLASS = "BadgeClass"
ENTITY_TYPE_USER = "BadgeUser"
OB2_CONTEXT = "https://w3id.org/openbadges/v2"
DEFAULT_SOURCE = "local"

# Path segments of openBadgeIds under the public base URL, as Badgr's.
ISSUERS_PATH = "issuers"
BADGE_CLASSES_PATH = "badges"

# Resource names in NOT_FOUND errors.
ISSUER = "issuer"
BADGE_CLASS = "badge class"
CLAIM_CODE = "claim code"

# Sizes and counts are limits.BADGR_* (Badgr's own where its API states them); these are
# value ranges.
EXPIRES_AMOUNT_MAX = 9999
CREDIT_HOURS_MAX = 1_000_000.0

CLAIM_CODES_DEFAULT_PAGE_SIZE = 50

# Claim codes: 12 characters of an alphabet without look-alikes (0/O, 1/I/L), about 59 bits.
CLAIM_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CLAIM_CODE_LENGTH = 12
CLAIM_CODE_USE_LIMIT_MAX = 1_000_000

_ENTITY_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_DATA_IMAGE = re.compile(
    r"^data:image/(?:png|jpeg|gif|svg\+xml|webp);base64,([A-Za-z0-9+/]+={0,2})$"
)
_CLAIM_CODE = re.compile(f"^[{CLAIM_CODE_ALPHABET}]{{{CLAIM_CODE_LENGTH}}}$")
# How much of a client's value an error repeats (error details travel in trailers).
_ECHO_MAX = 100


class StaffRole(StrEnum):
    """A staff member's role on an issuer (Badgr's spelling)."""

    OWNER = "owner"
    EDITOR = "editor"
    STAFF = "staff"


class PropertyType(StrEnum):
    """The kind of value a custom property holds (Badgr's propertyType)."""

    STRING = "STRING"
    STRING_CHOICE = "STRING_CHOICE"
    STRING_MULTI_CHOICE = "STRING_MULTI_CHOICE"
    DOUBLE = "DOUBLE"


class PropertyTarget(StrEnum):
    """What carries a custom property (Badgr's targetEntityType)."""

    BADGE_CLASS = "BADGE_CLASS"
    ASSERTION = "ASSERTION"


class ExpiresDuration(StrEnum):
    """The unit of a default expiry (Badgr's spelling)."""

    DAYS = "days"
    WEEKS = "weeks"
    MONTHS = "months"
    YEARS = "years"


@dataclass(slots=True)
class UserEmail:
    """An email address of a user."""

    email: str
    verified: bool = False
    primary: bool = False


@dataclass(slots=True)
class UserProfile:
    """A Badgr user profile, as embedded in an issuer's staff."""

    entity_id: str = ""
    first_name: str = ""
    last_name: str = ""
    emails: list[UserEmail] = field(default_factory=list)
    url: list[str] = field(default_factory=list)
    telephone: list[str] = field(default_factory=list)
    badgr_domain: str = ""
    agreed_terms_version: int = 0
    marketing_opt_in: bool = False
    has_password_set: bool = False


@dataclass(slots=True)
class StaffMember:
    """One staff member of an issuer."""

    role: StaffRole | None
    user: str
    user_profile: UserProfile | None = None


@dataclass(slots=True)
class SkillLinking:
    """Where the skills of an issuer's badge classes are linked."""

    type: str = ""
    server_uri: str = ""
    indeed_region: str = ""


@dataclass(slots=True)
class PropertyChoice:
    """One choice of a choice-typed custom property."""

    id: str
    label: str


@dataclass(slots=True)
class PropertyDefinition:
    """A custom property an issuer defines."""

    property_type: PropertyType | None
    target_entity_type: PropertyTarget | None
    property_id: str
    label: str
    sub_label: str = ""
    public: bool = False
    required: bool = False
    choice_values: list[PropertyChoice] = field(default_factory=list)


@dataclass(slots=True)
class IssuerPreferences:
    """Custom property definitions and print certificate templates of an issuer."""

    custom_property_definitions: list[PropertyDefinition] = field(default_factory=list)
    default_print_cert_template_id: str = ""
    enabled_print_cert_template_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Issuer:
    """A Badgr issuer. Times are aware UTC datetimes."""

    name: str
    email: str = ""
    url: str = ""
    image: str = ""
    description: str = ""
    staff: list[StaffMember] = field(default_factory=list)
    badgr_domain: str = ""
    extensions: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    source_url: str = ""
    image_path: str = ""
    original_json: str = ""
    skill_linking: SkillLinking = field(default_factory=SkillLinking)
    preferences: IssuerPreferences = field(default_factory=IssuerPreferences)
    id: str = ""
    entity_id: str = ""
    org_id: int = 0
    created_by: str = ""
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(slots=True)
class Alignment:
    """An objective or educational standard a badge class aligns with."""

    target_name: str
    target_url: str
    target_description: str = ""
    target_framework: str = ""
    target_code: str = ""
    display_as_skill: bool = False


@dataclass(slots=True)
class Expires:
    """A default expiry period; no duration means awards never expire."""

    amount: int = 0
    duration: ExpiresDuration | None = None


@dataclass(slots=True)
class Ob3Properties:
    """Open Badges 3.0 properties of a badge class."""

    credit_hours: float = 0.0
    field_of_study: str = ""
    human_code: str = ""
    specialization: str = ""


@dataclass(slots=True)
class PropertyValue:
    """The value of one custom property on a badge class."""

    property_id: str
    string_value: str = ""
    double_value: float | None = None
    array_value: list[str] = field(default_factory=list)
    public: bool = False


@dataclass(slots=True)
class BadgeClassPreferences:
    """Public page, custom property and print certificate preferences of a badge class."""

    include_on_public_pages: bool = True
    custom_property_values: list[PropertyValue] = field(default_factory=list)
    enabled_print_cert_template_ids: list[str] = field(default_factory=list)
    default_print_cert_template_id: str = ""


@dataclass(slots=True)
class BadgeClass:
    """A Badgr badge class. ``issuer_id`` is the issuer's 24-hex id, ``issuer_entity_id`` its
    entity id (what Badgr's ``issuer`` field shows)."""

    name: str
    description: str = ""
    image: str = ""
    issuer_id: str = ""
    issuer_entity_id: str = ""
    achievement_type: str = ""
    criteria_url: str = ""
    criteria_narrative: str = ""
    alignments: list[Alignment] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    expires: Expires = field(default_factory=Expires)
    extensions: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    source_url: str = ""
    image_path: str = ""
    original_json: str = ""
    archived: bool = False
    archived_date: dt.datetime | None = None
    archival_note: str = ""
    ob3_properties: Ob3Properties = field(default_factory=Ob3Properties)
    preferences: BadgeClassPreferences = field(default_factory=BadgeClassPreferences)
    id: str = ""
    entity_id: str = ""
    org_id: int = 0
    created_by: str = ""
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(slots=True)
class ClaimCode:
    """A claim code of a badge class. ``uses_remaining`` counts down as the code is redeemed
    (an atomic ``uses_remaining - 1 WHERE uses_remaining > 0``); it never goes below 0."""

    code: str
    badge_class_id: str
    label: str = ""
    use_limit: int = 1
    uses_remaining: int = 1
    expires_at: dt.datetime | None = None
    created_at: dt.datetime | None = None
    org_id: int = 0
    id: int = 0


@dataclass(frozen=True, slots=True)
class BadgeClassFilter:
    """ListBadgeClasses filters; None means no filter. ``issuer_id`` is a 24-hex id."""

    issuer_id: str | None = None
    archived: bool | None = None


# --- Identifiers and lookups ----------------------------------------------------------------


def new_entity_id() -> str:
    """A new Badgr entity id: URL-safe base64 of a random UUID, unpadded (22 characters)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def is_entity_id(value: str) -> bool:
    """Whether ``value`` has the shape of an entity id."""
    return bool(_ENTITY_ID.match(value))


def normalize_base_url(value: str) -> str:
    """The public base URL without a trailing slash; ValueError unless it is an http(s) URL
    with no query or fragment."""
    base = value.rstrip("/")
    if not is_http_url(base) or urlsplit(base).query or urlsplit(base).fragment:
        raise ValueError(f"{value!r} is not an http(s) URL without query or fragment")
    return base


def open_badge_id(base_url: str, kind: str, entity_id: str) -> str:
    """The openBadgeId of a resource: ``{base}/public/{issuers|badges}/{entity_id}``."""
    return f"{base_url}/public/{kind}/{entity_id}"


@dataclass(frozen=True, slots=True)
class Key:
    """How to find a Badgr resource: by its 24-hex id or by its entity id."""

    by_entity_id: bool
    value: str


def _echo(value: str) -> str:
    return value if len(value) <= _ECHO_MAX else value[:_ECHO_MAX] + "..."


def key_of_id_or_entity_id(value: str, where: str, resource: str) -> Key:
    """The key of a 24-hex id or an entity id. Empty is INVALID_ARGUMENT; any other shape
    names nothing we have, so NOT_FOUND."""
    if not value:
        raise InvalidArgument(where, "is required")
    if is_hex_id(value):
        return Key(False, value)
    if is_entity_id(value):
        return Key(True, value)
    raise NotFound(resource, _echo(value))


def _decode_base64_url(value: str, where: str) -> str:
    """The URL encoded in ``value`` (standard or URL-safe base64, padding optional)."""
    limits.check_chars(value, limits.BADGR_REF_CHARS, where)
    if not _BASE64.match(value):
        raise InvalidArgument(where, "is not base64")
    bare = value.rstrip("=")
    if len(bare) % 4 == 1:
        raise InvalidArgument(where, "is not base64 (bad length)")
    padded = bare.replace("-", "+").replace("_", "/") + "=" * (-len(bare) % 4)
    try:
        text = base64.b64decode(padded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidArgument(where, "does not decode to an openBadgeId URL") from None
    if not is_http_url(text):
        raise InvalidArgument(where, "does not decode to an http(s) openBadgeId URL")
    return text


def _key_of_open_badge_id(url: str, base_url: str, kind: str, resource: str) -> Key:
    prefix = f"{base_url}/public/{kind}/"
    rest = url[len(prefix) :] if url.startswith(prefix) else ""
    if not is_entity_id(rest):
        raise NotFound(resource, _echo(url))
    return Key(True, rest)


def key_of_open_badge_id_base64(
    value: str, where: str, *, base_url: str, kind: str, resource: str
) -> Key:
    """The key named by the base64 of an openBadgeId. Not base64 of an http(s) URL is
    INVALID_ARGUMENT; a URL that is not one of ours is NOT_FOUND."""
    if not value:
        raise InvalidArgument(where, "is required")
    return _key_of_open_badge_id(_decode_base64_url(value, where), base_url, kind, resource)


def key_of_ref(value: str, where: str, *, base_url: str, kind: str, resource: str) -> Key:
    """The key named by a reference: a 24-hex id, an entity id, an openBadgeId URL, or the
    base64 of an openBadgeId."""
    if not value:
        raise InvalidArgument(where, "is required")
    limits.check_chars(value, limits.BADGR_REF_CHARS, where)
    if is_hex_id(value):
        return Key(False, value)
    if is_entity_id(value):
        return Key(True, value)
    if value.startswith(("http://", "https://")):
        return _key_of_open_badge_id(value, base_url, kind, resource)
    return _key_of_open_badge_id(_decode_base64_url(value, where), base_url, kind, resource)


# --- Errors -----------------------------------------------------------------------------------


def issuer_has_badge_classes(count: int) -> FailedPrecondition:
    """The issuer still has badge classes and the caller did not ask to cascade."""
    return FailedPrecondition(
        f"the issuer has {count} badge classes; delete them first or set cascade",
        reason="ISSUER_HAS_BADGE_CLASSES",
        metadata={"badge_class_count": str(count)},
    )


def badge_class_awarded(count: int) -> FailedPrecondition:
    """The badge class has been awarded and the caller did not ask to cascade."""
    return FailedPrecondition(
        f"the badge class has been awarded {count} times; set cascade to delete the awards too",
        reason="BADGE_CLASS_AWARDED",
        metadata={"award_count": str(count)},
    )


def badge_class_archived() -> FailedPrecondition:
    """Claim codes cannot be made for an archived badge class."""
    return FailedPrecondition(
        "the badge class is archived; unarchive it to create claim codes",
        reason="BADGE_CLASS_ARCHIVED",
    )


# --- Field rules ------------------------------------------------------------------------------


def is_http_url(value: str) -> bool:
    """Whether ``value`` is an absolute http(s) URL with a host and no whitespace."""
    if not value or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        return False
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host)


def _text(
    value: str,
    where: str,
    *,
    max_len: limits.Limit | None = limits.BADGR_TEXT_CHARS,
    required: bool = False,
) -> None:
    # PostgreSQL text cannot hold NUL, so it is refused everywhere rather than only there.
    if "\x00" in value:
        raise InvalidArgument(where, "must not contain NUL characters")
    if required and not value.strip():
        raise InvalidArgument(where, "is required")
    if max_len is not None:
        limits.check_chars(value, max_len, where)


def _url(value: str, where: str, *, required: bool = False) -> None:
    _text(value, where, max_len=None, required=required)
    limits.check_url(value, where)
    if value and not is_http_url(value):
        raise InvalidArgument(where, "must be an http(s) URL")


def _email(value: str, where: str, *, required: bool = False) -> None:
    _text(value, where, max_len=limits.BADGR_EMAIL_CHARS, required=required)
    if value and not _EMAIL.match(value):
        raise InvalidArgument(where, "must be an email address")


def _image(value: str, where: str, *, required: bool = False) -> None:
    if value.startswith("data:"):
        limits.check_chars(value, limits.BADGR_IMAGE_DATA_CHARS, where)
        match = _DATA_IMAGE.match(value)
        if match is None or len(match.group(1)) % 4:
            raise InvalidArgument(where, "must be a data:image/...;base64, URI")
        try:
            base64.b64decode(match.group(1), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(where, "must be a data:image/...;base64, URI") from None
        return
    _url(value, where, required=required)


def _hex_ids(values: Sequence[str], where: str) -> None:
    limits.check_items(values, limits.BADGR_LIST_ITEMS, where, "entries")
    seen: set[str] = set()
    for i, v in enumerate(values):
        if not is_hex_id(v):
            raise InvalidArgument(f"{where}[{i}]", "must be a 24-hex id")
        if v in seen:
            raise InvalidArgument(f"{where}[{i}]", "repeats an id")
        seen.add(v)


def _print_templates(default: str, enabled: Sequence[str], where: str) -> None:
    _hex_ids(enabled, f"{where}.enabled_print_cert_template_ids")
    if default:
        if not is_hex_id(default):
            raise InvalidArgument(f"{where}.default_print_cert_template_id", "must be a 24-hex id")
        if enabled and default not in enabled:
            raise InvalidArgument(
                f"{where}.default_print_cert_template_id",
                "must be one of enabled_print_cert_template_ids",
            )


def check_json_object(
    value: dict[str, Any], where: str, limit: limits.Limit = limits.BADGR_EXTENSIONS_BYTES
) -> None:
    """A JSON object fit for storage on both databases: no NUL in keys or strings (PostgreSQL
    JSONB refuses \\u0000), finite numbers only, at most ``limit`` bytes as a Struct."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if "\x00" in k:
                    raise InvalidArgument(where, "must not contain NUL characters")
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise InvalidArgument(where, "must not contain NUL characters")
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidArgument(where, "must not contain NaN or infinite numbers")
    limits.check_struct(value, limit, where)


def _original_json(value: str, where: str) -> None:
    _text(value, where, max_len=limits.BADGR_JSON_CHARS)
    if value:
        try:
            json.loads(value)
        except (ValueError, RecursionError):
            raise InvalidArgument(where, "must be a JSON document") from None


def _source(value: str, where: str) -> str:
    _text(value, where, max_len=limits.BADGR_SHORT_TEXT_CHARS)
    return value or DEFAULT_SOURCE


# --- Issuers --------------------------------------------------------------------------------


def validate_issuer(issuer: Issuer, prefix: str = "issuer") -> Issuer:
    """Checks every issuer rule; returns the issuer with defaults filled in (source, the
    profile entity ids of staff, ids of custom properties and their choices)."""
    _text(issuer.name, f"{prefix}.name", max_len=limits.BADGR_NAME_CHARS, required=True)
    _email(issuer.email, f"{prefix}.email", required=True)
    _url(issuer.url, f"{prefix}.url", required=True)
    _image(issuer.image, f"{prefix}.image")
    _text(issuer.description, f"{prefix}.description", max_len=limits.BADGR_LONG_TEXT_CHARS)
    _text(issuer.badgr_domain, f"{prefix}.badgr_domain")
    check_json_object(issuer.extensions, f"{prefix}.extensions")
    issuer.source = _source(issuer.source, f"{prefix}.source")
    _url(issuer.source_url, f"{prefix}.source_url")
    _text(issuer.image_path, f"{prefix}.image_path", max_len=limits.BADGR_PATH_CHARS)
    _original_json(issuer.original_json, f"{prefix}.original_json")
    _check_staff(issuer.staff, f"{prefix}.staff")
    where = f"{prefix}.badge_skill_linking_preferences"
    _text(issuer.skill_linking.type, f"{where}.type", max_len=limits.BADGR_SHORT_TEXT_CHARS)
    _url(issuer.skill_linking.server_uri, f"{where}.server_uri")
    _text(
        issuer.skill_linking.indeed_region,
        f"{where}.indeed_region",
        max_len=limits.BADGR_REGION_CHARS,
    )
    prefs = issuer.preferences
    _check_definitions(
        prefs.custom_property_definitions, f"{prefix}.preferences.custom_property_definitions"
    )
    _print_templates(
        prefs.default_print_cert_template_id,
        prefs.enabled_print_cert_template_ids,
        f"{prefix}.preferences",
    )
    return issuer


def _check_staff(staff: Sequence[StaffMember], where: str) -> None:
    limits.check_items(staff, limits.BADGR_LIST_ITEMS, where, "members")
    users: set[str] = set()
    for i, member in enumerate(staff):
        at = f"{where}[{i}]"
        if member.role is None:
            raise InvalidArgument(f"{at}.role", "is required: owner, editor or staff")
        _text(member.user, f"{at}.user", required=True)
        if any(c.isspace() for c in member.user):
            raise InvalidArgument(f"{at}.user", "must be a user's entity id")
        if member.user in users:
            raise InvalidArgument(f"{at}.user", "repeats a staff member")
        users.add(member.user)
        if member.user_profile is not None:
            _check_profile(member.user_profile, member.user, f"{at}.user_profile")


def _check_profile(profile: UserProfile, user: str, where: str) -> None:
    if profile.entity_id and profile.entity_id != user:
        raise InvalidArgument(f"{where}.entity_id", "must be the staff member's user")
    profile.entity_id = user
    _text(profile.first_name, f"{where}.first_name")
    _text(profile.last_name, f"{where}.last_name")
    _text(profile.badgr_domain, f"{where}.badgr_domain")
    if profile.agreed_terms_version < 0:
        raise InvalidArgument(f"{where}.agreed_terms_version", "must not be negative")
    for name, values in (
        ("emails", profile.emails),
        ("url", profile.url),
        ("telephone", profile.telephone),
    ):
        limits.check_items(values, limits.BADGR_PROFILE_LIST_ITEMS, f"{where}.{name}")
    primaries = 0
    for i, email in enumerate(profile.emails):
        _email(email.email, f"{where}.emails[{i}].email", required=True)
        primaries += email.primary
        if primaries > 1:
            raise InvalidArgument(f"{where}.emails[{i}].primary", "only one email is primary")
    for i, url in enumerate(profile.url):
        _url(url, f"{where}.url[{i}]", required=True)
    for i, phone in enumerate(profile.telephone):
        _text(
            phone,
            f"{where}.telephone[{i}]",
            max_len=limits.BADGR_SHORT_TEXT_CHARS,
            required=True,
        )


_CHOICE_TYPES = (PropertyType.STRING_CHOICE, PropertyType.STRING_MULTI_CHOICE)


def _check_definitions(defs: Sequence[PropertyDefinition], where: str) -> None:
    limits.check_items(defs, limits.BADGR_LIST_ITEMS, where, "definitions")
    ids: set[str] = set()
    for i, d in enumerate(defs):
        at = f"{where}[{i}]"
        if d.property_type is None:
            raise InvalidArgument(f"{at}.property_type", "is required")
        if d.target_entity_type is None:
            raise InvalidArgument(f"{at}.target_entity_type", "is required")
        if not d.property_id:
            d.property_id = new_hex_id()
        elif not is_hex_id(d.property_id):
            raise InvalidArgument(f"{at}.property_id", "must be a 24-hex id")
        if d.property_id in ids:
            raise InvalidArgument(f"{at}.property_id", "repeats a property id")
        ids.add(d.property_id)
        _text(d.label, f"{at}.label", required=True)
        _text(d.sub_label, f"{at}.sub_label")
        if d.property_type not in _CHOICE_TYPES:
            if d.choice_values:
                raise InvalidArgument(f"{at}.choice_values", "only choice properties have them")
            continue
        if not d.choice_values:
            raise InvalidArgument(f"{at}.choice_values", "a choice property needs choices")
        limits.check_items(d.choice_values, limits.BADGR_LIST_ITEMS, f"{at}.choice_values")
        choice_ids: set[str] = set()
        labels: set[str] = set()
        for j, c in enumerate(d.choice_values):
            if not c.id:
                c.id = new_hex_id()
            elif not is_hex_id(c.id):
                raise InvalidArgument(f"{at}.choice_values[{j}].id", "must be a 24-hex id")
            _text(c.label, f"{at}.choice_values[{j}].label", required=True)
            if c.id in choice_ids:
                raise InvalidArgument(f"{at}.choice_values[{j}].id", "repeats a choice id")
            if c.label in labels:
                raise InvalidArgument(f"{at}.choice_values[{j}].label", "repeats a choice label")
            choice_ids.add(c.id)
            labels.add(c.label)


def open_badges_issuer(issuer: Issuer, base_url: str) -> dict[str, Any]:
    """The Open Badges 2.0 Profile of an issuer (type Issuer)."""
    doc: dict[str, Any] = {
        "@context": OB2_CONTEXT,
        "type": "Issuer",
        "id": open_badge_id(base_url, ISSUERS_PATH, issuer.entity_id),
        "name": issuer.name,
        "url": issuer.url,
        "email": issuer.email,
    }
    if issuer.description:
        doc["description"] = issuer.description
    if issuer.image:
        doc["image"] = issuer.image
    return doc


# --- Badge classes --------------------------------------------------------------------------


def validate_badge_class(
    bc: BadgeClass,
    *,
    definitions: Sequence[PropertyDefinition],
    prefix: str = "badge_class",
) -> BadgeClass:
    """Checks every badge class rule, its custom property values against the issuer's
    ``definitions``; returns it with defaults filled in (source)."""
    _text(bc.name, f"{prefix}.name", max_len=limits.BADGR_NAME_CHARS, required=True)
    _text(
        bc.description, f"{prefix}.description", max_len=limits.BADGR_LONG_TEXT_CHARS, required=True
    )
    _image(bc.image, f"{prefix}.image", required=True)
    _text(bc.achievement_type, f"{prefix}.achievement_type")
    _url(bc.criteria_url, f"{prefix}.criteria_url")
    _text(
        bc.criteria_narrative, f"{prefix}.criteria_narrative", max_len=limits.BADGR_LONG_TEXT_CHARS
    )
    if not bc.criteria_url and not bc.criteria_narrative.strip():
        raise InvalidArgument(
            f"{prefix}.criteria_url", "criteria_url or criteria_narrative is required"
        )
    _check_alignments(bc.alignments, f"{prefix}.alignments")
    _check_tags(bc.tags, f"{prefix}.tags")
    _check_expires(bc.expires, f"{prefix}.expires")
    check_json_object(bc.extensions, f"{prefix}.extensions")
    bc.source = _source(bc.source, f"{prefix}.source")
    _url(bc.source_url, f"{prefix}.source_url")
    _text(bc.image_path, f"{prefix}.image_path", max_len=limits.BADGR_PATH_CHARS)
    _original_json(bc.original_json, f"{prefix}.original_json")
    _text(bc.archival_note, f"{prefix}.archival_note", max_len=limits.BADGR_LONG_TEXT_CHARS)
    ob3 = bc.ob3_properties
    if not math.isfinite(ob3.credit_hours) or not 0 <= ob3.credit_hours <= CREDIT_HOURS_MAX:
        raise InvalidArgument(
            f"{prefix}.ob3_properties.credit_hours", f"must be from 0 to {CREDIT_HOURS_MAX:g}"
        )
    for name in ("field_of_study", "human_code", "specialization"):
        _text(getattr(ob3, name), f"{prefix}.ob3_properties.{name}")
    prefs = bc.preferences
    _check_values(
        prefs.custom_property_values,
        definitions,
        f"{prefix}.preferences.custom_property_values",
    )
    _print_templates(
        prefs.default_print_cert_template_id,
        prefs.enabled_print_cert_template_ids,
        f"{prefix}.preferences",
    )
    return bc


def _check_alignments(alignments: Sequence[Alignment], where: str) -> None:
    limits.check_items(alignments, limits.BADGR_LIST_ITEMS, where, "alignments")
    for i, a in enumerate(alignments):
        at = f"{where}[{i}]"
        _text(a.target_name, f"{at}.target_name", max_len=limits.BADGR_NAME_CHARS, required=True)
        _url(a.target_url, f"{at}.target_url", required=True)
        _text(
            a.target_description, f"{at}.target_description", max_len=limits.BADGR_LONG_TEXT_CHARS
        )
        _text(a.target_framework, f"{at}.target_framework")
        _text(a.target_code, f"{at}.target_code")


def _check_tags(tags: Sequence[str], where: str) -> None:
    limits.check_items(tags, limits.BADGR_LIST_ITEMS, where, "tags")
    seen: set[str] = set()
    for i, tag in enumerate(tags):
        _text(tag, f"{where}[{i}]", required=True)
        if tag in seen:
            raise InvalidArgument(f"{where}[{i}]", "repeats a tag")
        seen.add(tag)


def _check_expires(expires: Expires, where: str) -> None:
    if expires.amount == 0 and expires.duration is None:
        return
    if not 1 <= expires.amount <= EXPIRES_AMOUNT_MAX:
        raise InvalidArgument(f"{where}.amount", f"must be from 1 to {EXPIRES_AMOUNT_MAX}")
    if expires.duration is None:
        raise InvalidArgument(f"{where}.duration", "is required with an amount")


def _check_values(
    values: Sequence[PropertyValue], definitions: Sequence[PropertyDefinition], where: str
) -> None:
    defs = {d.property_id: d for d in definitions}
    limits.check_items(values, limits.BADGR_LIST_ITEMS, where, "values")
    given: set[str] = set()
    for i, v in enumerate(values):
        at = f"{where}[{i}]"
        d = defs.get(v.property_id)
        if d is None or d.target_entity_type is not PropertyTarget.BADGE_CLASS:
            raise InvalidArgument(
                f"{at}.property_id", "is not a badge class property of the issuer"
            )
        if v.property_id in given:
            raise InvalidArgument(f"{at}.property_id", "repeats a property")
        given.add(v.property_id)
        _check_value(v, d, at)
    for d in definitions:
        if (
            d.required
            and d.target_entity_type is PropertyTarget.BADGE_CLASS
            and d.property_id not in given
        ):
            raise InvalidArgument(where, f"the required property {d.label!r} has no value")


def _check_value(v: PropertyValue, d: PropertyDefinition, at: str) -> None:
    choices = {c.id for c in d.choice_values} | {c.label for c in d.choice_values}
    kind = d.property_type
    uses_string = kind in (PropertyType.STRING, PropertyType.STRING_CHOICE)
    if not uses_string and v.string_value:
        raise InvalidArgument(f"{at}.string_value", f"does not apply to a {kind} property")
    if kind is not PropertyType.DOUBLE and v.double_value is not None:
        raise InvalidArgument(f"{at}.double_value", f"does not apply to a {kind} property")
    if kind is not PropertyType.STRING_MULTI_CHOICE and v.array_value:
        raise InvalidArgument(f"{at}.array_value", f"does not apply to a {kind} property")
    if kind is PropertyType.STRING:
        _text(v.string_value, f"{at}.string_value", max_len=limits.BADGR_NAME_CHARS)
    elif kind is PropertyType.STRING_CHOICE:
        if v.string_value not in choices:
            raise InvalidArgument(f"{at}.string_value", "must be one of the property's choices")
    elif kind is PropertyType.STRING_MULTI_CHOICE:
        seen: set[str] = set()
        for j, item in enumerate(v.array_value):
            if item not in choices:
                raise InvalidArgument(
                    f"{at}.array_value[{j}]", "must be one of the property's choices"
                )
            if item in seen:
                raise InvalidArgument(f"{at}.array_value[{j}]", "repeats a choice")
            seen.add(item)
    elif v.double_value is None or not math.isfinite(v.double_value):
        raise InvalidArgument(f"{at}.double_value", "must be a finite number")


def apply_archival(bc: BadgeClass, was: BadgeClass | None, now: dt.datetime) -> None:
    """Stamps ``archived_date`` when a class becomes archived, keeps it while it stays so,
    and clears it when the class is unarchived."""
    if not bc.archived:
        bc.archived_date = None
    elif was is not None and was.archived:
        bc.archived_date = was.archived_date
    else:
        bc.archived_date = now


def open_badges_badge_class(bc: BadgeClass, base_url: str) -> dict[str, Any]:
    """The Open Badges 2.0 BadgeClass of a badge class."""
    criteria: dict[str, Any] = {}
    if bc.criteria_url:
        criteria["id"] = bc.criteria_url
    if bc.criteria_narrative:
        criteria["narrative"] = bc.criteria_narrative
    alignment = []
    for a in bc.alignments:
        item = {"targetName": a.target_name, "targetUrl": a.target_url}
        for key, value in (
            ("targetDescription", a.target_description),
            ("targetFramework", a.target_framework),
            ("targetCode", a.target_code),
        ):
            if value:
                item[key] = value
        alignment.append(item)
    return {
        "@context": OB2_CONTEXT,
        "type": "BadgeClass",
        "id": open_badge_id(base_url, BADGE_CLASSES_PATH, bc.entity_id),
        "name": bc.name,
        "description": bc.description,
        "image": bc.image,
        "criteria": criteria,
        "issuer": open_badge_id(base_url, ISSUERS_PATH, bc.issuer_entity_id),
        "alignment": alignment,
        "tags": list(bc.tags),
    }


# --- Claim codes ----------------------------------------------------------------------------


def new_claim_code() -> str:
    """A new random claim code."""
    return "".join(secrets.choice(CLAIM_CODE_ALPHABET) for _ in range(CLAIM_CODE_LENGTH))


def claim_code_of(value: str, where: str) -> str:
    """The canonical (upper-case) form of a code a client typed; empty is INVALID_ARGUMENT,
    and a value that cannot be a code is NOT_FOUND."""
    if not value:
        raise InvalidArgument(where, "is required")
    code = value.strip().upper()
    if not _CLAIM_CODE.match(code):
        raise NotFound(CLAIM_CODE, _echo(value))
    return code


@dataclass(frozen=True, slots=True)
class ClaimCodeBatch:
    """A checked CreateClaimCodes request."""

    count: int
    label: str
    use_limit: int
    expires_at: dt.datetime | None


def validate_claim_code_batch(
    count: int,
    label: str,
    use_limit: int | None,
    expires_at: dt.datetime | None,
    *,
    now: dt.datetime,
) -> ClaimCodeBatch:
    """Checks a request for claim codes: 1 to CLAIM_CODES_PER_CALL codes (0 means 1), a use
    limit of 1 (the default) to CLAIM_CODE_USE_LIMIT_MAX, an expiry in the future."""
    if count < 0:
        raise InvalidArgument("count", f"must be from 1 to {limits.CLAIM_CODES_PER_CALL}")
    if count > limits.CLAIM_CODES_PER_CALL:
        raise LimitExceeded(
            "count",
            f"must be from 1 to {limits.CLAIM_CODES_PER_CALL}",
            limits.CLAIM_CODES_PER_CALL.name,
            limits.CLAIM_CODES_PER_CALL,
        )
    _text(label, "label")
    limit = 1 if use_limit is None else use_limit
    if not 1 <= limit <= CLAIM_CODE_USE_LIMIT_MAX:
        raise InvalidArgument("use_limit", f"must be from 1 to {CLAIM_CODE_USE_LIMIT_MAX}")
    if expires_at is not None and expires_at <= now:
        raise InvalidArgument("expires_at", "must be in the future")
    return ClaimCodeBatch(count or 1, label, limit, expires_at)

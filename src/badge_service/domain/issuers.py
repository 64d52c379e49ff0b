"""Badgr v2 issuers: their fields, staff and custom property definitions, and every rule an
issuer must satisfy before it is stored; also the rules its badge classes share with it
(source, print certificate templates)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from badge_service.domain import limits
from badge_service.domain.errors import FailedPrecondition, InvalidArgument
from badge_service.domain.fields import (
    check_email,
    check_hex_ids,
    check_http_url,
    check_image,
    check_json_object,
    check_json_text,
    check_text,
)
from badge_service.domain.ids import is_hex_id, new_hex_id

ENTITY_TYPE_ISSUER = "Issuer"
ENTITY_TYPE_USER = "BadgeUser"
DEFAULT_SOURCE = "local"

# The resource name in NOT_FOUND errors.
ISSUER = "issuer"

# Sizes and counts are limits.BADGR_* (Badgr's own where its API states them); free text
# without a limit of its own has this one.
_TEXT = limits.BADGR_TEXT_CHARS


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


def issuer_has_badge_classes(count: int) -> FailedPrecondition:
    """The issuer still has badge classes and the caller did not ask to cascade."""
    return FailedPrecondition(
        f"the issuer has {count} badge classes; delete them first or set cascade",
        reason="ISSUER_HAS_BADGE_CLASSES",
        metadata={"badge_class_count": str(count)},
    )


# --- Rules shared with badge classes ---------------------------------------------------------


def check_print_templates(default: str, enabled: Sequence[str], where: str) -> None:
    """The print certificate templates of an issuer or a badge class: distinct 24-hex ids,
    and a default that is one of them."""
    check_hex_ids(
        enabled, f"{where}.enabled_print_cert_template_ids", limit=limits.BADGR_LIST_ITEMS
    )
    if default:
        if not is_hex_id(default):
            raise InvalidArgument(f"{where}.default_print_cert_template_id", "must be a 24-hex id")
        if enabled and default not in enabled:
            raise InvalidArgument(
                f"{where}.default_print_cert_template_id",
                "must be one of enabled_print_cert_template_ids",
            )


def source_or_default(value: str, where: str) -> str:
    """Where a resource came from (Badgr's ``source``), DEFAULT_SOURCE when empty."""
    check_text(value, where, limit=limits.BADGR_SHORT_TEXT_CHARS)
    return value or DEFAULT_SOURCE


# --- Issuers --------------------------------------------------------------------------------


def validate_issuer(issuer: Issuer, prefix: str = "issuer") -> Issuer:
    """Checks every issuer rule; returns the issuer with defaults filled in (source, the
    profile entity ids of staff, ids of custom properties and their choices)."""
    check_text(issuer.name, f"{prefix}.name", limit=limits.BADGR_NAME_CHARS, required=True)
    check_email(issuer.email, f"{prefix}.email", required=True, limit=limits.BADGR_EMAIL_CHARS)
    check_http_url(issuer.url, f"{prefix}.url", required=True)
    check_image(issuer.image, f"{prefix}.image", limit=limits.BADGR_IMAGE_DATA_CHARS)
    check_text(issuer.description, f"{prefix}.description", limit=limits.BADGR_LONG_TEXT_CHARS)
    check_text(issuer.badgr_domain, f"{prefix}.badgr_domain", limit=_TEXT)
    check_json_object(issuer.extensions, f"{prefix}.extensions", limits.BADGR_EXTENSIONS_BYTES)
    issuer.source = source_or_default(issuer.source, f"{prefix}.source")
    check_http_url(issuer.source_url, f"{prefix}.source_url")
    check_text(issuer.image_path, f"{prefix}.image_path", limit=limits.BADGR_PATH_CHARS)
    check_json_text(issuer.original_json, f"{prefix}.original_json", limit=limits.BADGR_JSON_CHARS)
    _check_staff(issuer.staff, f"{prefix}.staff")
    where = f"{prefix}.badge_skill_linking_preferences"
    check_text(issuer.skill_linking.type, f"{where}.type", limit=limits.BADGR_SHORT_TEXT_CHARS)
    check_http_url(issuer.skill_linking.server_uri, f"{where}.server_uri")
    check_text(
        issuer.skill_linking.indeed_region,
        f"{where}.indeed_region",
        limit=limits.BADGR_REGION_CHARS,
    )
    prefs = issuer.preferences
    _check_definitions(
        prefs.custom_property_definitions, f"{prefix}.preferences.custom_property_definitions"
    )
    check_print_templates(
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
        check_text(member.user, f"{at}.user", required=True, limit=_TEXT)
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
    check_text(profile.first_name, f"{where}.first_name", limit=_TEXT)
    check_text(profile.last_name, f"{where}.last_name", limit=_TEXT)
    check_text(profile.badgr_domain, f"{where}.badgr_domain", limit=_TEXT)
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
        check_email(
            email.email, f"{where}.emails[{i}].email", required=True, limit=limits.BADGR_EMAIL_CHARS
        )
        primaries += email.primary
        if primaries > 1:
            raise InvalidArgument(f"{where}.emails[{i}].primary", "only one email is primary")
    for i, url in enumerate(profile.url):
        check_http_url(url, f"{where}.url[{i}]", required=True)
    for i, phone in enumerate(profile.telephone):
        check_text(
            phone,
            f"{where}.telephone[{i}]",
            limit=limits.BADGR_SHORT_TEXT_CHARS,
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
        check_text(d.label, f"{at}.label", required=True, limit=_TEXT)
        check_text(d.sub_label, f"{at}.sub_label", limit=_TEXT)
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
            check_text(c.label, f"{at}.choice_values[{j}].label", required=True, limit=_TEXT)
            if c.id in choice_ids:
                raise InvalidArgument(f"{at}.choice_values[{j}].id", "repeats a choice id")
            if c.label in labels:
                raise InvalidArgument(f"{at}.choice_values[{j}].label", "repeats a choice label")
            choice_ids.add(c.id)
            labels.add(c.label)

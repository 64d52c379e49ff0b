"""Every documented limit on what a client may send or store, in one place.

Why these numbers. A reply must fit in one gRPC message (16 MiB, the server's default
``max_message_bytes``), and a list reply holds a page of stored objects. So each stored object
has a maximum serialized size, chosen with its list's largest page so that a full page of
maximum-size objects stays within PAGE_BUDGET_BYTES, half the message limit (the arithmetic is
in the comments below and checked by tests/test_limits.py with real maximum-size objects).
Text limits count characters (code points, as Python's ``len``); the size arithmetic assumes
four UTF-8 bytes each. URLs are limited in UTF-8 bytes. Structs (extra data, custom data,
extensions) are measured as their serialized protobuf size, which is what a reply carries.

Per-organisation quotas (org meta tags, custom fields and the defaults they fill in) bound
the work of checking every badge and award against the org's rules, so one organisation's
configuration can neither make its own writes unboundedly slow nor, through the shared event
loop and SQLite writer, slow every other organisation's calls (issue 10, item 5). Over a quota
is RESOURCE_EXHAUSTED (reason QUOTA_EXCEEDED); over any other limit INVALID_ARGUMENT (reason
LIMIT_EXCEEDED); both name the limit in ErrorInfo metadata (``limit``, ``max``) and the field.

Vendors' own limits are kept where the seeds state them: CrowdTwist's 25 badges a page,
Credly's 50 templates a page. Capillary states that custom fields per org are unlimited; this
service caps them (CUSTOM_FIELDS_PER_ORG), because every badge and award is checked against all
of them. README.md's "Limits" section lists every limit below (a test keeps it in step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Sized
from typing import Any

from badge_service.domain.errors import LimitExceeded, QuotaExceeded

KIB = 1024
MIB = 1024 * KIB


class Limit(int):
    """A documented limit: an int (so it compares and formats as its value) with the name
    error metadata gives it, its unit, and what it bounds (README's Limits table)."""

    name: str
    unit: str
    what: str

    def __new__(cls, value: int, name: str, unit: str, what: str) -> Limit:
        """A limit of ``value`` ``unit`` named ``name``."""
        out = super().__new__(cls, value)
        out.name = name
        out.unit = unit
        out.what = what
        return out


ALL: list[Limit] = []
"""Every limit, in README order."""


def _limit(value: int, name: str, unit: str, what: str) -> Limit:
    out = Limit(value, name, unit, what)
    ALL.append(out)
    return out


# --- The reply budget ------------------------------------------------------------------------

MESSAGE_BYTES = 16 * MIB
"""The largest gRPC message the server sends or takes (config ``max_message_bytes``)."""
PAGE_BUDGET_BYTES = 8 * MIB
"""A full page of maximum-size objects stays within this (half the message limit)."""

# --- Requests in general ---------------------------------------------------------------------

PAGE_TOKEN_CHARS = _limit(
    8192, "page_token_chars", "characters", "`page_token` (every list; tokens we issue are shorter)"
)
UPDATE_MASK_PATHS = _limit(100, "update_mask_paths", "paths", "`update_mask` paths")
UPDATE_MASK_PATH_CHARS = _limit(256, "update_mask_path_chars", "characters", "one mask path")
URL_BYTES = _limit(2048, "url_bytes", "bytes (UTF-8)", "every URL field")
# (Deeper than about 32 objects, a request is past protobuf's own parsing depth: the limit is
# below that, so that over it a client is told which limit, not that the request is malformed.)
STRUCT_DEPTH = _limit(
    30,
    "struct_depth",
    "levels",
    "nesting of objects and lists in a Struct (extra data, custom data, extensions)",
)

# --- CrowdTwist badges -----------------------------------------------------------------------
# A badge at its limits: name and title 2 x 1,023, three states of 1,023 + 2,051 + 9, 100
# tags of 1,031, 100 segments of 1,043, extra data 65,539, times 70: 289,051 bytes. A page of
# BADGES_PAGE is 7,226,275 bytes.

BADGES_PAGE = _limit(25, "badges_page", "badges", "ListBadges page (CrowdTwist's maximum)")
BADGE_TEXT_CHARS = _limit(
    255,
    "badge_text_chars",
    "characters",
    "badge name, title, state description, tag name (also the ListBadges `tag_name` filter), "
    "segment name",
)
BADGE_TAGS = _limit(100, "badge_tags", "tags", "tags on one badge")
BADGE_SEGMENTS = _limit(100, "badge_segments", "segments", "segments on one badge")
BADGE_EXTRA_DATA_BYTES = _limit(
    64 * KIB,
    "badge_extra_data_bytes",
    "bytes (serialized)",
    "`badge_extra_data`, with the org's custom field defaults filled in",
)

# --- Capillary custom fields and org meta ----------------------------------------------------

CUSTOM_FIELDS_PER_ORG = _limit(
    100,
    "custom_fields_per_org",
    "fields per org (quota)",
    "custom fields of one organisation (Capillary sets none; every badge and award is checked "
    "against all of them)",
)
CUSTOM_FIELD_DEFAULTS_BYTES_PER_ORG = _limit(
    8 * KIB,
    "custom_field_defaults_bytes_per_org",
    "bytes per org (quota)",
    "what the org's active custom fields' defaults fill into extra data and custom data "
    "(serialized), so defaults alone never fill those",
)
CUSTOM_FIELD_NAME_CHARS = _limit(255, "custom_field_name_chars", "characters", "field name")
CUSTOM_FIELD_DEFAULT_CHARS = _limit(
    255, "custom_field_default_chars", "characters", "field `default_value`"
)
CUSTOM_FIELDS_PAGE = _limit(500, "custom_fields_page", "fields", "ListCustomFields page")
ORG_META_TAGS_PER_ORG = _limit(
    1000, "org_meta_tags_per_org", "tags per org (quota)", "org meta tags of one organisation"
)
ORG_META_TAG_KEY_CHARS = _limit(255, "org_meta_tag_key_chars", "characters", "tag `key`")
ORG_META_TAG_DESCRIPTION_CHARS = _limit(
    255, "org_meta_tag_description_chars", "characters", "tag `description`"
)
# GetOrgMeta at the quota: 1,000 x (1,023 + 1,023 + 7) = about 2.1 MB.

# --- Credly badge templates ------------------------------------------------------------------
# A listed template is its own fields (at most BADGE_TEMPLATE_BYTES, measured as stored) plus
# what its references show of the templates they name: a required template's card (id, name,
# slug, URL, image URL, state) is at most about 4.1 KB with a 200-byte public base URL; a
# badge activity or recommendation adds a name and a URL, about 1.8 KB. A page of 50 at the
# limits: 50 x (49,152 + 25 x 4,110) = 7,595,100 bytes.

BADGE_TEMPLATES_PAGE = _limit(
    50, "badge_templates_page", "templates", "ListBadgeTemplates page (Credly's)"
)
BADGE_TEMPLATE_BYTES = _limit(
    48 * KIB,
    "badge_template_bytes",
    "bytes (serialized)",
    "one badge template's own fields, as stored (its lists together)",
)
BADGE_TEMPLATE_REFERENCES = _limit(
    25,
    "badge_template_references",
    "references",
    "templates one template names: required templates, badge activities and badge "
    "recommendations together",
)
BADGE_TEMPLATE_RELATED = _limit(
    100,
    "badge_template_related",
    "templates",
    "GetBadgeTemplate's `recommending_templates` and `criterion_for` each show at most this "
    "many (by name, then id)",
)
BADGE_TEMPLATE_REQUIREMENT_REACH = _limit(
    200,
    "badge_template_requirement_reach",
    "templates",
    "templates reached by following required templates from one template (the cycle check "
    "reads no more)",
)
BADGE_TEMPLATE_NAME_CHARS = _limit(
    255,
    "badge_template_name_chars",
    "characters",
    "template name, variant type and name, criteria URL name, alignment, endorsement and "
    "activity names, recommendation titles, skills and reporting tags",
)
BADGE_TEMPLATE_LONG_TEXT_CHARS = _limit(
    2000,
    "badge_template_long_text_chars",
    "characters",
    "template description, LinkedIn message, alignment and endorsement descriptions",
)
BADGE_TEMPLATE_LIST_ITEMS = _limit(
    100,
    "badge_template_list_items",
    "items",
    "each list of a template: alignments, recommendations, required templates, activities, "
    "skills, endorsements, reporting tags, collection ids",
)
BADGE_TEMPLATE_LOCALES = _limit(50, "badge_template_locales", "locales", "`available_locales`")
BADGE_TEMPLATE_SLUG_CHARS = _limit(255, "badge_template_slug_chars", "characters", "vanity slug")
CREDLY_FILTER_CHARS = _limit(4096, "credly_filter_chars", "characters", "ListBadgeTemplates filter")
CREDLY_FILTER_VALUES = _limit(
    100, "credly_filter_values", "values", "comma-separated values of one filter key"
)
CREDLY_SORT_CHARS = _limit(256, "credly_sort_chars", "characters", "ListBadgeTemplates sort")

# --- Badgr issuers, badge classes and claim codes --------------------------------------------
# Badgr's own limits where its API states them (name 1,024, description 16,384). An issuer or
# class, as returned, is at most 320 KiB (a 256 KiB data: image and the rest), and a page of 25
# is 8,192,000 bytes.

ISSUERS_PAGE = _limit(25, "issuers_page", "issuers", "ListIssuers page (and its default)")
BADGE_CLASSES_PAGE = _limit(
    25, "badge_classes_page", "classes", "ListBadgeClasses page (and its default)"
)
ISSUER_BYTES = _limit(
    320 * KIB, "issuer_bytes", "bytes (serialized)", "one issuer, as stored and returned"
)
BADGE_CLASS_BYTES = _limit(
    320 * KIB, "badge_class_bytes", "bytes (serialized)", "one badge class, as stored and returned"
)
BADGR_NAME_CHARS = _limit(
    1024, "badgr_name_chars", "characters", "issuer and class names (Badgr's), alignment names"
)
BADGR_LONG_TEXT_CHARS = _limit(
    16384,
    "badgr_long_text_chars",
    "characters",
    "descriptions, criteria narrative, archival note (Badgr's)",
)
BADGR_TEXT_CHARS = _limit(
    255, "badgr_text_chars", "characters", "other Badgr text: labels, tags, codes, names"
)
BADGR_PATH_CHARS = _limit(1024, "badgr_path_chars", "characters", "`image_path`")
BADGR_SHORT_TEXT_CHARS = _limit(
    64,
    "badgr_short_text_chars",
    "characters",
    "`source`, skill linking `type`, staff telephone numbers",
)
BADGR_REGION_CHARS = _limit(16, "badgr_region_chars", "characters", "`indeed_region`")
BADGR_EMAIL_CHARS = _limit(254, "badgr_email_chars", "characters", "email addresses")
BADGR_IMAGE_DATA_CHARS = _limit(
    256 * KIB, "badgr_image_data_chars", "characters", "a `data:image/...;base64,` image"
)
BADGR_JSON_CHARS = _limit(
    64 * KIB, "badgr_json_chars", "characters", "`original_json` of an issuer or class"
)
BADGR_EXTENSIONS_BYTES = _limit(
    64 * KIB, "badgr_extensions_bytes", "bytes (serialized)", "`extensions` of an issuer or class"
)
BADGR_LIST_ITEMS = _limit(
    100,
    "badgr_list_items",
    "items",
    "staff, alignments, tags, custom property definitions, their choices and values, print "
    "certificate template ids",
)
BADGR_PROFILE_LIST_ITEMS = _limit(
    20, "badgr_profile_list_items", "items", "a staff profile's emails, URLs and telephones"
)
BADGR_REF_CHARS = _limit(
    4096,
    "badgr_ref_chars",
    "characters",
    "a `ref` or base64 openBadgeId naming an issuer or class",
)
CLAIM_CODES_PER_CALL = _limit(1000, "claim_codes_per_call", "codes", "CreateClaimCodes `count`")
CLAIM_CODES_PAGE = _limit(1000, "claim_codes_page", "codes", "ListClaimCodes page")

# --- Awards ----------------------------------------------------------------------------------
# An award as stored is at most AWARD_BYTES; a reply adds its state, revocation (a reason of
# 1,000 characters) and open_badge_id: at most about 70.3 KB. A page of 100 is about 7.0 MB.
# A batch reply holds at most BATCH_AWARDS_BYTES of awards and at most 1,000 errors of about
# 1.7 KB each (texts in error details are clipped): about 7 MB.

AWARDS_PAGE = _limit(100, "awards_page", "awards", "ListAwards page")
AWARD_BYTES = _limit(
    64 * KIB, "award_bytes", "bytes (serialized)", "one award, as stored (narrative, evidence, ...)"
)
AWARD_CUSTOM_DATA_BYTES = _limit(
    16 * KIB,
    "award_custom_data_bytes",
    "bytes (serialized)",
    "`custom_data`, with the org's custom field defaults filled in",
)
AWARD_TEXT_CHARS = _limit(255, "award_text_chars", "characters", "recipient `member_id`")
AWARD_EMAIL_CHARS = _limit(320, "award_email_chars", "characters", "recipient `email`")
AWARD_NARRATIVE_CHARS = _limit(
    10_000, "award_narrative_chars", "characters", "award and evidence narratives"
)
AWARD_EVIDENCE = _limit(100, "award_evidence", "items", "evidence of one award")
AWARD_REASON_CHARS = _limit(1000, "award_reason_chars", "characters", "revocation `reason`")
BATCH_AWARDS = _limit(1000, "batch_awards", "requests", "BatchCreateAwards `requests`")
BATCH_AWARDS_BYTES = _limit(
    5 * MIB,
    "batch_awards_bytes",
    "bytes (serialized)",
    "the awards one BatchCreateAwards call creates, together, as stored",
)
RECIPIENT_STATES_PAGE = _limit(
    500, "recipient_states_page", "states", "ListRecipientBadgeStates page"
)
BAKED_IMAGE_BYTES = _limit(
    4 * MIB, "baked_image_bytes", "bytes", "a baked PNG or SVG (VerifyAward, BakeAward)"
)
BAKED_TEXT_BYTES = _limit(
    1 * MIB, "baked_text_bytes", "bytes", "the assertion text inside a baked image"
)


# --- Checks ----------------------------------------------------------------------------------


def check_chars(value: str, limit: Limit, where: str) -> None:
    """LIMIT_EXCEEDED when ``value`` has more characters than ``limit``."""
    if len(value) > limit:
        raise LimitExceeded(where, f"must be at most {limit} characters", limit.name, limit)


def check_url(value: str, where: str) -> None:
    """LIMIT_EXCEEDED when a URL is longer than URL_BYTES in UTF-8 (a character is at most
    four bytes, so shorter text is not encoded to find out)."""
    if len(value) * 4 > URL_BYTES and len(value.encode()) > URL_BYTES:
        raise LimitExceeded(
            where, f"must be at most {URL_BYTES} bytes (UTF-8)", URL_BYTES.name, URL_BYTES
        )


def check_items(items: Sized, limit: Limit, where: str, what: str = "items") -> None:
    """LIMIT_EXCEEDED when ``items`` has more than ``limit`` entries."""
    if len(items) > limit:
        raise LimitExceeded(where, f"must have at most {limit} {what}", limit.name, limit)


def check_bytes(size: int, limit: Limit, where: str, what: str = "serialized") -> None:
    """LIMIT_EXCEEDED when a serialized ``size`` is over ``limit``."""
    if size > limit:
        raise LimitExceeded(
            where, f"must be at most {limit} bytes {what} (is {size})", limit.name, limit
        )


def check_quota(count: int, limit: Limit, where: str, what: str) -> None:
    """RESOURCE_EXHAUSTED (QUOTA_EXCEEDED) when an organisation would have ``count`` of
    something, more than ``limit`` allows."""
    if count > limit:
        raise QuotaExceeded(
            f"{where}: an organisation may have at most {limit} {what} (this would make {count})",
            limit.name,
            limit,
            field=where,
        )


# --- Struct sizes, without protobuf ----------------------------------------------------------
# The domain stays free of protobuf, yet must measure extra data after defaults are filled in:
# these give the size google.protobuf.Struct would serialize plain JSON values to (numbers are
# doubles, None is null_value), so the limit means the same bytes a reply carries.


def _varint_len(n: int) -> int:
    return 1 if n < 0x80 else (n.bit_length() + 6) // 7


def _field_len(payload: int) -> int:
    # A length-delimited field of tag number < 16: tag byte, length varint, payload.
    return 1 + _varint_len(payload) + payload


def _value_len(value: Any) -> int:
    """Serialized size of a google.protobuf.Value holding ``value``."""
    if value is None or isinstance(value, bool):
        return 2  # null_value / bool_value: tag + one varint byte
    if isinstance(value, int | float):
        return 9  # number_value: tag + fixed64
    if isinstance(value, str):
        return _field_len(len(value.encode()))
    if isinstance(value, Mapping):
        return _field_len(struct_bytes(value))
    if isinstance(value, Sequence):
        return _field_len(sum(_field_len(_value_len(v)) for v in value))
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def struct_bytes(value: Mapping[str, Any]) -> int:
    """The size in bytes of ``value`` serialized as a google.protobuf.Struct."""
    total = 0
    for key, item in value.items():
        entry = _field_len(len(key.encode())) + _field_len(_value_len(item))
        total += _field_len(entry)
    return total


def check_struct(value: Mapping[str, Any], limit: Limit, where: str) -> None:
    """LIMIT_EXCEEDED when ``value`` serializes (as a Struct) to more than ``limit`` bytes."""
    check_bytes(struct_bytes(value), limit, where)

"""Credly badge templates: the fields, the rules a template must satisfy before it is stored,
its state machine (draft, active, archived) and the links it shows.

Rules that need other templates (references, variants, requirement cycles) take what they need
as arguments, so this module stays free of I/O.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from badge_service.domain import limits
from badge_service.domain.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    LimitExceeded,
    NotFound,
)
from badge_service.domain.fields import check_http_url, check_text, is_date_text, is_slug

RESOURCE = "badge template"
PREFIX = "badge_template"

# Sizes and counts are limits.BADGE_TEMPLATE_* (this is a value range).
EXPIRY_DAYS_MAX = 36_500
SLUG_MAX = limits.BADGE_TEMPLATE_SLUG_CHARS
# Text without a limit of its own has this one.
_TEXT = limits.BADGE_TEMPLATE_NAME_CHARS

# Credly lists 50 templates a page.
PAGE_SIZE = limits.BADGE_TEMPLATES_PAGE

# Where template and organisation pages live unless the server is configured otherwise.
DEFAULT_PUBLIC_BASE_URL = "http://localhost:50051"

# \Z, not $: $ also matches before a trailing newline.
_UUID = re.compile(r"^[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\Z")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*\Z")
UTC_MIDNIGHT = dt.time(tzinfo=dt.UTC)


class TemplateState(StrEnum):
    """Credly's template states."""

    DRAFT = "draft"
    ACTIVE = "active"
    ARCHIVED = "archived"


class Visibility(StrEnum):
    """Who can see a template."""

    PUBLIC = "public"
    PRIVATE = "private"


class ExpiryType(StrEnum):
    """How issued badges expire by default."""

    DATE = "date"
    DURATION = "duration"


class Level(StrEnum):
    """Credly's level attribute."""

    FOUNDATIONAL = "Foundational"
    INTERMEDIATE = "Intermediate"
    ADVANCED = "Advanced"


class TimeToEarn(StrEnum):
    """Credly's time to earn attribute."""

    HOURS = "Hours"
    DAYS = "Days"
    WEEKS = "Weeks"
    MONTHS = "Months"
    YEARS = "Years"


class Cost(StrEnum):
    """Credly's cost attribute."""

    FREE = "Free"
    PAID = "Paid"


class TypeCategory(StrEnum):
    """Credly's type attribute."""

    LEARNING = "Learning"
    VALIDATION = "Validation"
    CERTIFICATION = "Certification"
    EXPERIENCE = "Experience"


class RecommendationType(StrEnum):
    """The kinds of recommendation."""

    INFORMATION = "information"
    BADGE = "badge"


BADGE_ACTIVITY_TYPE = "Badge"


@dataclass(slots=True)
class Alignment:
    """A standard or framework a template aligns with."""

    name: str
    url: str = ""
    description: str = ""
    id: str = ""


@dataclass(slots=True)
class Recommendation:
    """Something to do or earn next."""

    type: RecommendationType | None
    title: str = ""
    activity_url: str = ""
    recommended_badge_template_id: str = ""
    id: str = ""


@dataclass(slots=True)
class Activity:
    """What an earner does to earn a badge."""

    title: str
    activity_type: str = ""
    activity_url: str = ""
    required_badge_template_id: str = ""
    id: str = ""


@dataclass(slots=True)
class Endorsement:
    """An endorsement by another organisation."""

    name: str
    url: str = ""
    description: str = ""
    id: str = ""


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """What a template shows of another template of its organisation, and what the rules about
    references need to know of it."""

    id: str
    name: str
    vanity_slug: str
    image_url: str
    state: TemplateState
    primary_badge_template_id: str = ""
    variants_allowed: bool = False


@dataclass(slots=True)
class BadgeTemplate:
    """A Credly badge template. Times are aware UTC datetimes; None enums mean null."""

    name: str
    description: str = ""
    state: TemplateState | None = None
    public: bool = True
    visibility: Visibility | None = None
    allow_duplicate_badges: bool = False
    default_expires_at_type: ExpiryType | None = None
    default_expires_at_date: str = ""
    default_expires_in_days: int = 0
    earn_this_badge_url: str = ""
    enable_earn_this_badge: bool = False
    enable_detail_attribute_visibility: bool = True
    global_activity_url: str = ""
    lock_badge_state: bool = False
    send_expiring_badge_notifications: bool = False
    settings_enable_related_badges: bool = True
    show_badge_lmi: bool = False
    show_lmi_jobs: bool = False
    show_skill_tag_links: bool = True
    vanity_slug: str = ""
    record_to_blockchain: bool | None = None
    translatable: bool = False
    printing_disabled: bool = False
    variants_allowed: bool = False
    variant_type: str = ""
    variant_name: str = ""
    primary_badge_template_id: str = ""
    available_locales: list[str] = field(default_factory=list)
    only_one_skill_required: bool = False
    linkedin_share_default_message: str = ""
    level: Level | None = None
    time_to_earn: TimeToEarn | None = None
    cost: Cost | None = None
    type_category: TypeCategory | None = None
    criteria_url_name: str = ""
    criteria_url: str = ""
    certification: bool = False
    image_url: str = ""
    alignments: list[Alignment] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    required_badge_template_ids: list[str] = field(default_factory=list)
    activities: list[Activity] = field(default_factory=list)
    skills: list[str] = field(default_factory=list)
    endorsements: list[Endorsement] = field(default_factory=list)
    reporting_tags: list[str] = field(default_factory=list)
    collection_ids: list[str] = field(default_factory=list)
    # Set by the service.
    id: str = ""
    org_id: int = 0
    image_id: str = ""
    badges_count: int = 0
    state_updated_at: dt.datetime | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    @property
    def default_expires_at(self) -> dt.datetime | None:
        """The instant badges expire by default, for a fixed expiry date."""
        if self.default_expires_at_type is not ExpiryType.DATE or not self.default_expires_at_date:
            return None
        return dt.datetime.combine(
            dt.date.fromisoformat(self.default_expires_at_date), UTC_MIDNIGHT
        )

    @property
    def allow_delete(self) -> bool:
        """Whether the template may be deleted: no badges of it were issued."""
        return self.badges_count == 0

    @property
    def allow_archive(self) -> bool:
        """Whether the template may be archived now."""
        return self.state is TemplateState.ACTIVE

    def referenced_ids(self) -> set[str]:
        """Every other template this one names (well-formed UUIDs only; the rest fail
        validation by themselves)."""
        ids = {*self.required_badge_template_ids, self.primary_badge_template_id}
        ids.update(a.required_badge_template_id for a in self.activities)
        ids.update(r.recommended_badge_template_id for r in self.recommendations)
        return {i.lower() for i in ids if _UUID.match(i)}

    def requirement_ids(self) -> set[str]:
        """The templates an earner must hold first: required templates and badge activities."""
        ids = set(self.required_badge_template_ids)
        ids.update(a.required_badge_template_id for a in self.activities)
        ids.discard("")
        return ids


# -- identifiers ------------------------------------------------------------------------------


def new_uuid() -> str:
    """A new random UUID in Credly's lower-case form."""
    return str(uuid.uuid4())


def parse_template_id(value: str, where: str = "id") -> str:
    """A template id from a request, lower-cased; INVALID_ARGUMENT unless it is a UUID."""
    if not value:
        raise InvalidArgument(where, "is required")
    if not _UUID.match(value):
        raise InvalidArgument(where, "must be a badge template UUID")
    return value.lower()


def check_organization(given: str, caller_uuid: str) -> None:
    """Credly names the organisation in every path; it must be the caller's, and another
    organisation's id looks exactly like one that does not exist."""
    if not given:
        raise InvalidArgument("organization_id", "is required")
    if given.lower() != caller_uuid.lower():
        raise NotFound("organization", given)


# -- errors -----------------------------------------------------------------------------------


def referenced_template_gone() -> Aborted:
    """A template this one names was deleted between the check and the write."""
    return Aborted(
        "a badge template this one names was deleted meanwhile; retry",
        reason="CONCURRENT_CHANGE",
    )


def slug_taken(slug: str) -> AlreadyExists:
    """Another template of the organisation has this vanity slug."""
    return AlreadyExists(
        f"a badge template with vanity_slug {slug!r} already exists",
        reason="VANITY_SLUG_TAKEN",
        metadata={"vanity_slug": slug},
    )


def unknown_template(where: str, template_id: str) -> InvalidArgument:
    """A reference to a template the organisation does not have."""
    return InvalidArgument(
        where,
        f"names badge template {template_id}, which this organisation does not have",
        reason="UNKNOWN_BADGE_TEMPLATE",
    )


def template_in_use(template_id: str, users: Mapping[str, Sequence[str]]) -> FailedPrecondition:
    """The template cannot be deleted while other templates point at it."""
    parts = [f"{how}: {', '.join(ids)}" for how, ids in users.items() if ids]
    return FailedPrecondition(
        f"badge template {template_id} is still used by other templates ({'; '.join(parts)})",
        reason="BADGE_TEMPLATE_IN_USE",
        metadata={how: ",".join(ids) for how, ids in users.items() if ids},
    )


def template_has_badges(template: BadgeTemplate) -> FailedPrecondition:
    """Issued badges keep their template; archive it instead."""
    return FailedPrecondition(
        f"badge template {template.id} has {template.badges_count} issued badges; archive it",
        reason="BADGE_TEMPLATE_HAS_BADGES",
        metadata={"badges_count": str(template.badges_count)},
    )


# -- state machine ----------------------------------------------------------------------------


def _bad_transition(old: TemplateState, new: TemplateState, how: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"a {old.value} badge template cannot become {new.value}{how}",
        reason="INVALID_STATE_TRANSITION",
        metadata={"state": old.value, "requested_state": new.value},
    )


def apply_state_change(
    template: BadgeTemplate, old: TemplateState | None, now: dt.datetime
) -> None:
    """Checks the state an update asks for against the stored one and stamps
    state_updated_at when it changes. Update may only publish a draft (draft to active);
    archiving is ArchiveBadgeTemplate's and UnarchiveBadgeTemplate's."""
    new = template.state
    if old is None:  # creating
        if new is None:
            template.state = TemplateState.DRAFT
        elif new is TemplateState.ARCHIVED:
            raise InvalidArgument(
                f"{PREFIX}.state", "must be draft or active on create; archive it afterwards"
            )
        return
    if new is None or new is old:
        template.state = old
        return
    if old is TemplateState.DRAFT and new is TemplateState.ACTIVE:
        template.state_updated_at = now
        return
    if new is TemplateState.ARCHIVED:
        raise _bad_transition(old, new, " through UpdateBadgeTemplate; use ArchiveBadgeTemplate")
    if old is TemplateState.ARCHIVED:
        raise _bad_transition(old, new, " through UpdateBadgeTemplate; use UnarchiveBadgeTemplate")
    raise _bad_transition(old, new, "")


def archive(template: BadgeTemplate, now: dt.datetime) -> None:
    """active -> archived. A draft was never issued, so it is deleted rather than archived."""
    if template.state is not TemplateState.ACTIVE:
        assert template.state is not None
        raise _bad_transition(template.state, TemplateState.ARCHIVED, "; only active can")
    template.state = TemplateState.ARCHIVED
    template.state_updated_at = template.updated_at = now


def unarchive(template: BadgeTemplate, now: dt.datetime) -> None:
    """archived -> active."""
    if template.state is not TemplateState.ARCHIVED:
        assert template.state is not None
        raise _bad_transition(template.state, TemplateState.ACTIVE, "; only archived is unarchived")
    template.state = TemplateState.ACTIVE
    template.state_updated_at = template.updated_at = now


# -- slugs and links --------------------------------------------------------------------------


def slugify(text: str) -> str:
    """Lower-case ASCII words joined by hyphens ("Badge Template 1" -> "badge-template-1")."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:SLUG_MAX].rstrip("-")


def slug_candidates(name: str, template_id: str) -> Iterator[str]:
    """Slugs to try for a template without one: from the name, then numbered, then one that
    cannot be taken (the template's own id)."""
    base = slugify(name)[: SLUG_MAX - 4].rstrip("-") or "badge-template"
    yield base
    for n in range(2, 10):
        yield f"{base}-{n}"
    yield template_id


def org_slug(name: str, org_uuid: str) -> str:
    """The organisation's slug in page URLs."""
    return slugify(name) or org_uuid


@dataclass(frozen=True, slots=True)
class Owner:
    """The organisation owning templates, as Credly shows it."""

    id: str
    name: str
    slug: str
    base_url: str

    @property
    def url(self) -> str:
        """The organisation's API URL."""
        return f"{self.base_url}/organizations/{self.id}"

    @property
    def vanity_url(self) -> str:
        """The organisation's public page."""
        return f"{self.base_url}/org/{self.slug}"

    def template_url(self, vanity_slug: str) -> str:
        """The public page of one of its templates."""
        return f"{self.vanity_url}/badge/{vanity_slug}"


# -- validation -------------------------------------------------------------------------------


def _sub_id(value: str, where: str, seen: set[str]) -> str:
    if not value:
        value = new_uuid()
    elif not _UUID.match(value):
        raise InvalidArgument(where, "must be a UUID (or empty to have one made)")
    value = value.lower()
    if value in seen:
        raise InvalidArgument(where, f"repeats the id {value}")
    seen.add(value)
    return value


def _reference(
    value: str, where: str, template_id: str, refs: Mapping[str, TemplateRef]
) -> TemplateRef:
    if not _UUID.match(value):
        raise InvalidArgument(where, "must be a badge template UUID")
    value = value.lower()
    if value == template_id:
        raise InvalidArgument(where, "must name another badge template, not this one")
    ref = refs.get(value)
    if ref is None:
        raise unknown_template(where, value)
    return ref


def _labels(values: list[str], where: str, *, what: str) -> list[str]:
    limits.check_items(values, limits.BADGE_TEMPLATE_LIST_ITEMS, where, what)
    out: list[str] = []
    seen: set[str] = set()
    for i, raw in enumerate(values):
        value = raw.strip()
        check_text(value, f"{where}[{i}]", required=True, limit=_TEXT)
        if "," in value or "|" in value:
            raise InvalidArgument(f"{where}[{i}]", "must not contain ',' or '|'")
        if value.lower() in seen:
            raise InvalidArgument(f"{where}[{i}]", f"repeats {value!r} (case is ignored)")
        seen.add(value.lower())
        out.append(value)
    return out


def validate_template(
    t: BadgeTemplate,
    *,
    refs: Mapping[str, TemplateRef],
    requirement_edges: Iterable[tuple[str, str]] = (),
    has_variants: bool = False,
    prefix: str = PREFIX,
) -> BadgeTemplate:
    """Checks every rule of a template whose id is set and whose state has been settled, and
    fills in what the service makes (sub-object ids, default titles).

    ``refs`` holds the organisation's templates this one names (see referenced_ids);
    ``requirement_edges`` the organisation's (template, required template) pairs, for the cycle
    check; ``has_variants`` whether other templates name this one as their primary.
    """
    p = prefix
    _check_reference_count(t, p)
    t.visibility = t.visibility or Visibility.PUBLIC
    t.name = t.name.strip()
    check_text(t.name, f"{p}.name", required=True, limit=_TEXT)
    check_text(t.description, f"{p}.description", limit=limits.BADGE_TEMPLATE_LONG_TEXT_CHARS)
    for name in ("variant_type", "variant_name", "criteria_url_name"):
        check_text(getattr(t, name), f"{p}.{name}", limit=_TEXT)
    check_text(
        t.linkedin_share_default_message,
        f"{p}.linkedin_share_default_message",
        limit=limits.BADGE_TEMPLATE_LONG_TEXT_CHARS,
    )
    for name in ("earn_this_badge_url", "global_activity_url", "criteria_url", "image_url"):
        check_http_url(getattr(t, name), f"{p}.{name}")
    if t.enable_earn_this_badge and not t.earn_this_badge_url:
        raise InvalidArgument(f"{p}.earn_this_badge_url", "is required with enable_earn_this_badge")
    _check_expiry(t, p)
    if t.vanity_slug:
        check_text(t.vanity_slug, f"{p}.vanity_slug", limit=limits.BADGE_TEMPLATE_SLUG_CHARS)
        if not is_slug(t.vanity_slug):
            raise InvalidArgument(
                f"{p}.vanity_slug", "must be lower-case letters and digits joined by single '-'"
            )
    _check_locales(t, p)
    t.skills = _labels(t.skills, f"{p}.skills", what="skills")
    t.reporting_tags = _labels(t.reporting_tags, f"{p}.reporting_tags", what="reporting tags")
    _check_collections(t, p)
    _check_alignments(t, p)
    _check_endorsements(t, p)
    _check_recommendations(t, p, refs)
    _check_requirements(t, p, refs, requirement_edges)
    _check_variant(t, p, refs, has_variants)
    return t


def reference_count(t: BadgeTemplate) -> int:
    """How many references to other templates a template shows with their names (required
    templates, badge activities, badge recommendations): each costs its reply a card."""
    return (
        len(t.required_badge_template_ids)
        + sum(1 for a in t.activities if a.required_badge_template_id)
        + sum(1 for r in t.recommendations if r.type is RecommendationType.BADGE)
    )


def _check_reference_count(t: BadgeTemplate, p: str) -> None:
    count = reference_count(t)
    if count > limits.BADGE_TEMPLATE_REFERENCES:
        raise LimitExceeded(
            p,
            f"names {count} other templates (required templates, badge activities and badge "
            f"recommendations together); at most {limits.BADGE_TEMPLATE_REFERENCES}",
            limits.BADGE_TEMPLATE_REFERENCES.name,
            limits.BADGE_TEMPLATE_REFERENCES,
        )


def _check_expiry(t: BadgeTemplate, p: str) -> None:
    kind = t.default_expires_at_type
    if kind is ExpiryType.DATE:
        where = f"{p}.default_expires_at_date"
        if not t.default_expires_at_date:
            raise InvalidArgument(where, "is required when default_expires_at_type is date")
        if not is_date_text(t.default_expires_at_date):
            raise InvalidArgument(where, "must be a date YYYY-MM-DD")
        try:
            dt.date.fromisoformat(t.default_expires_at_date)
        except ValueError:
            raise InvalidArgument(where, "is not a real date") from None
    elif t.default_expires_at_date:
        raise InvalidArgument(
            f"{p}.default_expires_at_date", "is only allowed when default_expires_at_type is date"
        )
    if kind is ExpiryType.DURATION:
        if not 1 <= t.default_expires_in_days <= EXPIRY_DAYS_MAX:
            raise InvalidArgument(
                f"{p}.default_expires_in_days", f"must be between 1 and {EXPIRY_DAYS_MAX}"
            )
    elif t.default_expires_in_days:
        raise InvalidArgument(
            f"{p}.default_expires_in_days",
            "is only allowed when default_expires_at_type is duration",
        )


def _check_locales(t: BadgeTemplate, p: str) -> None:
    limits.check_items(
        t.available_locales, limits.BADGE_TEMPLATE_LOCALES, f"{p}.available_locales", "locales"
    )
    seen: set[str] = set()
    for i, loc in enumerate(t.available_locales):
        where = f"{p}.available_locales[{i}]"
        if len(loc) > 35 or not _LOCALE.match(loc):
            raise InvalidArgument(where, "must be a locale such as 'en' or 'pt-BR'")
        if loc.lower() in seen:
            raise InvalidArgument(where, f"repeats {loc!r}")
        seen.add(loc.lower())


def _check_collections(t: BadgeTemplate, p: str) -> None:
    limits.check_items(
        t.collection_ids, limits.BADGE_TEMPLATE_LIST_ITEMS, f"{p}.collection_ids", "ids"
    )
    seen: set[str] = set()
    out = []
    for i, cid in enumerate(t.collection_ids):
        where = f"{p}.collection_ids[{i}]"
        if not _UUID.match(cid):
            raise InvalidArgument(where, "must be a collection UUID")
        if cid.lower() in seen:
            raise InvalidArgument(where, f"repeats {cid.lower()}")
        seen.add(cid.lower())
        out.append(cid.lower())
    t.collection_ids = out


def _check_alignments(t: BadgeTemplate, p: str) -> None:
    limits.check_items(
        t.alignments, limits.BADGE_TEMPLATE_LIST_ITEMS, f"{p}.alignments", "alignments"
    )
    seen: set[str] = set()
    for i, a in enumerate(t.alignments):
        where = f"{p}.alignments[{i}]"
        a.id = _sub_id(a.id, f"{where}.id", seen)
        check_text(a.name, f"{where}.name", required=True, limit=_TEXT)
        check_http_url(a.url, f"{where}.url")
        check_text(
            a.description, f"{where}.description", limit=limits.BADGE_TEMPLATE_LONG_TEXT_CHARS
        )


def _check_endorsements(t: BadgeTemplate, p: str) -> None:
    limits.check_items(
        t.endorsements, limits.BADGE_TEMPLATE_LIST_ITEMS, f"{p}.endorsements", "endorsements"
    )
    seen: set[str] = set()
    for i, e in enumerate(t.endorsements):
        where = f"{p}.endorsements[{i}]"
        e.id = _sub_id(e.id, f"{where}.id", seen)
        check_text(e.name, f"{where}.name", required=True, limit=_TEXT)
        check_http_url(e.url, f"{where}.url")
        check_text(
            e.description, f"{where}.description", limit=limits.BADGE_TEMPLATE_LONG_TEXT_CHARS
        )


def _check_recommendations(t: BadgeTemplate, p: str, refs: Mapping[str, TemplateRef]) -> None:
    limits.check_items(
        t.recommendations,
        limits.BADGE_TEMPLATE_LIST_ITEMS,
        f"{p}.recommendations",
        "recommendations",
    )
    seen: set[str] = set()
    for i, r in enumerate(t.recommendations):
        where = f"{p}.recommendations[{i}]"
        r.id = _sub_id(r.id, f"{where}.id", seen)
        check_text(r.title, f"{where}.title", limit=_TEXT)
        if r.type is None:
            raise InvalidArgument(f"{where}.type", "is required: information or badge")
        if r.type is RecommendationType.INFORMATION:
            if not r.title.strip():
                raise InvalidArgument(f"{where}.title", "is required for an information one")
            if r.recommended_badge_template_id:
                raise InvalidArgument(
                    f"{where}.recommended_badge_template_id", "is only for badge recommendations"
                )
            check_http_url(r.activity_url, f"{where}.activity_url")
            continue
        if r.activity_url:
            raise InvalidArgument(f"{where}.activity_url", "is only for information ones")
        if not r.recommended_badge_template_id:
            raise InvalidArgument(
                f"{where}.recommended_badge_template_id", "is required for a badge recommendation"
            )
        ref = _reference(
            r.recommended_badge_template_id, f"{where}.recommended_badge_template_id", t.id, refs
        )
        r.recommended_badge_template_id = ref.id
        if not r.title.strip():
            r.title = ref.name


def _check_requirements(
    t: BadgeTemplate,
    p: str,
    refs: Mapping[str, TemplateRef],
    edges: Iterable[tuple[str, str]],
) -> None:
    where = f"{p}.required_badge_templates"
    limits.check_items(
        t.required_badge_template_ids, limits.BADGE_TEMPLATE_LIST_ITEMS, where, "templates"
    )
    required: list[str] = []
    for i, rid in enumerate(t.required_badge_template_ids):
        ref = _reference(rid, f"{where}[{i}].id", t.id, refs)
        if ref.id in required:
            raise InvalidArgument(f"{where}[{i}].id", f"repeats {ref.id}")
        required.append(ref.id)
    t.required_badge_template_ids = required
    limits.check_items(
        t.activities,
        limits.BADGE_TEMPLATE_LIST_ITEMS,
        f"{p}.badge_template_activities",
        "activities",
    )
    seen: set[str] = set()
    for i, a in enumerate(t.activities):
        aw = f"{p}.badge_template_activities[{i}]"
        a.id = _sub_id(a.id, f"{aw}.id", seen)
        check_text(a.title, f"{aw}.title", required=True, limit=_TEXT)
        check_text(a.activity_type, f"{aw}.activity_type", limit=_TEXT)
        check_http_url(a.activity_url, f"{aw}.activity_url")
        if a.required_badge_template_id:
            ref = _reference(
                a.required_badge_template_id, f"{aw}.required_badge_template_id", t.id, refs
            )
            a.required_badge_template_id = ref.id
            if not a.activity_type:
                a.activity_type = BADGE_ACTIVITY_TYPE
            elif a.activity_type != BADGE_ACTIVITY_TYPE:
                raise InvalidArgument(
                    f"{aw}.activity_type",
                    f"must be {BADGE_ACTIVITY_TYPE!r} with required_badge_template_id",
                )
        elif not a.activity_type.strip():
            raise InvalidArgument(f"{aw}.activity_type", "is required")
    cycle = requirement_cycle(t.id, t.requirement_ids(), edges)
    if cycle:
        raise InvalidArgument(
            where,
            "would make a cycle of required templates: " + " -> ".join(cycle),
            reason="REQUIREMENT_CYCLE",
        )


def requirement_cycle(
    template_id: str, required: Iterable[str], edges: Iterable[tuple[str, str]]
) -> list[str] | None:
    """The path back to ``template_id`` if it required ``required``, given the other
    templates' (template, required) edges; None when there is no cycle."""
    graph: dict[str, list[str]] = {}
    for src, dst in edges:
        if src != template_id:
            graph.setdefault(src, []).append(dst)
    for start in sorted(set(required)):
        # Iterative DFS with parent links, so a long chain cannot overflow the stack.
        parent: dict[str, str | None] = {start: None}
        stack = [start]
        while stack:
            node = stack.pop()
            if node == template_id:
                path = [node]
                step = parent[node]
                while step is not None:
                    path.append(step)
                    step = parent[step]
                return [template_id, *reversed(path)]
            for nxt in graph.get(node, ()):
                if nxt not in parent:
                    parent[nxt] = node
                    stack.append(nxt)
    return None


def _check_variant(
    t: BadgeTemplate, p: str, refs: Mapping[str, TemplateRef], has_variants: bool
) -> None:
    if has_variants and not t.variants_allowed:
        raise InvalidArgument(
            f"{p}.variants_allowed", "must stay true while other templates are its variants"
        )
    if not t.primary_badge_template_id:
        if t.variant_name:
            raise InvalidArgument(f"{p}.variant_name", "is only for a variant")
        return
    where = f"{p}.primary_badge_template_id"
    ref = _reference(t.primary_badge_template_id, where, t.id, refs)
    if ref.primary_badge_template_id:
        raise InvalidArgument(where, "names a variant; name its primary template instead")
    if not ref.variants_allowed:
        raise InvalidArgument(where, "names a template that does not allow variants")
    if has_variants:
        raise InvalidArgument(where, "cannot be set on a template that has variants itself")
    if not t.variant_name.strip():
        raise InvalidArgument(f"{p}.variant_name", "is required for a variant")
    t.primary_badge_template_id = ref.id

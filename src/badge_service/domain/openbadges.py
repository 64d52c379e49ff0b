"""Open Badges 2.0 documents: the openBadgeIds of issuers and badge classes under the public
base URL (as Badgr forms them), their Profile and BadgeClass documents, the Assertions of badge
class awards, and how a presented assertion is checked against the award it claims to be.

An award of a Badgr badge class is an Open Badges 2.0 Assertion with hosted verification:
its ``id`` is ``{public base URL}/public/assertions/{award id}`` and its ``badge`` the class's
openBadgeId. The recipient is never shown in clear: ``identity`` is ``sha256$`` + the hex
SHA-256 of the identity followed by the award's own salt, so equal recipients of different
awards have unrelated hashes. The identity type follows the recipient: ``email`` (the
normalised, lower-cased address), ``url``, or ``id`` for a member id (the IdentityObject
types the Open Badges validator recognises are id, email, url and telephone), hashed as the
member id string itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlsplit

from badge_service.domain.awards import Award, AwardState, Recipient, RecipientKind
from badge_service.domain.badge_classes import BadgeClass
from badge_service.domain.errors import FailedPrecondition
from badge_service.domain.fields import is_http_url
from badge_service.domain.ids import is_hex_id
from badge_service.domain.issuers import Issuer

OB2_CONTEXT = "https://w3id.org/openbadges/v2"

# Path segments of openBadgeIds under the public base URL, as Badgr's.
ISSUERS_PATH = "issuers"
BADGE_CLASSES_PATH = "badges"
ASSERTIONS_PATH = "assertions"
# The issuer's RevocationList, under its openBadgeId.
REVOCATIONS_PATH = "revocations"
VERIFICATION_HOSTED = "hosted"
HASH_PREFIX = "sha256$"

# IdentityObject.type of each recipient kind.
IDENTITY_TYPES = {
    RecipientKind.EMAIL: "email",
    RecipientKind.URL: "url",
    RecipientKind.MEMBER_ID: "id",
}

# What a presented assertion must agree on with the award it names: the claim itself (who,
# what, when). Status fields (revoked, expires) come from the store, never from the image.
MATCHED_PROPERTIES = ("id", "type", "recipient", "badge", "issuedOn")


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


def open_badges_issuer(issuer: Issuer, base_url: str) -> dict[str, Any]:
    """The Open Badges 2.0 Profile of an issuer (type Issuer)."""
    doc: dict[str, Any] = {
        "@context": OB2_CONTEXT,
        "type": "Issuer",
        "id": open_badge_id(base_url, ISSUERS_PATH, issuer.entity_id),
        "name": issuer.name,
        "url": issuer.url,
        "email": issuer.email,
        "revocationList": revocation_list_url(base_url, issuer.entity_id),
    }
    if issuer.description:
        doc["description"] = issuer.description
    if issuer.image:
        doc["image"] = issuer.image
    return doc


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


def revocation_list_url(base_url: str, issuer_entity_id: str) -> str:
    """Where an issuer's RevocationList is hosted: ``{openBadgeId}/revocations``."""
    return f"{open_badge_id(base_url, ISSUERS_PATH, issuer_entity_id)}/{REVOCATIONS_PATH}"


def revocation_list(base_url: str, issuer_entity_id: str, revoked: list[Award]) -> dict[str, Any]:
    """The Open Badges 2.0 RevocationList of an issuer: each revoked assertion's id, with its
    reason when it has one."""
    entries = []
    for award in revoked:
        entry = {"id": assertion_url(base_url, award.id)}
        if award.revocation_reason:
            entry["revocationReason"] = award.revocation_reason
        entries.append(entry)
    return {
        "@context": OB2_CONTEXT,
        "type": "RevocationList",
        "id": revocation_list_url(base_url, issuer_entity_id),
        "issuer": open_badge_id(base_url, ISSUERS_PATH, issuer_entity_id),
        "revokedAssertions": entries,
    }


def revoked_assertion(award: Award, base_url: str) -> dict[str, Any]:
    """What the hosted URL of a revoked assertion answers (with 410 Gone), as Open Badges 2.0
    hosted verification says: its ``id`` and ``revoked``, and the reason when there is one.
    Nothing else: a verifier reads it as revoked only in this form."""
    doc: dict[str, Any] = {"id": assertion_url(base_url, award.id), "revoked": True}
    if award.revocation_reason:
        doc["revocationReason"] = award.revocation_reason
    return doc


def assertion_url(base_url: str, award_id: str) -> str:
    """The hosted verification URL (and Assertion id) of an award."""
    return f"{base_url}/public/{ASSERTIONS_PATH}/{award_id}"


def award_id_of(value: str, base_url: str) -> str | None:
    """The award id an assertion reference names: a 24-hex id, or our hosted URL of one.
    None when it cannot name an award of this service."""
    value = value.strip()
    if is_hex_id(value):
        return value
    prefix = f"{base_url}/public/{ASSERTIONS_PATH}/"
    if value.startswith(prefix):
        rest = value[len(prefix) :].rstrip("/")
        if is_hex_id(rest):
            return rest
    return None


def identity_hash(identity: str, salt: str) -> str:
    """``sha256$`` + hex(sha256(identity + salt)), as Open Badges hashes a recipient."""
    return HASH_PREFIX + hashlib.sha256((identity + salt).encode("utf-8")).hexdigest()


def identity_object(recipient: Recipient, salt: str) -> dict[str, Any]:
    """The hashed IdentityObject of a recipient."""
    return {
        "type": IDENTITY_TYPES[recipient.kind],
        "hashed": True,
        "salt": salt,
        "identity": identity_hash(recipient.value, salt),
    }


def iso8601(value: dt.datetime) -> str:
    """An ISO 8601 date-time in UTC with a ``Z`` (microseconds only when there are some)."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def assertion(award: Award, *, base_url: str, class_entity_id: str) -> dict[str, Any]:
    """The Open Badges 2.0 Assertion of a badge class award (hosted verification)."""
    assert award.issued_at is not None
    doc: dict[str, Any] = {
        "@context": OB2_CONTEXT,
        "type": "Assertion",
        "id": assertion_url(base_url, award.id),
        "recipient": identity_object(award.recipient, award.salt),
        "badge": open_badge_id(base_url, BADGE_CLASSES_PATH, class_entity_id),
        "verification": {"type": VERIFICATION_HOSTED},
        "issuedOn": iso8601(award.issued_at),
    }
    if award.expires_at is not None:
        doc["expires"] = iso8601(award.expires_at)
    if award.narrative:
        doc["narrative"] = award.narrative
    if award.evidence:
        evidence = []
        for ev in award.evidence:
            item: dict[str, Any] = {"type": "Evidence"}
            if ev.url:
                item["id"] = ev.url
            if ev.narrative:
                item["narrative"] = ev.narrative
            evidence.append(item)
        doc["evidence"] = evidence
    doc["revoked"] = award.revoked_at is not None
    if award.revoked_at is not None:
        doc["revocationReason"] = award.revocation_reason
    return doc


def to_json(doc: dict[str, Any]) -> str:
    """Compact, key-ordered JSON text of a document (what a baked image carries). ASCII
    only: escaped characters travel safely in any PNG chunk or XML document (XML cannot hold
    U+FFFE, for one)."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def parse_embedded(text: str) -> dict[str, Any] | str | None:
    """What a baked image carries: an assertion document (dict), an assertion URL (str), or
    None when it is neither (not JSON of an object, not an http(s) URL)."""
    text = text.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None
    return text if is_http_url(text) else None


def mismatch(presented: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """The first claim property on which a presented assertion differs from the award's own
    Assertion (a tampered or forged document), or None when they agree."""
    for name in MATCHED_PROPERTIES:
        a, b = presented.get(name), expected.get(name)
        if name == "recipient" and isinstance(a, dict) and isinstance(b, dict):
            # Compare the hash in constant time; the other fields are public anyway.
            same = (
                {k: v for k, v in a.items() if k != "identity"}
                == {k: v for k, v in b.items() if k != "identity"}
                and isinstance(a.get("identity"), str)
                and hmac.compare_digest(str(a["identity"]), str(b["identity"]))
            )
        else:
            same = a == b
        if not same:
            return name
    return None


def not_an_open_badge(award: Award) -> FailedPrecondition:
    """Only badge class awards are Open Badges assertions (so only they can be baked)."""
    return FailedPrecondition(
        f"award {award.id} is not of a badge class; only badge class awards are Open Badges "
        "assertions",
        reason="AWARD_NOT_OPEN_BADGE",
        metadata={"id": award.id, "kind": award.kind.value},
    )


# The verdicts of VerifyAward, by award state.
VERDICT_REASONS = {
    AwardState.ACTIVE: "the assertion is valid: issued by this organisation, not revoked, "
    "not expired",
    AwardState.REVOKED: "the assertion was revoked",
    AwardState.EXPIRED: "the assertion expired",
}

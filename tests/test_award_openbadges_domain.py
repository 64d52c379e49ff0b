"""Open Badges 2.0 documents without a server: a checker of the specification's required
properties for Assertion, IdentityObject, BadgeClass and Profile (written from the spec, so
the service's output is not trusted to check itself), the Assertion of an award, and how a
presented assertion is matched against its award."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

import pytest

from badge_service.domain import badge_classes, issuers, openbadges
from badge_service.domain.awards import (
    Award,
    AwardKind,
    Evidence,
    Recipient,
    RecipientKind,
)

OB2_CONTEXT = "https://w3id.org/openbadges/v2"
BASE = "https://badges.example.com"
AWARD_ID = "65f0a1b2c3d4e5f600000001"
CLASS_ENTITY = "AbCdEfGhIjKlMnOpQrStUv"
ISSUER_ENTITY = "ZyXwVuTsRqPoNmLkJiHgFe"

_IRI = re.compile(r"^(?:https?://[^\s/]+\S*|urn:[a-z0-9][a-z0-9-]*:\S+)$", re.IGNORECASE)
_URL = re.compile(r"^https?://[^\s/]+\S*$")
_DATA_URI = re.compile(r"^data:image/[a-z0-9.+-]+;base64,[A-Za-z0-9+/]+=*$")
# ISO 8601 / xsd:dateTime with a time zone (Open Badges 2.0 DateTime).
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$")
_HASH = re.compile(r"^(?:sha256\$[0-9a-f]{64}|md5\$[0-9a-f]{32})$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def _types(doc: dict[str, Any]) -> list[Any]:
    t = doc.get("type")
    return t if isinstance(t, list) else [t]


def _text(doc: dict[str, Any], name: str, where: str, problems: list[str], required: bool) -> None:
    if name not in doc:
        if required:
            problems.append(f"{where}.{name} is required")
        return
    if not isinstance(doc[name], str) or (required and not doc[name]):
        problems.append(f"{where}.{name} must be text")


def _match(
    doc: dict[str, Any],
    name: str,
    pattern: re.Pattern[str],
    where: str,
    problems: list[str],
    required: bool,
) -> None:
    if name not in doc:
        if required:
            problems.append(f"{where}.{name} is required")
        return
    value = doc[name]
    if not isinstance(value, str) or not pattern.match(value):
        problems.append(f"{where}.{name} {value!r} does not match {pattern.pattern}")


def check_identity_object(doc: Any, where: str = "recipient") -> list[str]:
    """IdentityObject: type (id|email|url|telephone), identity, hashed (boolean), salt."""
    if not isinstance(doc, dict):
        return [f"{where} must be an IdentityObject"]
    problems: list[str] = []
    if doc.get("type") not in ("id", "email", "url", "telephone"):
        problems.append(f"{where}.type must be id, email, url or telephone")
    if not isinstance(doc.get("hashed"), bool):
        problems.append(f"{where}.hashed is required and must be a boolean")
    _text(doc, "identity", where, problems, required=True)
    _text(doc, "salt", where, problems, required=False)
    identity = doc.get("identity")
    if doc.get("hashed") is True and isinstance(identity, str) and not _HASH.match(identity):
        problems.append(f"{where}.identity must be an IdentityHash when hashed")
    if doc.get("hashed") is False and isinstance(identity, str) and _HASH.match(identity):
        problems.append(f"{where}.identity must not be a hash when not hashed")
    return problems


def check_assertion(doc: dict[str, Any]) -> list[str]:
    """Assertion: id, type, recipient, badge, verification, issuedOn required; expires,
    evidence, narrative, revoked and revocationReason well-formed when present."""
    problems: list[str] = []
    if doc.get("@context") != OB2_CONTEXT:
        problems.append("@context must be the Open Badges 2.0 context")
    if "Assertion" not in _types(doc):
        problems.append("type must contain Assertion")
    _match(doc, "id", _IRI, "assertion", problems, required=True)
    problems += check_identity_object(doc.get("recipient"))
    badge = doc.get("badge")
    if isinstance(badge, dict):
        problems += check_badge_class(badge)
    elif not isinstance(badge, str) or not _IRI.match(badge):
        problems.append("assertion.badge must be a BadgeClass IRI or document")
    verification = doc.get("verification")
    if not isinstance(verification, dict) or verification.get("type") not in (
        "hosted",
        "HostedBadge",
        "signed",
        "SignedBadge",
    ):
        problems.append("assertion.verification must be a VerificationObject (hosted/signed)")
    _match(doc, "issuedOn", _DATETIME, "assertion", problems, required=True)
    _match(doc, "expires", _DATETIME, "assertion", problems, required=False)
    _text(doc, "narrative", "assertion", problems, required=False)
    if "evidence" in doc:
        items = doc["evidence"] if isinstance(doc["evidence"], list) else [doc["evidence"]]
        for i, ev in enumerate(items):
            if isinstance(ev, str):
                if not _IRI.match(ev):
                    problems.append(f"assertion.evidence[{i}] must be an IRI")
            elif not isinstance(ev, dict) or not ("id" in ev or "narrative" in ev):
                problems.append(f"assertion.evidence[{i}] must have an id or a narrative")
    if "revoked" in doc and not isinstance(doc["revoked"], bool):
        problems.append("assertion.revoked must be a boolean")
    if "revocationReason" in doc and doc.get("revoked") is not True:
        problems.append("assertion.revocationReason only belongs to a revoked assertion")
    return problems


def check_badge_class(doc: dict[str, Any]) -> list[str]:
    """BadgeClass: id, type, name, description, image, criteria, issuer required."""
    problems: list[str] = []
    if "BadgeClass" not in _types(doc):
        problems.append("type must contain BadgeClass")
    _match(doc, "id", _IRI, "badge_class", problems, required=True)
    _text(doc, "name", "badge_class", problems, required=True)
    _text(doc, "description", "badge_class", problems, required=True)
    image = doc.get("image")
    if not isinstance(image, str) or not (_URL.match(image) or _DATA_URI.match(image)):
        problems.append("badge_class.image must be a URL or a data URI")
    criteria = doc.get("criteria")
    if isinstance(criteria, str):
        if not _IRI.match(criteria):
            problems.append("badge_class.criteria must be an IRI")
    elif not isinstance(criteria, dict) or not (criteria.get("id") or criteria.get("narrative")):
        problems.append("badge_class.criteria needs an id or a narrative")
    issuer = doc.get("issuer")
    if isinstance(issuer, dict):
        problems += check_profile(issuer)
    elif not isinstance(issuer, str) or not _IRI.match(issuer):
        problems.append("badge_class.issuer must be a Profile IRI or document")
    for i, a in enumerate(doc.get("alignment", [])):
        if not isinstance(a, dict) or not a.get("targetName") or not a.get("targetUrl"):
            problems.append(f"badge_class.alignment[{i}] needs targetName and targetUrl")
    tags = doc.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        problems.append("badge_class.tags must be a list of text")
    return problems


def check_profile(doc: dict[str, Any]) -> list[str]:
    """Profile as an issuer: id, type, name, url, email required."""
    problems: list[str] = []
    if not {"Issuer", "Profile"} & set(_types(doc)):
        problems.append("type must contain Issuer or Profile")
    _match(doc, "id", _IRI, "profile", problems, required=True)
    _text(doc, "name", "profile", problems, required=True)
    _match(doc, "url", _URL, "profile", problems, required=True)
    _match(doc, "email", _EMAIL, "profile", problems, required=True)
    return problems


def award(**changes: Any) -> Award:
    values: dict[str, Any] = {
        "kind": AwardKind.CLASS,
        "recipient": Recipient(RecipientKind.EMAIL, "alice@example.org"),
        "badge_class_id": "65f0a1b2c3d4e5f6000000aa",
        "issued_at": dt.datetime(2026, 11, 23, 14, 0, 5, tzinfo=dt.UTC),
        "salt": "0123456789abcdef",
        "id": AWARD_ID,
        "org_id": 1,
    }
    values.update(changes)
    return Award(**values)


def assertion_of(a: Award) -> dict[str, Any]:
    return openbadges.assertion(a, base_url=BASE, class_entity_id=CLASS_ENTITY)


# --- The checker can fail ---------------------------------------------------------------------


def test_checker_flags_missing_and_malformed_properties() -> None:
    doc = assertion_of(award())
    assert check_assertion(doc) == []
    for name in ("id", "recipient", "badge", "verification", "issuedOn"):
        broken = {k: v for k, v in doc.items() if k != name}
        assert check_assertion(broken), name
    assert check_assertion(doc | {"issuedOn": "2026-11-23 14:00"})
    assert check_assertion(doc | {"verification": {"type": "emailed"}})
    assert check_assertion(doc | {"recipient": doc["recipient"] | {"hashed": "true"}})
    assert check_assertion(doc | {"recipient": doc["recipient"] | {"identity": "alice"}})
    assert check_assertion(doc | {"recipient": doc["recipient"] | {"type": "member"}})
    assert check_assertion(doc | {"revocationReason": "x"})
    assert check_profile({"type": "Issuer", "id": f"{BASE}/x", "name": "n", "url": "u"})
    assert check_badge_class({"type": "BadgeClass", "id": f"{BASE}/b", "name": "n"})


# --- Assertions ----------------------------------------------------------------------------------


def test_assertion_of_a_plain_award() -> None:
    a = award()
    doc = assertion_of(a)
    salted = hashlib.sha256(b"alice@example.org0123456789abcdef").hexdigest()
    assert doc == {
        "@context": OB2_CONTEXT,
        "type": "Assertion",
        "id": f"{BASE}/public/assertions/{AWARD_ID}",
        "recipient": {
            "type": "email",
            "hashed": True,
            "salt": "0123456789abcdef",
            "identity": f"sha256${salted}",
        },
        "badge": f"{BASE}/public/badges/{CLASS_ENTITY}",
        "verification": {"type": "hosted"},
        "issuedOn": "2026-11-23T14:00:05Z",
        "revoked": False,
    }
    assert check_assertion(doc) == []


def test_assertion_with_every_optional_property() -> None:
    a = award(
        recipient=Recipient(RecipientKind.MEMBER_ID, "42"),
        narrative="Passed the **final**.",
        evidence=[Evidence(url="https://example.org/work"), Evidence(narrative="Observed")],
        expires_at=dt.datetime(2027, 1, 1, 0, 0, 0, 250000, tzinfo=dt.UTC),
        revoked_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        revocation_reason="Issued in error",
    )
    doc = assertion_of(a)
    assert check_assertion(doc) == []
    assert doc["recipient"]["type"] == "id"
    assert doc["recipient"]["identity"] == (
        "sha256$" + hashlib.sha256(b"420123456789abcdef").hexdigest()
    )
    assert doc["expires"] == "2027-01-01T00:00:00.250000Z"
    assert doc["narrative"] == "Passed the **final**."
    assert doc["evidence"] == [
        {"type": "Evidence", "id": "https://example.org/work"},
        {"type": "Evidence", "narrative": "Observed"},
    ]
    assert (doc["revoked"], doc["revocationReason"]) == (True, "Issued in error")


def test_url_recipients_hash_the_url() -> None:
    doc = assertion_of(award(recipient=Recipient(RecipientKind.URL, "https://alice.example")))
    assert doc["recipient"]["type"] == "url"
    assert doc["recipient"]["identity"] == openbadges.identity_hash(
        "https://alice.example", "0123456789abcdef"
    )


def test_salts_make_equal_recipients_unlinkable() -> None:
    one = assertion_of(award(salt="aaaaaaaaaaaaaaaa"))["recipient"]["identity"]
    two = assertion_of(award(salt="bbbbbbbbbbbbbbbb"))["recipient"]["identity"]
    assert one != two


def test_badge_class_and_issuer_documents_pass_the_checker() -> None:
    bc = badge_classes.BadgeClass(
        name="Math Expert",
        description="Mastery of Math.",
        image="https://example.com/math.png",
        criteria_narrative="Pass the final exam.",
        alignments=[badge_classes.Alignment("Algebra", "https://example.org/algebra")],
        tags=["math"],
        entity_id=CLASS_ENTITY,
        issuer_entity_id=ISSUER_ENTITY,
    )
    doc = openbadges.open_badges_badge_class(bc, BASE)
    assert check_badge_class(doc) == []
    assert doc["id"] == assertion_of(award())["badge"]
    issuer = issuers.Issuer(
        name="Faculty",
        email="contact@example.com",
        url="https://example.com",
        entity_id=ISSUER_ENTITY,
    )
    profile = openbadges.open_badges_issuer(issuer, BASE)
    assert check_profile(profile) == []
    assert profile["id"] == doc["issuer"]


# --- References and matching -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (AWARD_ID, AWARD_ID),
        (f"  {AWARD_ID} ", AWARD_ID),
        (f"{BASE}/public/assertions/{AWARD_ID}", AWARD_ID),
        (f"{BASE}/public/assertions/{AWARD_ID}/", AWARD_ID),
        (f"https://elsewhere.example/public/assertions/{AWARD_ID}", None),
        (f"{BASE}/public/badges/{AWARD_ID}", None),
        (f"{BASE}/public/assertions/not-an-id", None),
        ("65F0A1B2C3D4E5F600000001", None),
        ("", None),
    ],
)
def test_award_id_of(value: str, expected: str | None) -> None:
    assert openbadges.award_id_of(value, BASE) == expected


def test_parse_embedded() -> None:
    assert openbadges.parse_embedded(' {"id": "x"} ') == {"id": "x"}
    assert openbadges.parse_embedded(f"{BASE}/public/assertions/{AWARD_ID}") == (
        f"{BASE}/public/assertions/{AWARD_ID}"
    )
    assert openbadges.parse_embedded("{not json") is None
    assert openbadges.parse_embedded("[1, 2]") is None
    assert openbadges.parse_embedded("hello") is None


def test_mismatch_names_the_tampered_claim() -> None:
    expected = assertion_of(award())
    assert openbadges.mismatch(dict(expected), expected) is None
    # Status properties come from the store, not from the presented document.
    assert openbadges.mismatch(expected | {"revoked": True, "expires": "x"}, expected) is None
    other = openbadges.identity_hash("mallory@example.org", "0123456789abcdef")
    assert (
        openbadges.mismatch(
            expected | {"recipient": expected["recipient"] | {"identity": other}}, expected
        )
        == "recipient"
    )
    assert (
        openbadges.mismatch(
            expected | {"recipient": expected["recipient"] | {"salt": "x"}}, expected
        )
        == "recipient"
    )
    assert openbadges.mismatch(expected | {"badge": f"{BASE}/public/badges/x"}, expected) == "badge"
    assert (
        openbadges.mismatch(expected | {"issuedOn": "2020-01-01T00:00:00Z"}, expected) == "issuedOn"
    )
    assert (
        openbadges.mismatch({k: v for k, v in expected.items() if k != "type"}, expected) == "type"
    )
    assert openbadges.mismatch(expected | {"recipient": "alice"}, expected) == "recipient"


def test_to_json_is_ascii_and_round_trips() -> None:
    import json

    doc = assertion_of(award(narrative="über \ufffe 🏅 ]]>"))
    text = openbadges.to_json(doc)
    assert text.isascii()
    assert json.loads(text) == doc

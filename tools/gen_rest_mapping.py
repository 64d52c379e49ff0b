"""Generates docs/rest-mapping.md from the ``google.api.http`` annotations (``make docs``).

Every service of every generated ``*_pb2`` module under ``badge_service.api.badges.v1`` gets a
section, so a new service appears as soon as its code is generated. The rows (method, path,
path/query/body fields, types) come from the descriptors; only the prose about each vendor's
envelope and error codes lives here, in ``SERVICE_DOCS``. A service missing from it still gets
its rows, under the vendor "badge-service". The output is deterministic, which lets
``tests/test_contract.py`` compare it with the committed file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from badge_service.rpc.interceptor import write_methods

ROOT = Path(__file__).resolve().parent.parent
OUT_DEFAULT = ROOT / "docs" / "rest-mapping.md"
API_PACKAGE = "badge_service.api.badges.v1"
DEFAULT_VENDOR = "badge-service"

# A route under /v1/ is the project's own (served generically by transcoding, the reply
# message as proto3 JSON, errors as google.rpc.Status JSON); any other path is a vendor's,
# served in that vendor's envelope. The vendor of a path, by its first segments:
OWN_PREFIX = "/v1/"
OWN_VENDOR = "badge-service (own)"
VENDOR_PREFIXES = {
    "/api_gateway/": "Capillary",
    "/v2.1/": "CrowdTwist v2.1",
    "/organizations/": "Credly",
    "/v2/": "Badgr v2",
}
_PATH_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
_PATTERNS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class VendorError:
    """One row of a service's error table: what the vendor answers and what we answer."""

    vendor: str
    status: str
    reason: str
    when: str


@dataclass(frozen=True)
class ServiceDoc:
    """The hand-written part of a service's section."""

    vendor: str
    source: str
    envelope: str
    errors: tuple[VendorError, ...] = field(default_factory=tuple)
    # How the HTTP face serves the vendor's paths (http/rest/<vendor>.py): what a client of
    # the vendor gets, and what we chose where its seed is silent. Empty: not served there.
    http: str = ""


_CAPILLARY_ENVELOPE = (
    "Capillary wraps every answer in `{data, errors, warnings}`. Over gRPC, `data` *is* the "
    "reply message (its proto3 JSON uses the same lowerCamelCase names, e.g. `orgId`, "
    "`isMandatory`, `lastUpdatedBy`; Capillary's epoch-second floats become "
    "`google.protobuf.Timestamp`). A non-empty `errors` array becomes a non-OK gRPC status "
    'whose `google.rpc.ErrorInfo` carries the Capillary code in `metadata["code"]`, with a '
    "`BadRequest` naming the field for bad input. `warnings` has no counterpart: the service "
    "never answers with a partial success. Capillary's Basic authentication is "
    "`authorization: Basic base64(ORG_ID:KEY)`."
)

_CAPILLARY_HTTP = (
    "The HTTP face serves these paths as Capillary does (`http/rest/capillary.py`), through "
    "the RPCs: every answer is `{data, errors, warnings}`, a failure "
    '`{"data": null, "errors": [{"code", "message"}], "warnings": []}`. The seed shows no '
    "HTTP status for its codes: 740, 741, 742 and 744 are answered 400 (Capillary's API "
    "answers its coded validation errors as client errors, a taken name included, not 409); "
    "any other failure has the HTTP status of its gRPC code, which is then also the entry's "
    "`code` (401, 403, 404, ...). `message` is the RPC's. The key: `authorization: Basic "
    "base64(ORG_ID:KEY)` (a 401 asks for Basic), `Bearer KEY` or `x-api-key`. A request's "
    "`dataType` is taken in any case; booleans also as 0/1 or text; `defaultValue` also as a "
    "number or boolean (written as text). Read-only keys (`id`, `orgId`, the audit fields) and "
    "keys Capillary does not define are ignored, as its API ignores them, so an object a "
    "client got can be sent back as it is. A body that is not a JSON object is 400 with code "
    "400."
)

_BADGR_ENVELOPE = (
    "Badgr answers `{status: {success, description}, result: [...]}` plus `validationErrors`, "
    "`fieldErrors` and `nonFieldErrors`. Over gRPC `success: true` is status OK and "
    "`result[0]` is the reply message; a DELETE's empty 204 answer is `google.protobuf.Empty`. "
    "`success: false` becomes a non-OK status: `fieldErrors`/`validationErrors` are "
    "`BadRequest` field violations, and the reason Badgr gives in `errorCode` or "
    "`nonFieldErrors` is the `ErrorInfo` reason."
)

_CREDLY_HTTP = (
    "The paths above answer as Credly does (`http/rest/credly.py`): `{data, metadata}`, "
    "templates with the seed's snake_case attributes in its order (`null` for what is not set, "
    "lower-case `state`, `visibility`, `default_expires_at_type` and recommendation `type`, "
    "title-case `level`, `time_to_earn`, `cost`, `type_category`, times as "
    "`2014-04-01T14:41:00.000Z`, the seed's spelling `recommended_badg_template_url`), then the "
    "service's own `default_expires_in_days` and `collection_ids`; a list's items leave out "
    "`recommending_templates` and `criterion_for`, as the seed's do, and a single template's "
    "`metadata` is `{}`. `previous_page_url` and `next_page_url` are absolute URLs on the host "
    "the request came to, keeping `filter` and `sort` (and `page_size` when not 50). Where the "
    "seed is silent: create is `POST` with the template as the body (bare or in "
    "`badge_template`; a string `image` is `image_url`; `?request_id=` for retries) and "
    "answers 201; update is `PUT` or `PATCH` and changes only the attributes the body names "
    "(`null` clears one; what the service computes is ignored, so a template read can be sent "
    "back; a body naming none is still the update RPC, refused to a reader key); `DELETE` "
    "answers 200 `{data: {}, metadata: {}}`; `archive` and `unarchive` take "
    "`POST` or `PUT`. Failures are `{data: {message, errors: [{attribute, messages}], code}, "
    "metadata: {}}`, `code` being the ErrorInfo reason: 400 for a bad `filter`, `sort` or "
    "`page`, or a body that is not JSON of the right types (code `INVALID_REQUEST`); 422 for "
    "an invalid template; 404 for an unknown template, a template id that is not a UUID, or an "
    "`organization_id` that is not the caller's; 409 as below; 401 (with "
    "`WWW-Authenticate: Basic`) and 403. Credly's Basic authentication, the API token as user "
    'name with no password (`curl -u "$KEY:"`), is taken as the key.'
)

_BADGR_HTTP = (
    "The paths above answer as Badgr v2 does (`http/rest/badgr.py`): `{status: {success, "
    "description}, result: [...], timestamp, validationErrors, nonFieldErrors, fieldErrors, "
    "errorCode, warnings, latestTermsVersion}` in the seed's order (on success `description` "
    "is `ok`, the error members empty, `errorCode` and `latestTermsVersion` `null`); resources "
    "with the seed's camelCase names in its order (then the service's `updatedAt`), staff roles "
    "and expiry units in lower case (`staff`, `days`), property kinds in upper case "
    "(`STRING_CHOICE`, `BADGE_CLASS`), times as `2025-04-24T21:19:39.363Z`, unset objects "
    "`null` and `extensions` `{}`. The `openBadgeId/` and `ref/` forms take the rest of the "
    "path, so a standard base64 holding `/` works. Every DELETE answers the seed's 204 with no "
    "body (the seed's sample body cannot go with a 204); `?cascade=true` sets `cascade`. Where "
    "the seed is silent: creates are `POST` with the resource as the body (camelCase or "
    "snake_case; `?request_id=` for retries) and answer 201, `POST "
    "/v2/issuers/{issuer}/badgeclasses` taking the issuer from the path; updates are `PUT` or "
    "`PATCH` and change only the fields the body names (ids, dates and a class's issuer are "
    "ignored, so a resource read can be sent back; a body naming none is still the update RPC, "
    "refused to a reader key); a list without `num` answers every item "
    "(up to 40 of the RPC's pages: 1,000 issuers or classes, 2,000 claim codes; past that, and "
    'with `num`, a `Link: <...>; rel="next"` header names the next page by `cursor`); '
    "`?issuer=` and `?archived=` filter badge classes; claim codes are "
    "`POST .../claim-codes` (`count`, `label`, "
    "`useLimit`, `expiresAt`; 201) and `GET`. Failures set `success: false`, the RPC's message "
    "as `description`, each field violation in `fieldErrors` (camelCase, without the request's "
    "resource prefix) and in `validationErrors` as `field: message`, a failure without a field "
    "in `nonFieldErrors`, and the ErrorInfo reason as `errorCode` (`INVALID_REQUEST` for a "
    "body that is not JSON of the right types, or an unknown enum word); statuses: 400 for bad "
    "input and FAILED_PRECONDITION, 404, 409 for ALREADY_EXISTS and ABORTED, 401 (with "
    "`WWW-Authenticate: Bearer`), 403. Badgr's `authorization: Bearer KEY` is forwarded as it is."
)

# The HTTP statuses every vendor uses, and the gRPC status and ErrorInfo reason we send instead.
COMMON_ERRORS = (
    VendorError(
        "HTTP 400 / 422",
        "INVALID_ARGUMENT",
        "INVALID_FIELD (or a rule's own reason)",
        'bad input; `BadRequest` names the field, `metadata["field"]` too',
    ),
    VendorError(
        "HTTP 401",
        "UNAUTHENTICATED",
        "MISSING_CREDENTIALS, MALFORMED_CREDENTIALS, INVALID_API_KEY",
        "no key, an unreadable `authorization` header, or a key that is unknown or revoked",
    ),
    VendorError(
        "HTTP 403",
        "PERMISSION_DENIED",
        "WRITE_REQUIRES_ADMIN",
        "a `reader` key called a method that writes",
    ),
    VendorError(
        "HTTP 404",
        "NOT_FOUND",
        "NOT_FOUND",
        "no such resource in the caller's organisation (another org's resources are "
        "indistinguishable from missing ones); `metadata` has `resource` and `id`",
    ),
    VendorError(
        "HTTP 409",
        "ALREADY_EXISTS or FAILED_PRECONDITION",
        "the rule's reason",
        "ALREADY_EXISTS when a unique key is taken; FAILED_PRECONDITION when the resource's "
        "state forbids the call",
    ),
    VendorError(
        "HTTP 503",
        "UNAVAILABLE",
        "(none)",
        "the store did not answer; safe to retry",
    ),
    VendorError(
        "HTTP 500",
        "INTERNAL",
        "(none)",
        "a fault of ours, logged with its trace; the trace is never sent",
    ),
)

SERVICE_DOCS: dict[str, ServiceDoc] = {
    "badges.v1.OrgMetaService": ServiceDoc(
        vendor="Capillary",
        source="seed 000: `GET /api_gateway/v1/badges/orgMeta`",
        envelope=_CAPILLARY_ENVELOPE
        + " Every organisation has exactly one org meta, so no id appears in the path.",
        http=_CAPILLARY_HTTP
        + " The org meta is answered exactly as seed 000 shows it: `id`, `orgId`, `tags` "
        "(`key`, `dataType`, `description`, `mandatory`), epoch-second `createdOn` and "
        "`lastUpdatedOn`, `createdBy`, `lastUpdatedBy`, and `errors`/`warnings` null; "
        "`dataType` in lower case (`string`), as the seed writes it, where custom fields "
        'write upper case. `PUT` takes `{"tags": [...]}` (the whole `data` object GET '
        'answered is fine): the tags given replace all of them, `"tags": []` removes them '
        "all, and a body without `tags` changes nothing.",
        errors=(
            VendorError(
                "HTTP 400",
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
                "a tag without key or data type, or a repeated key",
            ),
        ),
    ),
    "badges.v1.CustomFieldService": ServiceDoc(
        vendor="Capillary",
        source="seed 002: `POST /api_gateway/v1/badges/customField`",
        envelope=_CAPILLARY_ENVELOPE,
        http=_CAPILLARY_HTTP
        + " A custom field is answered exactly as seed 002 shows it, keys in its order (`id`, "
        "`orgId`, `name`, `isMandatory`, `defaultValue` (null when none), `isActive`, "
        "`dataType` in upper case, `createdOn`, `createdOnISO`, `createdBy`, `lastUpdatedOn`, "
        "`lastUpdatedOnISO`, `lastUpdatedBy`), with `errors` and `warnings` empty arrays. "
        "The seed has only `POST`; where it is silent: `GET .../customField` answers every "
        "field as the `data` array, oldest first (all pages: an org has at most 100); "
        "`PATCH` (or `PUT`) `.../customField/{id}` changes the keys the body has (null "
        "clears one) and must pass the create rules (740...744); `DELETE` answers `data` "
        "null. `?request_id=UUID` makes a `POST` safe to retry, as over gRPC.",
        errors=(
            VendorError(
                "740",
                "ALREADY_EXISTS",
                "CUSTOM_FIELD_NAME_TAKEN",
                "the org already has a custom field of this name (case sensitive)",
            ),
            VendorError(
                "741",
                "INVALID_ARGUMENT",
                "DATA_TYPE_REQUIRED",
                "`data_type` is missing",
            ),
            VendorError(
                "742",
                "INVALID_ARGUMENT",
                "MANDATORY_DEFAULT_REQUIRED",
                "a mandatory field has no `default_value`",
            ),
            VendorError(
                "744",
                "INVALID_ARGUMENT",
                "DEFAULT_VALUE_TYPE_MISMATCH",
                "`default_value` is not of `data_type` (e.g. not a number for INTEGER)",
            ),
        ),
    ),
    "badges.v1.BadgeService": ServiceDoc(
        vendor="CrowdTwist v2.1",
        source="seed 001: `GET /v2.1/badges?page=&page_size=`",
        envelope=(
            "CrowdTwist answers a list with `{paging, badges}`; `ListBadgesResponse` has the "
            "same two fields. `paging` keeps `total` and `pages`; CrowdTwist's `next_page` / "
            "`prev_page` URLs become page numbers (`next_page`, `prev_page`) plus the URL paths "
            "(`next_page_url`, `prev_page_url`), and the out-of-range rules are CrowdTwist's. "
            "A single badge is answered as the `Badge` message itself. CrowdTwist's "
            "`is_enabled: 1` is a bool, the state strings `unearned`/`in progress`/`earned` "
            "are `BadgeStateType` values, `freq_period_id`/`freq_period_name` are derived from "
            "`freq_period`. The `api_key` query parameter becomes the `x-api-key` header "
            "(or `authorization: Bearer`). HTTP errors become gRPC statuses as below. The "
            "page URLs keep every filter of the request (`is_enabled`, `tag_name`, "
            "`earnable_at`, `displayable_at`) after `page` and `page_size`, so a link names "
            "the same filtered list."
        ),
        http=(
            "The HTTP face serves these paths as CrowdTwist does (`http/rest/crowdtwist.py`), "
            "through the RPCs. A badge is the seed's object, keys in its sample's order: "
            "`id` an integer (the seed's table says Integer; its sample quotes it), "
            '`badge_states` (the sample\'s `"badge_states "` with a blank is taken too), '
            "`state` `unearned`/`in progress`/`earned`, dates as `2019-05-03T19:01:23.000Z` "
            "(null when unset), `is_enabled` 1 or 0, `frequency` with `freq_cap`, "
            "`freq_period_id`, `freq_period_name` (`week`, lower case as in the sample) and "
            "`freq_max` (null when unset), `tags`, `badge_extra_data` (an object), `segment` "
            "with `eligibility_type` `inclusion`/`exclusion`. Requests take `is_enabled` as "
            "0/1, true/false or their text; the period by `freq_period_id` or "
            "`freq_period_name`; states and eligibility in any case; dates with or without a "
            'time or offset (none is UTC). A list is `{"paging": {total, pages, next_page, '
            'prev_page}, "badges": [...]}`: the links are absolute URLs on the host the '
            "client called, null when there is none, keep every filter (`is_enabled`, "
            "`tag_name`, `earnable_at`, `displayable_at` as ISO-8601) and `page_size`, and "
            "the request's `api_key` when it came as a query parameter (the seed's sample "
            "links end with `api_key=`), so they work as they are. The paging rules are the "
            "RPC's; an unreadable `page` is the first page, as the seed says, and an "
            "unreadable `page_size` the default. The key: `?api_key=`, `x-api-key` or "
            "`authorization: Bearer`. Where the seed is silent (it shows only the list): "
            "`GET /v2.1/badges/{id}` answers the badge; `POST /v2.1/badges` 201 with it and "
            "`Location`; `PATCH` (or `PUT`) `/v2.1/badges/{id}` changes the keys the body has "
            "(null clears one); `DELETE` answers 204; an id that is not a number is 404. "
            'Errors are `{"error": {"code": <HTTP status>, "message", "reason", "field"}}` '
            "(`reason` the ErrorInfo reason, `field` when one is named) with the HTTP status "
            "of the gRPC code: 400 bad input, 401, 403, 404 (another org's badge too), 409 a "
            "taken name. Keys the seed does not define are ignored."
        ),
        errors=(
            VendorError(
                "HTTP 409",
                "ALREADY_EXISTS",
                "BADGE_NAME_TAKEN",
                "the org already has a badge of this `name`",
            ),
            VendorError(
                "HTTP 400",
                "INVALID_ARGUMENT",
                "UNKNOWN_TAG, MANDATORY_TAG_MISSING",
                "a badge tag is not an org meta tag key, or a mandatory org meta tag is missing",
            ),
            VendorError(
                "HTTP 400",
                "INVALID_ARGUMENT",
                "UNKNOWN_CUSTOM_FIELD, EXTRA_DATA_TYPE_MISMATCH",
                "`badge_extra_data` names no active custom field, or a value is not of its type",
            ),
        ),
    ),
    "badges.v1.BadgeTemplateService": ServiceDoc(
        vendor="Credly",
        source="seed 003: `GET /organizations/{organization_id}/badge_templates`",
        envelope=(
            "Credly answers `{data, metadata}`. For a single template `data` is the reply "
            "message itself. For a list, `data` is `ListBadgeTemplatesResponse.badge_templates` "
            "and Credly's `metadata` is its `metadata` field (`count`, `current_page`, "
            "`total_count`, `total_pages`, `per`, `previous_page_url`, `next_page_url`; 50 a "
            "page). `filter=key::value|...` and `sort=key|-key` keep Credly's syntax in the "
            "request fields of the same names. The `organization_id` in the path must be the "
            "caller's organisation, or the call fails with NOT_FOUND. Credly's HTTP errors "
            "become gRPC statuses as below."
        ),
        http=_CREDLY_HTTP,
        errors=(
            VendorError(
                "HTTP 400",
                "INVALID_ARGUMENT",
                "INVALID_FILTER, INVALID_SORT",
                "`filter` or `sort` is not in Credly's syntax or names an unknown key",
            ),
            VendorError(
                "HTTP 422",
                "INVALID_ARGUMENT",
                "UNKNOWN_BADGE_TEMPLATE, REQUIREMENT_CYCLE",
                "a template names a template the org does not have, or requirements form a cycle",
            ),
            VendorError(
                "HTTP 409",
                "ALREADY_EXISTS",
                "VANITY_SLUG_TAKEN",
                "another template of the org has this `vanity_slug`",
            ),
            VendorError(
                "HTTP 409",
                "FAILED_PRECONDITION",
                "BADGE_TEMPLATE_IN_USE, BADGE_TEMPLATE_HAS_BADGES, INVALID_STATE_TRANSITION",
                "delete of a template other templates name or with issued badges (archive it), "
                "or a state change Credly does not allow",
            ),
            VendorError(
                "HTTP 409",
                "ABORTED",
                "CONCURRENT_CHANGE",
                "a template this one names was deleted meanwhile; retry",
            ),
        ),
    ),
    "badges.v1.IssuerService": ServiceDoc(
        vendor="Badgr v2",
        source="seed 004: `/v2/issuers/...`",
        envelope=_BADGR_ENVELOPE
        + " Lookups keep Badgr's keys: `id_or_entity_id`, `issuer_open_badge_id_base64`, `ref`.",
        http=_BADGR_HTTP,
        errors=(
            VendorError(
                "`success: false`",
                "FAILED_PRECONDITION",
                "ISSUER_HAS_BADGE_CLASSES",
                "delete of an issuer that still has badge classes, without `cascade`",
            ),
        ),
    ),
    "badges.v1.BadgeClassService": ServiceDoc(
        vendor="Badgr v2",
        source="seed 004: `/v2/badgeclasses/...`",
        envelope=_BADGR_ENVELOPE
        + " Lookups keep Badgr's keys: `id_or_entity_id`, `ref`, and `claim_code` for a badge "
        "class's claim codes.",
        http=_BADGR_HTTP,
        errors=(
            VendorError(
                "`success: false`",
                "FAILED_PRECONDITION",
                "BADGE_CLASS_AWARDED",
                "delete of a badge class that has been awarded, without `cascade`",
            ),
            VendorError(
                "`success: false`",
                "FAILED_PRECONDITION",
                "BADGE_CLASS_ARCHIVED",
                "claim codes for an archived badge class",
            ),
        ),
    ),
    "badges.v1.AwardService": ServiceDoc(
        vendor="badge-service",
        source="no seed: awarding badges is this service's own API",
        envelope=(
            "No vendor envelope: the reply message is the resource itself, and failures are "
            "gRPC statuses with `ErrorInfo` as below."
        ),
        http=(
            "`RedeemClaimCode` sits at Badgr's claim code path and answers as Badgr does (see "
            "BadgeClassService): `POST` with `recipient`, `narrative`, `evidence` (camelCase or "
            "snake_case), 201 with the award in `result` (camelCase, `state` in lower case), "
            "failures in Badgr's envelope."
        ),
    ),
}

_UNKNOWN_DOC = ServiceDoc(
    vendor=DEFAULT_VENDOR,
    source="no seed",
    envelope=(
        "No vendor envelope: the reply message is the resource itself, and failures are gRPC "
        "statuses with `ErrorInfo` as below."
    ),
)


@dataclass(frozen=True)
class Route:
    """One HTTP binding of an RPC."""

    verb: str
    path: str
    body: str
    response_body: str


def services() -> list[ServiceDescriptor]:
    """Every service of every generated ``*_pb2`` module, in a fixed order.

    Services named in SERVICE_DOCS come in its order (vendor by vendor, as the seeds are
    numbered); any other service follows, sorted by full name.
    """
    package = importlib.import_module(API_PACKAGE)
    found: dict[str, ServiceDescriptor] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"{API_PACKAGE}.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            found[service.full_name] = service
    order = {name: i for i, name in enumerate(SERVICE_DOCS)}
    return sorted(found.values(), key=lambda s: (order.get(s.full_name, len(order)), s.full_name))


def routes(method: MethodDescriptor) -> list[Route]:
    """The method's HTTP bindings: the main rule, then each additional binding."""
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    out = []
    for r in [rule, *rule.additional_bindings]:
        route = _route(r)
        if route is not None:
            out.append(route)
    return out


def _route(rule: http_pb2.HttpRule) -> Route | None:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        return None
    if kind == "custom":
        return Route(rule.custom.kind.upper(), rule.custom.path, rule.body, rule.response_body)
    assert kind in _PATTERNS, kind
    return Route(kind.upper(), getattr(rule, kind), rule.body, rule.response_body)


def route_vendor(route: Route, service_vendor: str) -> str:
    """Whose route it is: the project's own under ``/v1/``, else the vendor of its path."""
    if route.path.startswith(OWN_PREFIX):
        return OWN_VENDOR
    for prefix, vendor in VENDOR_PREFIXES.items():
        if route.path.startswith(prefix):
            return vendor
    return service_vendor


def path_fields(route: Route) -> list[str]:
    """The request fields bound in the path template, in template order."""
    return _PATH_VARIABLE.findall(route.path)


def query_fields(method: MethodDescriptor, route: Route) -> list[str]:
    """Request fields that travel as query parameters: neither in the path nor the body."""
    if route.body == "*":
        return []
    bound = {p.split(".", 1)[0] for p in path_fields(route)}
    fields = method.input_type.fields_by_name
    # A path that sets one member of a oneof (e.g. Badgr's lookup keys) rules out the others.
    chosen = {
        oneof.full_name
        for name in bound
        if name in fields and (oneof := fields[name].containing_oneof) is not None
    }
    out = []
    for f in method.input_type.fields:
        if f.name in bound or f.name == route.body:
            continue
        if f.containing_oneof is not None and f.containing_oneof.full_name in chosen:
            continue
        out.append(f.name)
    return out


def _code(items: Iterable[str]) -> str:
    parts = [f"`{i}`" for i in items]
    return ", ".join(parts) if parts else "-"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _body(method: MethodDescriptor, route: Route) -> str:
    if not route.body:
        return "-"
    if route.body == "*":
        return f"`*` (the whole `{method.input_type.name}`)"
    return f"`{route.body}`"


def _role(method: MethodDescriptor) -> str:
    # The same rule the interceptor enforces, so the table cannot disagree with the server.
    writes = write_methods([method.containing_service])
    return "admin" if writes[f"/{method.containing_service.full_name}/{method.name}"] else "reader"


def _response(method: MethodDescriptor, route: Route) -> str:
    out = _type_name(method.output_type.full_name)
    return f"{out} (`{route.response_body}`)" if route.response_body else out


def _type_name(full_name: str) -> str:
    return full_name.removeprefix("badges.v1.")


def render() -> str:
    """The whole document."""
    found = services()
    lines = [
        "<!-- Generated by tools/gen_rest_mapping.py (`make docs`) from the google.api.http",
        "     annotations in protos/badges/v1. Do not edit; a test fails when it is stale. -->",
        "",
        "# REST to gRPC mapping",
        "",
        "Every vendor endpoint the service replaces, and the RPC that serves it. The HTTP",
        "method and path of each row are the RPC's `google.api.http` annotation, so Envoy's",
        "gRPC-JSON transcoder or grpc-gateway can serve the same paths with no code. *Path*",
        "fields are bound from the URL, *query* fields from query parameters (proto or",
        "lowerCamelCase names), and *body* is the request field the JSON body fills. *Key*",
        "is the least role that may call it: `reader` keys may call GET methods and reads marked",
        "`idempotency_level = NO_SIDE_EFFECTS` only.",
        "",
        "Credentials: `authorization: Bearer KEY`, `authorization: Basic base64(ORG_ID:KEY)`",
        "or `x-api-key: KEY` (a key a vendor takes as an `api_key` query parameter goes in",
        "`x-api-key`). The organisation is always the caller's; no request field can name",
        "another.",
        "",
        "Errors: every failure is a canonical gRPC status with `google.rpc.Status` details,",
        '`ErrorInfo{reason, domain: "badges.v1", metadata}` and, for bad input, `BadRequest`',
        'naming the field. A vendor\'s numeric error code rides in `ErrorInfo.metadata["code"]`.',
        "Each service's section maps its vendor's envelope and errors; a client never gets",
        "`UNKNOWN`.",
        "",
        "Rows whose vendor is *badge-service (own)* are the project's own routes (paths under",
        "`/v1/`, every RPC has one): the HTTP face serves them by transcoding, as grpc-gateway",
        "would, with the reply message as proto3 JSON (lowerCamelCase), `google.protobuf.Empty`",
        "as `{}` and errors as `google.rpc.Status` JSON with the standard HTTP status of their",
        "code; a streaming RPC answers newline-delimited JSON. Their OpenAPI 3.1 document is",
        "served at `/openapi.json` and committed as `docs/openapi.json`. Every other row is a",
        "vendor's path, served in that vendor's envelope.",
        "",
        "Every row is checked: `tests/test_rest_mapping.py` calls each row over HTTP and the",
        "same operation over gRPC (its RPC, same org, same input) and compares the outcomes",
        "(status, body, error), on SQLite and PostgreSQL; a row without a case there fails.",
        "",
        "## Services",
        "",
        "| service | vendor | source | RPCs |",
        "| --- | --- | --- | --- |",
    ]
    for service in found:
        doc = SERVICE_DOCS.get(service.full_name, _UNKNOWN_DOC)
        anchor = service.name.lower()
        lines.append(
            f"| [`{service.full_name}`](#{anchor}) | {doc.vendor} | {_cell(doc.source)} "
            f"| {len(service.methods)} |"
        )
    for service in found:
        lines += ["", *_service_section(service)]
    return "\n".join(lines) + "\n"


def _service_section(service: ServiceDescriptor) -> list[str]:
    doc = SERVICE_DOCS.get(service.full_name, _UNKNOWN_DOC)
    lines = [
        f"## {service.name}",
        "",
        f"`{service.full_name}`: {doc.vendor} ({_cell(doc.source)}).",
        "",
        "| vendor | HTTP | path | gRPC method | request -> response | path fields "
        "| query fields | body | key |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in service.methods:
        bindings = routes(method)
        grpc_method = f"`/{service.full_name}/{method.name}`"
        if not bindings:
            types = (
                f"{_type_name(method.input_type.full_name)} -> "
                f"{_type_name(method.output_type.full_name)}"
            )
            lines.append(
                f"| {doc.vendor} | - | (no google.api.http annotation) | {grpc_method} "
                f"| {types} | - | - | - | admin |"
            )
            continue
        for route in bindings:
            types = f"{_type_name(method.input_type.full_name)} -> {_response(method, route)}"
            lines.append(
                f"| {route_vendor(route, doc.vendor)} | {route.verb} | `{_cell(route.path)}` "
                f"| {grpc_method} "
                f"| {types} | {_code(path_fields(route))} "
                f"| {_code(query_fields(method, route))} | {_body(method, route)} "
                f"| {_role(method)} |"
            )
    lines += [
        "",
        f"**Envelope.** {doc.envelope}",
        "",
        *([f"**Over HTTP.** {doc.http}", ""] if doc.http else []),
        f"**Errors.** {doc.vendor}'s errors and what the service answers instead:",
        "",
        *_error_table([*doc.errors, *COMMON_ERRORS]),
    ]
    return lines


def _error_table(rows: Iterable[VendorError]) -> list[str]:
    out = [
        "| vendor error | gRPC status | ErrorInfo reason | when |",
        "| --- | --- | --- | --- |",
    ]
    for e in rows:
        out.append(f"| {e.vendor} | {e.status} | {_cell(e.reason)} | {_cell(e.when)} |")
    return out


def main() -> None:
    """Entry point: write the document (or check that the committed one is current)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT_DEFAULT)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from the output"
    )
    args = parser.parse_args()
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            raise SystemExit(f"{args.out} is stale: run make docs")
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.out.exists() or args.out.read_text() != text:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

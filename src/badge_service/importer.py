"""``badge-service import VENDOR FILE...``: a vendor's API answers, read as that vendor's REST
face reads its bodies, written through the import use cases (service/imports.py) with every
id kept.

A file holds what the vendor's API returned: one answer (a list page such as CrowdTwist's
``{"paging", "badges"}``, Credly's ``{"data": [...], "metadata"}``, Badgr's ``{"status",
"result"}``, or a single object, enveloped or bare), a JSON array of them, or several of them
one after another (pages appended to one file, JSON Lines). Each object is a record, named in
reports by its file, its position (``#2 badges[3]``: the second document, its fourth badge) and
its kept id.

Records are decoded by the vendor modules of the HTTP face (``http/rest``: the same spellings,
the loose scalars, CrowdTwist's ``"badge_states "`` with a blank), then by the gRPC transport's
converters into domain values, so an imported object meets exactly the rules a created one
does. A record that cannot be read is reported with the key at fault and why; the others go in.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid as uuid_module
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from badge_service.api.badges.v1 import badge_class_pb2, badge_template_pb2, issuer_pb2
from badge_service.domain.errors import DomainError, InvalidArgument
from badge_service.domain.ids import is_entity_id, is_hex_id
from badge_service.http.rest import capillary, credly, crowdtwist
from badge_service.http.rest.message_json import BadBody, parse_into, proto_doc
from badge_service.http.rest.vendor_json import BadInput, as_int, as_timestamp
from badge_service.rpc import badge_classes as class_rpc
from badge_service.rpc import badge_templates as template_rpc
from badge_service.rpc import badges as badge_rpc
from badge_service.rpc import custom_fields as field_rpc
from badge_service.rpc import issuers as issuer_rpc
from badge_service.rpc import org_meta as org_meta_rpc
from badge_service.rpc.convert import stored_size
from badge_service.service import imports
from badge_service.service.db import Database

# Vendors whose jobs are synchronous transaction functions (see service.imports.run_import).
_SYNC = {"crowdtwist"}
# The key of each vendor's envelope that holds its objects.
_ENVELOPES = {
    "crowdtwist": ("badges",),
    "capillary": ("data",),
    "credly": ("data",),
    "badgr": ("result",),
}


class Unreadable(Exception):
    """A file that is not JSON: the whole file is refused, naming where it stops parsing."""


@dataclass(slots=True)
class Record:
    """One object of a file: where it is, its kept id (as the report names it) and what it
    is; the Item the import runs."""

    file: str
    position: str
    key: str
    kind: str
    item: imports.Item
    warnings: list[str] = field(default_factory=list)
    # The kept ids of the records this one names (a Credly template's required templates).
    depends: list[str] = field(default_factory=list)


def documents(text: str, name: str) -> Iterator[Any]:
    """The JSON values of a file's text, one after another (one document, JSON Lines, or
    pages appended to one another)."""
    decoder = json.JSONDecoder()
    at, end = 0, len(text)
    while True:
        while at < end and text[at] in " \t\r\n\ufeff":
            at += 1
        if at >= end:
            return
        try:
            value, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno} column {exc.colno}"
            raise Unreadable(f"{name}: not JSON at {where}: {exc.msg}") from None
        yield value


def objects(value: Any, vendor: str, position: str) -> Iterator[tuple[str, Any]]:
    """(position, object) of every record in a JSON value: lists and the vendor's envelopes
    are opened, anything else is a record."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from objects(item, vendor, f"{position}[{i}]")
        return
    if isinstance(value, dict):
        for key in _ENVELOPES[vendor]:
            if key in value and isinstance(value[key], list | dict):
                yield from objects(value[key], vendor, f"{position} {key}".strip())
                return
    yield position, value


def _stripped(doc: dict[str, Any]) -> dict[str, Any]:
    # Vendors' own exports carry keys with stray blanks (CrowdTwist's "badge_states ").
    return {str(key).strip(): value for key, value in doc.items()}


def _failure(exc: Exception, prefix: str = "") -> DomainError:
    """A record's decoding failure as the domain error the report shows."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, BadInput):
        return InvalidArgument(exc.field or "(record)", exc.message)
    return InvalidArgument(prefix or "(record)", str(exc))


@dataclass(slots=True)
class Reader:
    """Turns one vendor's records into import jobs for the org ``org_id``."""

    vendor: str
    org_id: int
    org_uuid: str
    public_base_url: str

    def record(self, file: str, position: str, doc: Any) -> Record:
        """The Record of one object (its item an error when it cannot be read)."""
        if not isinstance(doc, dict):
            error = InvalidArgument("(record)", f"must be a JSON object, not {type(doc).__name__}")
            return Record(file, position, "", "?", imports.Item(None, error))
        doc = _stripped(doc)
        named = doc.get("id", doc.get("entityId"))
        key = "" if named is None else str(named)
        kind = self.kind_of(doc)
        warnings: list[str] = []
        try:
            job = getattr(self, f"_{kind}")(doc, warnings)
            item = imports.Item(job)
        except (DomainError, BadInput, BadBody, ValueError, TypeError) as exc:
            item = imports.Item(None, _failure(exc))
        depends = depends_of(doc) if kind == "badge_template" else []
        return Record(file, position, key, kind, item, warnings, depends)

    def kind_of(self, doc: dict[str, Any]) -> str:
        """What a record is, by its vendor and keys."""
        if self.vendor == "crowdtwist":
            return "badge"
        if self.vendor == "credly":
            return "badge_template"
        if self.vendor == "capillary":
            return "custom_field" if "tags" not in doc else "org_meta"
        entity = str(doc.get("entityType", "")).lower()
        if entity == "badgeclass" or "issuerOpenBadgeId" in doc or "criteriaUrl" in doc:
            return "badge_class"
        return "issuer"

    # CrowdTwist.

    def _badge(self, doc: dict[str, Any], warnings: list[str]) -> Any:
        if doc.get("id") is None:
            raise InvalidArgument("id", "is required: the badge's CrowdTwist id is kept")
        badge_id = as_int(doc["id"], "id")
        if badge_id <= 0:
            raise InvalidArgument("id", "must be a positive CrowdTwist id")
        message, _ = crowdtwist.badge_of(doc)
        badge = badge_rpc.from_proto(message, "badge")
        badge.id = badge_id
        return imports.import_badge(self.org_id, badge, badge_rpc.render)

    # Capillary.

    def _custom_field(self, doc: dict[str, Any], warnings: list[str]) -> Any:
        field_id = str(doc.get("id") or "")
        if not is_hex_id(field_id):
            raise InvalidArgument("id", "must be the field's 24-hex Capillary id (it is kept)")
        message, _ = capillary.custom_field_of(doc)
        value = field_rpc.from_proto(message, "custom_field")
        value.id = field_id
        for name, attr in (("createdOn", "created_on"), ("lastUpdatedOn", "last_updated_on")):
            when = _epoch_or_iso(doc.get(name), doc.get(name + "ISO"), name)
            if when is not None:
                setattr(value, attr, when)
        for name, attr in (("createdBy", "created_by"), ("lastUpdatedBy", "last_updated_by")):
            if doc.get(name) is not None:
                setattr(value, attr, as_int(doc[name], name))
        _same_org(doc, self.org_id, warnings)
        return imports.import_custom_field(self.org_id, value)

    def _org_meta(self, doc: dict[str, Any], warnings: list[str]) -> Any:
        request = capillary.org_meta_of(doc)
        tags = org_meta_rpc.tags_from_proto(request.org_meta, "tags")
        _same_org(doc, self.org_id, warnings)
        meta_id = str(doc.get("id") or "")
        if meta_id and not is_hex_id(meta_id):
            raise InvalidArgument("id", "must be the org meta's 24-hex Capillary id (it is kept)")
        return imports.import_org_meta(self.org_id, meta_id, tags)

    # Credly.

    def _badge_template(self, doc: dict[str, Any], warnings: list[str]) -> Any:
        template_id = str(doc.get("id") or "")
        try:
            template_id = str(uuid_module.UUID(template_id))
        except ValueError:
            raise InvalidArgument("id", "must be the template's UUID (it is kept)") from None
        message = badge_template_pb2.BadgeTemplate()
        parse_into(credly.template_in(doc), message)
        value = template_rpc.from_proto(message)
        value.id = template_id
        owner = doc.get("owner")
        if isinstance(owner, dict) and owner.get("id") and owner["id"] != self.org_uuid:
            warnings.append(
                f"owner.id {owner['id']} is not this organisation's UUID {self.org_uuid}: "
                "Credly paths name the organisation by it (orgs create --uuid keeps it)"
            )

        def measure(b: Any, owner: Any) -> int:
            return stored_size(template_rpc.to_proto(b, owner, {}))

        return imports.import_badge_template(self.org_id, value, self.public_base_url, measure)

    # Badgr.

    def _badgr_ids(self, doc: dict[str, Any]) -> tuple[str, str]:
        id_value = str(doc.get("id") or "")
        entity_id = str(doc.get("entityId") or "")
        if not is_hex_id(id_value):
            raise InvalidArgument("id", "must be the 24-hex Badgr id (it is kept)")
        if not is_entity_id(entity_id):
            raise InvalidArgument("entityId", "must be the 22-character Badgr entityId (kept)")
        return id_value, entity_id

    def _issuer(self, doc: dict[str, Any], warnings: list[str]) -> Any:
        id_value, entity_id = self._badgr_ids(doc)
        message = issuer_pb2.Issuer()
        parse_into(_badgr_body(doc, issuer_pb2.Issuer.DESCRIPTOR), message)
        value = issuer_rpc.from_proto(message, "issuer")
        value.id, value.entity_id = id_value, entity_id
        value.created_at = _when(doc.get("createdAt"), "createdAt")
        value.created_by = str(doc.get("createdBy") or "")[:64]
        base = issuer_rpc.base_url_of(self.public_base_url)

        def measure(i: Any) -> int:
            return stored_size(issuer_rpc.to_proto(i, base))

        return imports.import_issuer(self.org_id, value, _text(doc, "openBadgeId"), measure)

    def _badge_class(self, doc: dict[str, Any], warnings: list[str]) -> Any:
        id_value, entity_id = self._badgr_ids(doc)
        message = badge_class_pb2.BadgeClass()
        body = _badgr_body(doc, badge_class_pb2.BadgeClass.DESCRIPTOR)
        body.pop("issuer", None)  # resolved to the org's issuer by the job
        parse_into(body, message)
        value = class_rpc.from_proto(message, "badge_class")
        value.id, value.entity_id = id_value, entity_id
        value.created_at = _when(doc.get("createdAt"), "createdAt")
        value.created_by = str(doc.get("createdBy") or "")[:64]
        if value.archived and doc.get("archivedDate"):
            value.archived_date = _when(doc.get("archivedDate"), "archivedDate")
        base = issuer_rpc.base_url_of(self.public_base_url)

        def measure(b: Any) -> int:
            return stored_size(class_rpc.to_proto(b, base))

        return imports.import_badge_class(
            self.org_id,
            value,
            _text(doc, "issuer"),
            _text(doc, "issuerOpenBadgeId"),
            _text(doc, "openBadgeId"),
            measure,
        )


# Badgr's keys the service computes or keeps apart: never part of the written object.
_BADGR_OWN = ("id", "entityId", "entityType", "openBadgeId", "createdAt", "createdBy")


def _badgr_body(doc: dict[str, Any], descriptor: Any) -> dict[str, Any]:
    return proto_doc({k: v for k, v in doc.items() if k not in _BADGR_OWN}, descriptor)


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    return value if isinstance(value, str) else ""


def _when(value: Any, name: str) -> dt.datetime | None:
    if value is None or value == "":
        return None
    return as_timestamp(value, name).ToDatetime(dt.UTC)


def _epoch_or_iso(epoch: Any, iso: Any, name: str) -> dt.datetime | None:
    """Capillary's ``createdOn`` (epoch seconds), else its ``createdOnISO``."""
    if isinstance(epoch, int | float) and not isinstance(epoch, bool):
        try:
            return dt.datetime.fromtimestamp(float(epoch), dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidArgument(name, "is out of range") from None
    if iso:
        return _when(iso, name + "ISO")
    return None


def _same_org(doc: dict[str, Any], org_id: int, warnings: list[str]) -> None:
    org = doc.get("orgId")
    if org is not None and str(org) != str(org_id):
        warnings.append(
            f"orgId {org} is imported into organisation {org_id} "
            "(orgs create --id keeps Capillary's orgId)"
        )


@dataclass(slots=True)
class Scan:
    """What a first reading of the files found: how many records in all, and how many JSON
    documents each file holds (positions name the document only where there are several)."""

    records: int
    documents: dict[str, int]


def _read(path: str) -> str:
    with open(path, encoding="utf-8-sig") as handle:
        return handle.read()


def scan(vendor: str, paths: Sequence[str]) -> Scan:
    """Reads every file once, before anything is written: a file that is not JSON is refused
    whole (Unreadable) then, and the progress shown has its total."""
    total, counts = 0, {}
    for path in paths:
        counts[path] = 0
        for value in documents(_read(path), path):
            counts[path] += 1
            total += sum(1 for _ in objects(value, vendor, ""))
    return Scan(total, counts)


def read_files(reader: Reader, paths: Sequence[str], found: Scan) -> Iterator[Record]:
    """Every record of the files, decoded as it is reached (a file of 100,000 badges is never
    held decoded whole), in an order their references allow: Badgr issuers before badge
    classes and Credly templates after the templates they name (within the import); those two
    vendors' records are all read first to order them."""
    stream = _records(reader, paths, found)
    if reader.vendor in ("badgr", "credly"):
        return iter(_ordered(list(stream)))
    return stream


def _records(reader: Reader, paths: Sequence[str], found: Scan) -> Iterator[Record]:
    for path in paths:
        many = found.documents.get(path, 0) > 1
        for number, value in enumerate(documents(_read(path), path), start=1):
            for position, doc in objects(value, reader.vendor, f"#{number}" if many else ""):
                yield reader.record(path, position or "(document)", doc)


def _ordered(records: list[Record]) -> list[Record]:
    rank = {"issuer": 0, "org_meta": 0, "badge_class": 1}
    records = sorted(records, key=lambda r: rank.get(r.kind, 0))
    if not any(r.kind == "badge_template" for r in records):
        return records
    return _templates_first(records)


def _templates_first(records: list[Record]) -> list[Record]:
    """Templates after the ones they name (required, activities, recommendations), found in
    the records' own JSON; file order otherwise, and for cycles (which the rules refuse)."""
    by_id = {r.key: r for r in records if r.kind == "badge_template"}
    done: set[int] = set()
    out: list[Record] = []

    def visit(r: Record, path: set[str]) -> None:
        if id(r) in done or r.key in path:
            return
        for target in r.depends:
            if target in by_id:
                visit(by_id[target], path | {r.key})
        done.add(id(r))
        out.append(r)

    for r in records:
        visit(r, set())
    return out


def depends_of(doc: dict[str, Any]) -> list[str]:
    """The template ids a Credly template names."""
    found: list[str] = []
    for item in doc.get("required_badge_templates") or []:
        if isinstance(item, dict) and item.get("id"):
            found.append(str(item["id"]))
        elif isinstance(item, str):
            found.append(item)
    for item in doc.get("badge_template_activities") or []:
        if isinstance(item, dict) and item.get("required_badge_template_id"):
            found.append(str(item["required_badge_template_id"]))
    for item in doc.get("recommendations") or []:
        if isinstance(item, dict) and item.get("recommended_badge_template_id"):
            found.append(str(item["recommended_badge_template_id"]))
    return found


@dataclass(slots=True)
class Summary:
    """What an import did, for the report."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: int = 0
    committed: bool = False
    failures: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)


def failure_json(record: Record, error: DomainError) -> dict[str, Any]:
    """A refused record as the report shows it: file, position, kept id, the key at fault
    (in the service's field path when the rules refused it) and why."""
    key = error.metadata.get("field", "")
    if not key and error.violations:
        key = error.violations[0].field
    return {
        "file": record.file,
        "position": record.position,
        "id": record.key,
        "kind": record.kind,
        "key": key,
        "reason": error.reason,
        "message": error.message,
    }


async def run(
    db: Database,
    reader: Reader,
    records: Iterator[Record],
    *,
    atomic: bool,
    dry_run: bool,
    progress: Callable[[int], None] | None = None,
    chunk: int = imports.CHUNK,
) -> Summary:
    """Imports the records in chunks of ``chunk`` (see service.imports.run_import) and sums up
    what happened; ``progress`` is told how many records each chunk finished."""
    summary = Summary()
    by_item: dict[int, Record] = {}

    def parts() -> Iterator[list[imports.Item]]:
        part: list[imports.Item] = []
        for record in records:
            by_item[id(record.item)] = record
            part.append(record.item)
            if len(part) == chunk:
                yield part
                part = []
        if part:
            yield part

    def before(part: Sequence[imports.Item]) -> Any:
        # CrowdTwist ids are kept: the database's own ids must stay past them.
        ids = [int(by_item[id(i)].key) for i in part if i.job is not None]
        return imports.reserve_badge_ids(max(ids)) if ids else None

    def done(part: Sequence[imports.Item], results: list[imports.Result]) -> None:
        for item, result in zip(part, results, strict=True):
            record = by_item.pop(id(item))
            for text in record.warnings:
                summary.warnings.append(
                    {
                        "file": record.file,
                        "position": record.position,
                        "id": record.key,
                        "warning": text,
                    }
                )
            if result.error is not None:
                summary.refused += 1
                summary.failures.append(failure_json(record, result.error))
            elif result.outcome is imports.Outcome.CREATED:
                summary.created += 1
            elif result.outcome is imports.Outcome.UPDATED:
                summary.updated += 1
            else:
                summary.unchanged += 1
        if progress is not None:
            progress(len(part))

    summary.committed = await imports.run_import(
        db,
        parts(),
        sync=reader.vendor in _SYNC,
        done=done,
        atomic=atomic,
        dry_run=dry_run,
        before_chunk=before if reader.vendor == "crowdtwist" else None,
    )
    return summary

"""Use cases of ``badge-service import``: a vendor's objects stored with the ids they had there.

Each object is written by the rules of its create and update use cases (the same validation,
quotas, references and store functions), with one difference: its id is the vendor's (a
CrowdTwist badge id, a Capillary custom field id, a Credly template UUID, a Badgr id and
entityId). An import is idempotent by that id: an object the org already holds under it is
updated when it differs and left alone when it does not; an id that another org's object (or,
for a Badgr openBadgeId, an object of another kind) holds is refused for that record
(ALREADY_EXISTS, reason ``KEPT_ID_TAKEN``), never taken over.

``run_import`` writes a list of such jobs in chunks (store.db.Chunks): each record in its own
savepoint, so a record that fails is rolled back alone and reported, and one commit per chunk,
so an import costs a transaction per few hundred records, not one per record. ``atomic``
(all or nothing) and ``dry_run`` (validate, write nothing) run every chunk in one transaction
that is committed only when every record went in (atomic) or never (dry run).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from badge_service.domain import limits
from badge_service.domain.badge_classes import BadgeClass, apply_archival, validate_badge_class
from badge_service.domain.badge_templates import (
    BadgeTemplate,
    Owner,
    TemplateState,
    apply_state_change,
    archive,
    new_uuid,
    org_slug,
    unarchive,
)
from badge_service.domain.badges import Badge
from badge_service.domain.custom_fields import CustomField, check_org_fields, validate_custom_field
from badge_service.domain.errors import AlreadyExists, DomainError, InvalidArgument, NotFound
from badge_service.domain.ids import is_entity_id, is_hex_id
from badge_service.domain.issuers import Issuer, validate_issuer
from badge_service.domain.lookups import Key
from badge_service.domain.org_meta import OrgMetaTag, validate_tags
from badge_service.service import badge_templates as templates_service
from badge_service.service import badges as badges_service
from badge_service.store import badge_templates as templates_store
from badge_service.store import badges as badges_store
from badge_service.store import badgr as badgr_store
from badge_service.store import custom_fields as fields_store
from badge_service.store import orgs as orgs_store
from badge_service.store.db import Chunks, Database

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection

# Records per transaction: large enough that a commit (an fsync on SQLite) is a small part of
# a chunk, small enough that SQLite's write lock is never held long (others' writes wait).
CHUNK = 500


class Outcome(StrEnum):
    """What an imported record did."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def kept_id_taken(resource: str, value: object, holder: str, *, label: str = "id") -> AlreadyExists:
    """ALREADY_EXISTS: the vendor's id is held by ``holder`` (another org's object, or an
    object of another kind); the record is refused rather than taking it over."""
    named = f"{resource} {label} {value}" if label else f"{resource} {value}"
    return AlreadyExists(
        f"{named} is already taken by {holder}; it cannot be kept",
        reason="KEPT_ID_TAKEN",
        metadata={"resource": resource, "id": str(value)},
    )


# --- CrowdTwist badges (synchronous: 100,000 of them import in well under a minute) -----------


def import_badge(org_id: int, badge: Badge, render: Callable[[Badge], bytes]) -> SyncJob:
    """The job of one CrowdTwist badge with its id kept (``badge.id``): created, or the
    org's badge of that id updated to it (every create rule applies either way)."""

    def job(conn: Connection) -> Outcome:
        now = dt.datetime.now(dt.UTC)
        b = replace(badge, org_id=org_id)
        owner = badges_store.kept_id_owner(conn, b.id)
        if owner is not None and owner != org_id:
            raise kept_id_taken("badge", b.id, "another organisation's badge")
        if owner is None:
            b.create_time = b.update_time = now
            b = badges_service.check_rules(conn, b, now)
            badges_store.insert_badge(conn, b, render(b))
            return Outcome.CREATED
        existing = badges_store.get_badge(conn, org_id, b.id)
        b.create_time, b.update_time = existing.create_time, existing.update_time
        b = badges_service.check_rules(conn, b, now)
        if b == existing:
            return Outcome.UNCHANGED
        b.update_time = now
        badges_store.update_badge(conn, b, render(b))
        return Outcome.UPDATED

    return job


def reserve_badge_ids(highest: int) -> SyncJob:
    """A job that keeps the ids the database gives past ``highest`` (run before a chunk's
    kept ids are inserted; see store.badges.reserve_ids)."""

    def job(conn: Connection) -> None:
        badges_store.reserve_ids(conn, highest)

    return job


# --- Capillary custom fields and org meta ---------------------------------------------------


def import_custom_field(org_id: int, field: CustomField) -> AsyncJob:
    """The job of one Capillary custom field with its 24-hex id kept (``field.id``)."""

    async def job(conn: AsyncConnection) -> Outcome:
        now = dt.datetime.now(dt.UTC)
        f = validate_custom_field(replace(field, org_id=org_id))
        if not is_hex_id(f.id):
            raise InvalidArgument("id", "must be a 24-hex Capillary id")
        owner = await fields_store.kept_id_owner(conn, f.id)
        if owner is not None and owner != org_id:
            raise kept_id_taken("custom field", f.id, "another organisation's custom field")
        await orgs_store.lock_org(conn, org_id)
        fields = await conn.run_sync(fields_store.list_fields, org_id)
        if owner is None:
            f.created_on = f.created_on or now
            f.last_updated_on = f.last_updated_on or f.created_on
            check_org_fields([*fields, f])
            await fields_store.insert_field(conn, f)
            return Outcome.CREATED
        existing = await fields_store.get_field(conn, org_id, f.id)
        f.created_on, f.created_by = existing.created_on, existing.created_by
        f.last_updated_on, f.last_updated_by = existing.last_updated_on, existing.last_updated_by
        if f == existing:
            return Outcome.UNCHANGED
        f.last_updated_on = now
        check_org_fields([f if g.id == f.id else g for g in fields])
        await fields_store.update_field(conn, f)
        return Outcome.UPDATED

    return job


def import_org_meta(org_id: int, meta_id: str, tags: list[OrgMetaTag]) -> AsyncJob:
    """The job of a Capillary org meta: its tags replace the org's (as UpdateOrgMeta), and
    the org meta takes its 24-hex id (``meta_id``; empty keeps the org's own)."""

    async def job(conn: AsyncConnection) -> Outcome:
        validate_tags(tags)
        if meta_id and not is_hex_id(meta_id):
            raise InvalidArgument("id", "must be a 24-hex Capillary id")
        existing = await conn.run_sync(orgs_store.get_org_meta, org_id)
        new_id = meta_id or existing.id
        if existing.tags == tags and existing.id == new_id:
            return Outcome.UNCHANGED
        if new_id != existing.id:
            owner = await orgs_store.org_meta_owner(conn, new_id)
            if owner is not None and owner != org_id:
                raise kept_id_taken("org meta", new_id, "another organisation's org meta")
            await orgs_store.set_org_meta_id(conn, org_id, new_id)
        await orgs_store.save_org_meta_tags(conn, org_id, tags, 0, dt.datetime.now(dt.UTC))
        return Outcome.UPDATED

    return job


# --- Credly badge templates -----------------------------------------------------------------


def import_badge_template(
    org_id: int,
    template: BadgeTemplate,
    public_base_url: str,
    measure: Callable[[BadgeTemplate, Owner], int],
) -> AsyncJob:
    """The job of one Credly template with its UUID kept (``template.id``), in the state it
    had (an archived one is created active, then archived, as Credly's own history went)."""

    async def job(conn: AsyncConnection) -> Outcome:
        now = dt.datetime.now(dt.UTC)
        org = await orgs_store.get_org(conn, org_id)
        owner = Owner(org.uuid, org.name, org_slug(org.name, org.uuid), public_base_url)
        b = replace(template, org_id=org_id)
        found = await templates_store.kept_id_owner(conn, b.id)
        if found is not None and found != org_id:
            raise kept_id_taken("badge template", b.id, "another organisation's template")
        wanted = b.state
        if found is None:
            b.created_at = b.updated_at = now
            b.image_id = new_uuid() if b.image_url else ""
            b.state = TemplateState.ACTIVE if wanted is TemplateState.ARCHIVED else wanted
            apply_state_change(b, None, now)
            b = await templates_service.check_rules(conn, b, owner, measure, creating=True)
            if wanted is TemplateState.ARCHIVED:
                archive(b, now)
            await templates_store.insert_template(conn, b)
            return Outcome.CREATED
        existing = await templates_store.get_template(conn, org_id, b.id)
        b.badges_count, b.created_at = existing.badges_count, existing.created_at
        b.state_updated_at, b.updated_at = existing.state_updated_at, existing.updated_at
        b.image_id = existing.image_id if b.image_url == existing.image_url else new_uuid()
        if not b.image_url:
            b.image_id = ""
        old = existing.state
        if wanted is TemplateState.ARCHIVED and old is not TemplateState.ARCHIVED:
            b.state = old
            apply_state_change(b, old, now)
            b = await templates_service.check_rules(conn, b, owner, measure, creating=False)
            archive(b, now)
        elif old is TemplateState.ARCHIVED and wanted is not TemplateState.ARCHIVED:
            b.state = old
            b = await templates_service.check_rules(conn, b, owner, measure, creating=False)
            unarchive(b, now)
        else:
            apply_state_change(b, old, now)
            b = await templates_service.check_rules(conn, b, owner, measure, creating=False)
        if b == existing:
            return Outcome.UNCHANGED
        b.updated_at = now
        await templates_store.update_template(conn, b)
        return Outcome.UPDATED

    return job


# --- Badgr issuers and badge classes --------------------------------------------------------


async def _check_badgr_ids(
    conn: AsyncConnection, org_id: int, kind: str, id_value: str, entity_id: str
) -> bool:
    """Whether the org holds the object of these kept ids already (both naming it); raises
    when another org's object (or another of this org's) holds either."""
    resource = "issuer" if kind == "issuer" else "badge class"
    if not is_hex_id(id_value):
        raise InvalidArgument("id", "must be a 24-hex Badgr id")
    if not is_entity_id(entity_id):
        raise InvalidArgument("entityId", "must be a 22-character Badgr entity id")
    holders = await badgr_store.kept_id_owners(conn, kind, id_value, entity_id)
    for org, held_id, held_entity in holders:
        if org != org_id:
            raise kept_id_taken(
                resource, f"{id_value}/{entity_id}", f"another organisation's {resource}"
            )
        if held_id != id_value or held_entity != entity_id:
            raise kept_id_taken(
                resource,
                f"{id_value}/{entity_id}",
                f"this organisation's {resource} {held_id} (entityId {held_entity})",
            )
    return bool(holders)


async def _keep_alias(
    conn: AsyncConnection, org_id: int, kind: str, target_id: str, url: str
) -> None:
    """Keeps ``url`` (the object's former openBadgeId) naming it; refused when it names
    another org's object or an object of another kind."""
    if not url:
        return
    found = await badgr_store.alias_owner(conn, url)
    if found is not None:
        org, held_kind, held_id = found
        if org != org_id or held_kind != kind:
            holder = "another organisation's object"
            if org == org_id:
                holder = f"this organisation's {held_kind.replace('_', ' ')}"
            raise kept_id_taken("openBadgeId", url, holder, label="")
        if held_id == target_id:
            return
    await badgr_store.save_alias(conn, org_id, kind, target_id, url)


def import_issuer(
    org_id: int, issuer: Issuer, open_badge_id: str, measure: Callable[[Issuer], int]
) -> AsyncJob:
    """The job of one Badgr issuer with its id and entityId kept, and its former
    ``open_badge_id`` kept as a lookup alias."""

    async def job(conn: AsyncConnection) -> Outcome:
        now = dt.datetime.now(dt.UTC)
        i = validate_issuer(replace(issuer, org_id=org_id))
        exists = await _check_badgr_ids(conn, org_id, "issuer", i.id, i.entity_id)
        if not exists:
            i.created_at = i.created_at or now
            i.updated_at = now
            limits.check_bytes(measure(i), limits.ISSUER_BYTES, "issuer", "as stored")
            await badgr_store.insert_issuer(conn, i)
            await _keep_alias(conn, org_id, "issuer", i.id, open_badge_id)
            return Outcome.CREATED
        existing = await badgr_store.get_issuer(conn, org_id, Key(False, i.id))
        i.created_by, i.created_at, i.updated_at = (
            existing.created_by,
            existing.created_at,
            existing.updated_at,
        )
        await _keep_alias(conn, org_id, "issuer", i.id, open_badge_id)
        if i == existing:
            return Outcome.UNCHANGED
        i.updated_at = now
        limits.check_bytes(measure(i), limits.ISSUER_BYTES, "issuer", "as stored")
        await badgr_store.update_issuer(conn, i)
        return Outcome.UPDATED

    return job


async def _class_issuer(
    conn: AsyncConnection, org_id: int, issuer: str, issuer_open_badge_id: str
) -> Issuer:
    """The org's issuer a badge class names: by ``issuer`` (its id or entityId), else by
    ``issuerOpenBadgeId`` (a kept alias, or the entityId its URL ends with)."""
    keys: list[Key] = []
    if is_hex_id(issuer):
        keys.append(Key(False, issuer))
    elif is_entity_id(issuer):
        keys.append(Key(True, issuer))
    if issuer_open_badge_id:
        keys.append(Key(False, issuer_open_badge_id, alias=True))
        tail = issuer_open_badge_id.rstrip("/").rsplit("/", 1)[-1]
        if is_entity_id(tail):
            keys.append(Key(True, tail))
    for key in keys:
        try:
            return await badgr_store.get_issuer(conn, org_id, key)
        except NotFound:
            continue
    named = issuer or issuer_open_badge_id
    raise InvalidArgument(
        "issuer",
        f"names no issuer of this organisation ({named!r}, {issuer_open_badge_id!r}): "
        "import its issuer first",
        reason="ISSUER_NOT_FOUND",
    )


def import_badge_class(
    org_id: int,
    badge_class: BadgeClass,
    issuer: str,
    issuer_open_badge_id: str,
    open_badge_id: str,
    measure: Callable[[BadgeClass], int],
) -> AsyncJob:
    """The job of one Badgr badge class with its id and entityId kept, under the org's issuer
    it names, its former ``open_badge_id`` kept as a lookup alias."""

    async def job(conn: AsyncConnection) -> Outcome:
        now = dt.datetime.now(dt.UTC)
        owner = await _class_issuer(conn, org_id, issuer, issuer_open_badge_id)
        bc = validate_badge_class(
            replace(badge_class, org_id=org_id),
            definitions=owner.preferences.custom_property_definitions,
        )
        exists = await _check_badgr_ids(conn, org_id, "badge_class", bc.id, bc.entity_id)
        bc.issuer_id, bc.issuer_entity_id = owner.id, owner.entity_id
        if not exists:
            bc.created_at = bc.created_at or now
            bc.updated_at = now
            apply_archival(bc, None, bc.archived_date or now)
            limits.check_bytes(measure(bc), limits.BADGE_CLASS_BYTES, "badge_class", "as stored")
            await badgr_store.insert_badge_class(conn, bc)
            await _keep_alias(conn, org_id, "badge_class", bc.id, open_badge_id)
            return Outcome.CREATED
        existing = await badgr_store.get_badge_class(conn, org_id, Key(False, bc.id))
        if existing.issuer_id != bc.issuer_id:
            raise InvalidArgument("issuer", "cannot change: a badge class keeps its issuer")
        bc.created_by, bc.created_at, bc.updated_at = (
            existing.created_by,
            existing.created_at,
            existing.updated_at,
        )
        apply_archival(bc, existing, now)
        await _keep_alias(conn, org_id, "badge_class", bc.id, open_badge_id)
        if bc == existing:
            return Outcome.UNCHANGED
        bc.updated_at = now
        limits.check_bytes(measure(bc), limits.BADGE_CLASS_BYTES, "badge_class", "as stored")
        await badgr_store.update_badge_class(conn, bc)
        return Outcome.UPDATED

    return job


# --- Running an import ----------------------------------------------------------------------

SyncJob = Callable[["Connection"], Any]
AsyncJob = Callable[["AsyncConnection"], Awaitable[Any]]


@dataclass(slots=True)
class Item:
    """One record to import: its job, or the error that kept it from having one (a record
    that could not be read)."""

    job: Callable[..., Any] | None
    error: DomainError | None = None


@dataclass(slots=True)
class Result:
    """What one record did: its outcome, or the error it was refused with."""

    outcome: Outcome | None
    error: DomainError | None = None


async def run_import(
    db: Database,
    parts: Iterator[Sequence[Item]],
    *,
    sync: bool,
    done: Callable[[Sequence[Item], list[Result]], None],
    atomic: bool = False,
    dry_run: bool = False,
    before_chunk: Callable[[Sequence[Item]], Callable[..., Any] | None] | None = None,
) -> bool:
    """Writes the chunks ``parts`` gives (see the module docstring), telling ``done`` each
    chunk's results once it is written; returns whether anything was committed. ``sync`` says
    which kind of job they are (SyncJob or AsyncJob, one kind per import). ``before_chunk``
    may add a job run first in a chunk's transaction (badges reserve their kept ids). A
    record's own failure is its result; a store fault ends the import (the chunk that met it
    is rolled back) and is raised.

    ``parts`` is read while the chunk before is written: SyncJobs run in SQLite's writer
    thread, which lets go of the interpreter while SQLite works, so decoding the next chunk's
    records overlaps writing this one's."""
    one_transaction = atomic or dry_run
    chunks = Chunks(db, sync=sync)
    committed = refused = False
    try:
        part = next(parts, None)
        while part is not None:
            jobs = [item.job for item in part if item.job is not None]
            first = before_chunk(part) if before_chunk is not None else None
            if first is not None:
                jobs.insert(0, first)
            task = None
            if jobs:
                task = asyncio.ensure_future(chunks.run(jobs, commit=not one_transaction))
                await asyncio.sleep(0)  # hands the chunk to the writer before reading on
            try:
                following = next(parts, None)
            except BaseException:
                if task is not None:
                    with contextlib.suppress(Exception):
                        await task
                raise
            outcomes = iter(await task if task is not None else [])
            if first is not None:
                ok, value = next(outcomes)
                if not ok:
                    raise value
            results: list[Result] = []
            for item in part:
                if item.job is None:
                    results.append(Result(None, item.error))
                    continue
                ok, value = next(outcomes)
                if ok:
                    results.append(Result(value))
                elif isinstance(value, DomainError):
                    results.append(Result(None, value))
                else:
                    raise value  # a bug of ours, not the record's: stop
            refused = refused or any(r.error is not None for r in results)
            committed = committed or (bool(jobs) and not one_transaction)
            done(part, results)
            part = following
        if one_transaction and not dry_run and not refused:
            await chunks.commit()
            committed = True
    finally:
        await chunks.close()
    return committed

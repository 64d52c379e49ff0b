"""Stored reply bytes follow the messages they were serialized from.

GetBadge, ListBadges and the award reads send the bytes stored in ``badges.message`` and
``awards.message`` as they are. A change to the Badge or Award message (or to a message or
enum either uses, nested or imported) leaves those bytes in the old shape: a new field absent
from every stored reply, a renumbered one read as another. So the messages' descriptors are
pinned, per type, in store/migrations/reply_fingerprints.json with the migration that last
cleared the stored bytes (reads rebuild a NULL message from the columns), and this test
fails, saying what to do, when they differ.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor
from google.protobuf.descriptor_pb2 import DescriptorProto, EnumDescriptorProto
from sqlalchemy import LargeBinary

from badge_service.api.badges.v1 import award_pb2, badge_pb2
from badge_service.store import models
from badge_service.store.models import metadata

MIGRATIONS = Path(models.__file__).parent / "migrations"
PINNED = MIGRATIONS / "reply_fingerprints.json"
MESSAGES: dict[str, Descriptor] = {
    "badges.v1.Badge": badge_pb2.Badge.DESCRIPTOR,
    "badges.v1.Award": award_pb2.Award.DESCRIPTOR,
}


def _types(message: Descriptor) -> dict[str, Descriptor | EnumDescriptor]:
    """``message`` and every message and enum type its fields use, transitively."""
    found: dict[str, Descriptor | EnumDescriptor] = {}
    todo: list[Descriptor | EnumDescriptor] = [message]
    while todo:
        kind = todo.pop()
        if kind.full_name in found:
            continue
        found[kind.full_name] = kind
        if isinstance(kind, Descriptor):
            for f in kind.fields:
                todo += [t for t in (f.message_type, f.enum_type) if t is not None]
    return found


def _fingerprint(kind: Descriptor | EnumDescriptor) -> str:
    """SHA-256 (first 16 hex digits) of the type's descriptor as compiled: names, numbers,
    types, labels, oneofs, options and its nested declarations."""
    proto: DescriptorProto | EnumDescriptorProto = (
        DescriptorProto() if isinstance(kind, Descriptor) else EnumDescriptorProto()
    )
    kind.CopyToProto(proto)  # type: ignore[arg-type]  # each kind gets its own proto class
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()[:16]


def current(messages: dict[str, Descriptor] = MESSAGES) -> dict[str, dict[str, str]]:
    """The fingerprints of every pinned message's types, as the JSON file holds them."""
    return {
        name: {t: _fingerprint(d) for t, d in sorted(_types(message).items())}
        for name, message in messages.items()
    }


def _pinned() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PINNED.read_text())
    return data


def _revisions() -> dict[str, str]:
    """Each migration's revision id and source text."""
    out = {}
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        text = path.read_text()
        for line in text.splitlines():
            if line.startswith("revision"):
                out[line.split("=")[-1].strip().strip("\"'")] = text
    return out


def problems(now: dict[str, dict[str, str]], pinned: dict[str, Any]) -> list[str]:
    """What differs between the messages' fingerprints and the pinned ones, each with what to
    do about it."""
    out = []
    for name, types in now.items():
        entry = pinned["messages"][name]
        old: dict[str, str] = entry["types"]
        if old == types:
            continue
        changed = sorted(t for t in types.keys() & old.keys() if types[t] != old[t])
        added, removed = sorted(types.keys() - old.keys()), sorted(old.keys() - types.keys())
        table = entry["stored_in"].split(".")[0]
        out.append(
            f"{name} changed since migration {entry['cleared_by']} cleared the replies stored "
            f"in {entry['stored_in']} (changed: {changed}, now used: {added}, no longer used: "
            f"{removed}). Those bytes are sent to clients as they are, in the old shape. Add a "
            f"migration that sets {entry['stored_in']} to NULL (reads rebuild a missing reply "
            f'from the columns), e.g. op.execute(sa.text("UPDATE {table} SET message = '
            f"NULL\")), then in src/badge_service/store/migrations/{PINNED.name} set {name}'s "
            f"cleared_by to that revision and its types to:\n{json.dumps(types, indent=2)}"
        )
    return out


def test_the_stored_reply_messages_match_their_pinned_descriptors() -> None:
    pinned = _pinned()
    assert set(pinned["messages"]) == set(MESSAGES)
    found = problems(current(), pinned)
    assert not found, "\n\n".join(found)


def _changed_badge() -> Descriptor:
    """badges.v1.Badge with one field more, compiled in a pool of its own (with the files it
    imports), as it would be after an edit of badge.proto."""
    pool = descriptor_pool.DescriptorPool()

    def add(file: Any) -> None:
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        if file is badge_pb2.DESCRIPTOR:
            badge = next(m for m in proto.message_type if m.name == "Badge")
            badge.field.add(
                name="added_later",
                number=9999,
                type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
            )
        try:
            pool.Add(proto)
        except TypeError:  # already added (a file imported twice)
            pass

    add(badge_pb2.DESCRIPTOR)
    return pool.FindMessageTypeByName("badges.v1.Badge")


def test_a_changed_message_fails_with_what_to_do() -> None:
    found = problems(current({"badges.v1.Badge": _changed_badge()}), _pinned())
    assert len(found) == 1
    assert "badges.v1.Badge changed since migration 0007" in found[0]
    assert "changed: ['badges.v1.Badge']" in found[0]
    assert "sets badges.message to NULL" in found[0]
    # The types to pin, so that the same test passes once the migration exists.
    pinned = json.loads(found[0].split("its types to:\n", 1)[1])
    assert pinned == current({"badges.v1.Badge": _changed_badge()})["badges.v1.Badge"]


def test_each_pin_names_a_migration_and_a_stored_reply_column() -> None:
    """cleared_by is a revision that exists and touches the stored column; stored_in is a
    binary column of the models."""
    revisions = _revisions()
    for name, entry in _pinned()["messages"].items():
        table, column = entry["stored_in"].split(".")
        assert isinstance(metadata.tables[table].c[column].type, LargeBinary), name
        source = revisions.get(entry["cleared_by"])
        assert source is not None, f"{name}: no migration has revision {entry['cleared_by']}"
        assert f'"{table}"' in source and column in source, (name, entry["cleared_by"])

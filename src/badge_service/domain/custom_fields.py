"""Capillary custom fields: the typed fields of badge extra data, and their rules.

Capillary's codes ride in the error metadata: 740 duplicate name, 741 data type missing,
742 mandatory field without a default, 744 default value not of the data type.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from badge_service.domain import limits
from badge_service.domain.errors import AlreadyExists, InvalidArgument
from badge_service.domain.fields import check_text, is_date_text

CODE_DUPLICATE_NAME = 740
CODE_DATA_TYPE_REQUIRED = 741
CODE_MANDATORY_NEEDS_DEFAULT = 742
CODE_DEFAULT_NOT_OF_TYPE = 744

_INTEGER = re.compile(r"^[+-]?[0-9]+\Z")
_MAX_SAFE_INT = 2**53


class DataType(StrEnum):
    """Capillary's data types for custom fields and org meta tags."""

    INTEGER = "INTEGER"
    BOOLEAN = "BOOLEAN"
    DATE = "DATE"
    STRING = "STRING"


@dataclass(slots=True)
class CustomField:
    """A custom field of an organisation. ``data_type`` is None only in unchecked input."""

    name: str
    data_type: DataType | None
    is_mandatory: bool = False
    default_value: str | None = None
    is_active: bool = True
    id: str = ""
    org_id: int = 0
    created_on: dt.datetime | None = None
    created_by: int = 0
    last_updated_on: dt.datetime | None = None
    last_updated_by: int = 0


def duplicate_name(name: str) -> AlreadyExists:
    """Capillary 740: the org already has a field of this name."""
    return AlreadyExists(
        f"a custom field named {name!r} already exists",
        reason="CUSTOM_FIELD_NAME_TAKEN",
        metadata={"code": str(CODE_DUPLICATE_NAME), "name": name},
    )


def validate_custom_field(field: CustomField, prefix: str = "custom_field") -> CustomField:
    """Checks every create rule; returns the field with an empty default normalised to None."""
    check_text(field.name, f"{prefix}.name", limit=limits.CUSTOM_FIELD_NAME_CHARS, required=True)
    if field.default_value is not None:
        check_text(
            field.default_value,
            f"{prefix}.default_value",
            limit=limits.CUSTOM_FIELD_DEFAULT_CHARS,
        )
    if field.data_type is None:
        raise InvalidArgument(
            f"{prefix}.data_type",
            "is required: one of INTEGER, BOOLEAN, DATE, STRING",
            reason="DATA_TYPE_REQUIRED",
            vendor_code=CODE_DATA_TYPE_REQUIRED,
        )
    if field.default_value == "":
        field.default_value = None
    if field.is_mandatory and field.default_value is None:
        raise InvalidArgument(
            f"{prefix}.default_value",
            "is required for a mandatory custom field",
            reason="MANDATORY_DEFAULT_REQUIRED",
            vendor_code=CODE_MANDATORY_NEEDS_DEFAULT,
        )
    if field.default_value is not None and parse_text(field.data_type, field.default_value) is None:
        raise InvalidArgument(
            f"{prefix}.default_value",
            f"must be {_DESCRIBE[field.data_type]}",
            reason="DEFAULT_VALUE_TYPE_MISMATCH",
            vendor_code=CODE_DEFAULT_NOT_OF_TYPE,
        )
    return field


_DESCRIBE = {
    DataType.INTEGER: "a number (a whole number such as 42)",
    DataType.BOOLEAN: "true or false",
    DataType.DATE: "an ISO date (YYYY-MM-DD)",
    DataType.STRING: "text",
}


def parse_text(data_type: DataType, text: str) -> int | bool | str | None:
    """The typed value of ``text`` (as JSON would hold it), or None if it is not of the type."""
    if data_type is DataType.STRING:
        return text
    if data_type is DataType.INTEGER:
        if not _INTEGER.match(text):
            return None
        try:
            number = int(text)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            return None
        return number if abs(number) <= _MAX_SAFE_INT else None
    if data_type is DataType.BOOLEAN:
        lowered = text.lower()
        return {"true": True, "false": False}.get(lowered)
    if is_date_text(text):
        try:
            dt.date.fromisoformat(text)
        except ValueError:
            return None
        return text
    return None


def coerce_value(data_type: DataType, value: Any) -> Any:
    """The JSON value for a field of ``data_type``, or None if ``value`` is not of it.

    Numbers arrive as floats (google.protobuf.Struct); text forms of numbers and booleans are
    accepted and normalised so that stored extra data is always typed.
    """
    if isinstance(value, str):
        return parse_text(data_type, value)
    if (
        data_type is DataType.INTEGER
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        if math.isfinite(value) and float(value).is_integer() and abs(value) <= _MAX_SAFE_INT:
            return int(value)
        return None
    if data_type is DataType.BOOLEAN and isinstance(value, bool):
        return value
    return None


def filled_defaults(fields: Iterable[CustomField]) -> dict[str, Any]:
    """What the active fields with a default fill into extra data that names none of them."""
    out: dict[str, Any] = {}
    for field in fields:
        if field.is_active and field.default_value is not None and field.data_type is not None:
            out[field.name] = parse_text(field.data_type, field.default_value)
    return out


def check_org_fields(fields: Sequence[CustomField], prefix: str = "custom_field") -> None:
    """An organisation's fields, as a create or update would leave them, within its quotas
    (RESOURCE_EXHAUSTED): CUSTOM_FIELDS_PER_ORG fields, and defaults that fill at most
    CUSTOM_FIELD_DEFAULTS_BYTES_PER_ORG into extra data, so that every badge and award is
    checked against a bounded set and defaults alone never fill the extra data limits."""
    limits.check_quota(len(fields), limits.CUSTOM_FIELDS_PER_ORG, prefix, "custom fields")
    limits.check_quota(
        limits.struct_bytes(filled_defaults(fields)),
        limits.CUSTOM_FIELD_DEFAULTS_BYTES_PER_ORG,
        f"{prefix}.default_value",
        "bytes of custom field defaults",
    )


def check_extra_data(
    extra: Mapping[str, Any], fields: Iterable[CustomField], prefix: str
) -> dict[str, Any]:
    """Checks extra data against the org's custom fields and fills in defaults.

    Active fields must hold values of their type; a missing (or null) field with a default
    gets it; once an org defines fields, keys that name none of them are refused.
    """
    fields = list(fields)
    by_name = {f.name: f for f in fields}
    out: dict[str, Any] = {}
    for key, value in extra.items():
        field = by_name.get(key)
        if field is None:
            if fields:
                raise InvalidArgument(
                    f"{prefix}.{key}",
                    "is not a custom field of this organisation",
                    reason="UNKNOWN_CUSTOM_FIELD",
                )
            out[key] = value
            continue
        if value is None or not field.is_active:
            if value is not None:
                out[key] = value
            continue
        assert field.data_type is not None
        typed = coerce_value(field.data_type, value)
        if typed is None:
            raise InvalidArgument(
                f"{prefix}.{key}",
                f"must be {_DESCRIBE[field.data_type]}",
                reason="EXTRA_DATA_TYPE_MISMATCH",
            )
        out[key] = typed
    for field in fields:
        if field.is_active and field.name not in out and field.default_value is not None:
            assert field.data_type is not None
            out[field.name] = parse_text(field.data_type, field.default_value)
    return out

"""Turns domain errors into ``google.rpc.Status`` with ErrorInfo and BadRequest details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from badge_service.domain.errors import ERROR_DOMAIN, DomainError, QuotaExceeded

# Messages and details echo what the client sent (names, ids, mask paths). Trailers above
# the client's metadata limit (8 KiB soft, 16 KiB hard by default) would turn the error into
# RESOURCE_EXHAUSTED, so every echoed text is cut to a budget of UTF-8 bytes.
_TEXT_MAX_BYTES = 512
_VALUE_MAX_BYTES = 256


def _clip(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "..."


# Statuses of errors that carry nothing of the call (no metadata, no field violations): the
# same few (an unknown API key above all) answer a flood of bad calls, and building, packing
# and serialising the status again was a tenth of each refused call's cost. Bounded, since a
# message may still echo something a client sent.
_CONSTANT: dict[tuple[type[DomainError], str, str], grpc.Status] = {}
_CONSTANT_MAX = 256


def to_status(err: DomainError) -> grpc.Status:
    """The rich status for a domain error: ErrorInfo always, BadRequest for bad fields."""
    if err.metadata or err.violations or isinstance(err, QuotaExceeded):
        return rpc_status.to_status(to_status_proto(err))
    key = (type(err), err.reason, err.message)
    status = _CONSTANT.get(key)
    if status is None:
        status = rpc_status.to_status(to_status_proto(err))
        if len(_CONSTANT) < _CONSTANT_MAX:
            _CONSTANT[key] = status
    return status


def to_status_proto(err: DomainError) -> status_pb2.Status:
    """The ``google.rpc.Status`` message of a domain error (what to_status sends), for
    replies that carry errors in their body (per-request results of a batch)."""
    details = []
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason=err.reason,
            domain=ERROR_DOMAIN,
            metadata={k: _clip(v, _VALUE_MAX_BYTES) for k, v in err.metadata.items()},
        )
    )
    details.append(info)
    if err.violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_clip(v.field, _VALUE_MAX_BYTES),
                        description=_clip(v.description, _TEXT_MAX_BYTES),
                    )
                    for v in err.violations
                ]
            )
        )
        details.append(bad)
    if isinstance(err, QuotaExceeded):
        # AIP-193: RESOURCE_EXHAUSTED carries QuotaFailure, naming the quota as its subject.
        quota = any_pb2.Any()
        quota.Pack(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=err.limit, description=_clip(err.message, _TEXT_MAX_BYTES)
                    )
                ]
            )
        )
        details.append(quota)
    return status_pb2.Status(
        code=code_pb2.Code.Value(err.code),
        message=_clip(err.message, _TEXT_MAX_BYTES),
        details=details,
    )


def status_code(err: DomainError) -> grpc.StatusCode:
    """The gRPC status code of a domain error."""
    return grpc.StatusCode[err.code]

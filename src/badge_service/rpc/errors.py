"""Turns domain errors into ``google.rpc.Status`` with ErrorInfo and BadRequest details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from badge_service.domain.errors import ERROR_DOMAIN, DomainError


def to_status(err: DomainError) -> grpc.Status:
    """The rich status for a domain error: ErrorInfo always, BadRequest for bad fields."""
    details = []
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN, metadata=err.metadata)
    )
    details.append(info)
    if err.violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in err.violations
                ]
            )
        )
        details.append(bad)
    status = status_pb2.Status(
        code=code_pb2.Code.Value(err.code), message=err.message, details=details
    )
    return rpc_status.to_status(status)


def status_code(err: DomainError) -> grpc.StatusCode:
    """The gRPC status code of a domain error."""
    return grpc.StatusCode[err.code]

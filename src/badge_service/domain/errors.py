"""Domain errors. Each names its canonical gRPC status by code name, so the domain needs no grpc.

The rpc layer turns them into a ``google.rpc.Status`` with ``ErrorInfo`` (reason, domain
``badges.v1``, metadata) and, for bad input, ``BadRequest`` field violations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ERROR_DOMAIN = "badges.v1"
# How much of a client's value an error repeats (error details travel in trailers).
ECHO_MAX = 100


def echo(value: str) -> str:
    """``value`` as an error may repeat it: cut to ECHO_MAX characters (and "...")."""
    return value if len(value) <= ECHO_MAX else value[:ECHO_MAX] + "..."


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its path (e.g. ``custom_field.default_value``) and why."""

    field: str
    description: str


class DomainError(Exception):
    """A failure the client caused or can act on; never an internal fault."""

    code = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        metadata: Mapping[str, str] | None = None,
        violations: list[FieldViolation] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.violations = list(violations or [])

    def report(self) -> None:
        """Called once by a transport as it answers a call with this error. Nothing by
        default: the answer says it all. An error that stands for a fault of the service's own
        infrastructure (the store down) writes its log line here."""


class InvalidArgument(DomainError):
    """The request is malformed or breaks a rule of the resource (INVALID_ARGUMENT)."""

    code = "INVALID_ARGUMENT"

    def __init__(
        self,
        field: str,
        description: str,
        *,
        reason: str = "INVALID_FIELD",
        vendor_code: int | None = None,
    ) -> None:
        metadata = {"field": field}
        if vendor_code is not None:
            metadata["code"] = str(vendor_code)
        super().__init__(
            f"{field}: {description}",
            reason=reason,
            metadata=metadata,
            violations=[FieldViolation(field, description)],
        )
        self.field = field


class LimitExceeded(InvalidArgument):
    """A field is over one of the documented limits (domain/limits.py): INVALID_ARGUMENT with
    reason LIMIT_EXCEEDED, the field, and the limit's name and value in the metadata."""

    def __init__(self, field: str, description: str, limit: str, maximum: int) -> None:
        super().__init__(field, description, reason="LIMIT_EXCEEDED")
        self.metadata["limit"] = limit
        self.metadata["max"] = str(int(maximum))
        self.limit = limit


class QuotaExceeded(DomainError):
    """The call would take the organisation past one of its quotas (domain/limits.py):
    RESOURCE_EXHAUSTED with reason QUOTA_EXCEEDED, the limit's name and value, and the field
    that would grow."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, limit: str, maximum: int, *, field: str) -> None:
        super().__init__(
            message,
            reason="QUOTA_EXCEEDED",
            metadata={"limit": limit, "max": str(int(maximum)), "field": field},
        )
        self.limit = limit


class NotFound(DomainError):
    """The named resource does not exist in the caller's organisation (NOT_FOUND)."""

    code = "NOT_FOUND"

    def __init__(self, resource: str, key: object) -> None:
        super().__init__(
            f"{resource} {key} not found",
            reason="NOT_FOUND",
            metadata={"resource": resource, "id": str(key)},
        )


class AlreadyExists(DomainError):
    """A unique key is taken (ALREADY_EXISTS)."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The resource is not in a state that allows the call (FAILED_PRECONDITION)."""

    code = "FAILED_PRECONDITION"


class PermissionDenied(DomainError):
    """The caller is known but its role does not allow the call (PERMISSION_DENIED)."""

    code = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    """No credentials, or credentials that match no live key (UNAUTHENTICATED)."""

    code = "UNAUTHENTICATED"


class Unavailable(DomainError):
    """The service cannot take the call now; the same call may be retried (UNAVAILABLE)."""

    code = "UNAVAILABLE"


class Aborted(DomainError):
    """The call lost a conflict with a concurrent one and nothing of it was done; it may be
    retried at once (ABORTED, AIP-194)."""

    code = "ABORTED"


class ShuttingDown(Unavailable):
    """The server is stopping and refuses new calls; they were not started, so a retry (on
    another replica, or after the restart) is safe."""

    def __init__(self) -> None:
        super().__init__(
            "the server is shutting down; the call was not started, retry",
            reason="SERVER_SHUTTING_DOWN",
        )

"""The canonical status codes (google/rpc/code.proto) by name, their numbers and HTTP statuses.

One map for every HTTP answer of the service: the hosted documents (``http.app``, which may not
import grpc) and the REST routes (``http.rest.errors``, keyed by ``grpc.StatusCode`` there).
The HTTP statuses are grpc-gateway's and Envoy's, from the comments of code.proto.
"""

from __future__ import annotations

from typing import Any

# name -> (number, HTTP status)
CODES: dict[str, tuple[int, int]] = {
    "OK": (0, 200),
    "CANCELLED": (1, 499),
    "UNKNOWN": (2, 500),
    "INVALID_ARGUMENT": (3, 400),
    "DEADLINE_EXCEEDED": (4, 504),
    "NOT_FOUND": (5, 404),
    "ALREADY_EXISTS": (6, 409),
    "PERMISSION_DENIED": (7, 403),
    "RESOURCE_EXHAUSTED": (8, 429),
    "FAILED_PRECONDITION": (9, 400),
    "ABORTED": (10, 409),
    "OUT_OF_RANGE": (11, 400),
    "UNIMPLEMENTED": (12, 501),
    "INTERNAL": (13, 500),
    "UNAVAILABLE": (14, 503),
    "DATA_LOSS": (15, 500),
    "UNAUTHENTICATED": (16, 401),
}
# The code an HTTP-level failure stands for (no route, wrong method), as grpc-gateway answers.
CODE_OF_HTTP = {
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    400: "INVALID_ARGUMENT",
    413: "OUT_OF_RANGE",
}
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
DOMAIN = "badges.v1"


def http_status(code: str) -> int:
    """The HTTP status of the code named ``code`` (500 for a name that is none)."""
    return CODES.get(code, (2, 500))[1]


def number(code: str) -> int:
    """The number of the code named ``code`` (UNKNOWN's for a name that is none)."""
    return CODES.get(code, (2, 500))[0]


def status_doc(
    code: str,
    message: str,
    *,
    reason: str = "",
    metadata: dict[str, str] | None = None,
    violations: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """``google.rpc.Status`` in proto3 JSON: ``{"code", "message", "details"}``, with an
    ``ErrorInfo`` when there is a reason and a ``BadRequest`` when fields are named."""
    details: list[dict[str, Any]] = []
    if reason:
        info: dict[str, Any] = {"@type": ERROR_INFO_TYPE, "reason": reason, "domain": DOMAIN}
        if metadata:
            info["metadata"] = dict(metadata)
        details.append(info)
    if violations:
        details.append(
            {
                "@type": BAD_REQUEST_TYPE,
                "fieldViolations": [
                    {"field": field, "description": description}
                    for field, description in violations
                ],
            }
        )
    return {"code": number(code), "message": message, "details": details}

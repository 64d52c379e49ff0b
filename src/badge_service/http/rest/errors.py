"""Errors over HTTP: a gRPC status as JSON ``google.rpc.Status``, with the standard code to HTTP
status mapping (grpc-gateway's and Envoy's, from google/rpc/code.proto)."""

from __future__ import annotations

import json

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from starlette.responses import Response

from badge_service.http import status as codes
from badge_service.http.rest.gateway import RpcFailure

# Makes the detail types known to json_format's default type registry (for the Any details).
_DETAIL_TYPES = (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest)

# One map for every HTTP answer of the service (http.status), keyed here by grpc's codes.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    code: codes.http_status(code.name) for code in grpc.StatusCode
}
CODE_OF_NAME = {code.name: code for code in grpc.StatusCode}
JSON = "application/json"


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status of a gRPC status code."""
    return HTTP_STATUS.get(code, 500)


def status_body(status: status_pb2.Status) -> bytes:
    """``google.rpc.Status`` as proto3 JSON (``{"code", "message", "details": [...]}``)."""
    doc = json_format.MessageToDict(status, preserving_proto_field_name=False)
    doc.setdefault("code", status.code)
    doc.setdefault("message", status.message)
    doc.setdefault("details", [])
    return json.dumps(doc, separators=(",", ":")).encode()


def status_response(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None = None
) -> Response:
    """An error answer: the HTTP status of ``code`` and a ``google.rpc.Status`` body."""
    if status is None:
        status = status_pb2.Status(code=code.value[0], message=message)
    headers = {"Cache-Control": "no-store"}
    if code == grpc.StatusCode.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = 'Bearer realm="badge-service"'
    return Response(status_body(status), http_status(code), headers, media_type=JSON)


def failure_response(failure: RpcFailure) -> Response:
    """The answer to a call that failed over gRPC."""
    return status_response(failure.code, failure.message, failure.status)

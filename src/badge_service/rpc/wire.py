"""Protobuf wire-format pieces, for replies assembled from stored message bytes.

A reply built by concatenating encoded fields is a valid message: parsers accept fields in any
order and merge repeated ones (the protobuf encoding guide, "Message Structure"). The read
paths of badges use this to send each badge's stored bytes without parsing them. The few lines
here are hand-written because protobuf's own encoder helpers are internal API.

And the registration of servicers whose methods answer with such bytes (``add_servicer``,
``serialized``): typed so, and sent unserialized.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass


def varint(value: int) -> bytes:
    """The base-128 varint encoding of a non-negative int."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    """A non-negative integer field (wire type 0) with its key."""
    return varint(number << 3) + varint(value)


def message_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) with its key, e.g. one item of a repeated
    message field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


# Registering servicers whose methods may answer with bytes.
#
# The generated ``add_*Servicer_to_server`` functions serialize every reply with its message
# type's SerializeToString, and the generated servicer bases (mypy-protobuf) declare that
# message type as each method's return: a method that answers with bytes it stored (or
# assembled from stored pieces) could only override them with ``type: ignore[override]``, and
# its bytes went out through a serializer that had to look at every reply to let them pass.
# So such a servicer does not subclass the generated base; ``add_servicer`` registers it from
# the service's descriptor instead, the same handlers the generated function builds, except
# that a method marked with ``serialized(Message)`` is declared (and type-checked) to return
# bytes, and its reply serializer is none at all: gRPC sends the bytes as they are. The
# request and reply types come from the descriptor (the contract), and the mark names the
# message the bytes encode, which must be the method's reply type: a servicer that lacks a
# method of the contract, or marks one with another message, fails at start, not at a call.

_SERIALIZED = "__serialized_reply__"

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[bytes]])


def serialized(reply: type[Message]) -> Callable[[Handler], Handler]:
    """Marks a servicer method that answers with ``reply`` already serialized (its type says
    bytes, and add_servicer sends them as they are). Stored replies use it: the bytes a
    use case returns go out without being parsed and serialized again."""

    def mark(method: Handler) -> Handler:
        setattr(method, _SERIALIZED, reply)
        return method

    return mark


def serialized_reply(method: object) -> type[Message] | None:
    """The message a method marked with ``serialized`` answers with, serialized; None for a
    method that answers with a message."""
    reply: type[Message] | None = getattr(method, _SERIALIZED, None)
    return reply


def method_handlers(
    service: ServiceDescriptor, servicer: object
) -> dict[str, grpc.RpcMethodHandler]:
    """The method handlers of ``servicer`` for ``service``, built from its descriptor (see
    the comment above ``serialized``)."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        behavior = getattr(servicer, method.name, None)
        if behavior is None:
            raise TypeError(f"{type(servicer).__name__} lacks {service.full_name}.{method.name}")
        reply = GetMessageClass(method.output_type)
        declared = serialized_reply(behavior)
        if declared is not None and declared.DESCRIPTOR is not method.output_type:
            raise TypeError(
                f"{type(servicer).__name__}.{method.name} is marked as answering with"
                f" {declared.DESCRIPTOR.full_name}, but {method.full_name} answers with"
                f" {method.output_type.full_name}"
            )
        factory = _FACTORIES[method.client_streaming, method.server_streaming]
        handlers[method.name] = factory(
            behavior,
            request_deserializer=GetMessageClass(method.input_type).FromString,
            response_serializer=None if declared is not None else reply.SerializeToString,
        )
    return handlers


def add_servicer(server: grpc.aio.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Registers ``servicer`` as ``service`` on ``server``, as the generated
    ``add_*Servicer_to_server`` would, with methods marked ``serialized`` sending their bytes
    unserialized."""
    handlers = method_handlers(service, servicer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}

"""Protobuf wire-format pieces, for replies assembled from stored message bytes.

A reply built by concatenating encoded fields is a valid message: parsers accept fields in any
order and merge repeated ones (the protobuf encoding guide, "Message Structure"). The read
paths of badges use this to send each badge's stored bytes without parsing them. The few lines
here are hand-written because protobuf's own encoder helpers are internal API.

And the registration of servicers whose methods answer with such bytes (``add_servicer``,
``serialized``): typed so, and sent unserialized.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
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
_SERIALIZED = "__serialized_reply__"

# A servicer method that answers with bytes: a unary reply, or a stream of them.
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[bytes] | AsyncIterator[bytes]])


def serialized(reply: type[Message]) -> Callable[[Handler], Handler]:
    """Marks a servicer method that answers with ``reply`` already serialized: its type says
    bytes (checked), and add_servicer sends them as they are. Stored replies use it: the
    bytes a use case returns go out without being parsed and serialized again."""

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
    add_servicer); TypeError when the servicer does not match the contract."""
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
    ``add_*Servicer_to_server`` would, except that methods marked ``serialized`` send their
    bytes unserialized.

    Why: the generated function serializes every reply with its message type's
    SerializeToString, and the generated servicer base (mypy-protobuf) declares that message
    type as each method's return. A method answering with bytes it stored, or assembled from
    stored pieces, could only override the base with ``type: ignore[override]``, and its bytes
    went out through a serializer that had to look at every reply to let them pass.

    How: such a servicer does not subclass the generated base. Its bytes methods are marked
    ``@serialized(Message)``, which makes their declared return bytes (mypy checks it) and
    names the message the bytes encode. This function builds the handlers from the service's
    descriptor, so the contract decides the methods, their streaming kinds, request types and
    reply types: the request deserializer is the request message's FromString, the reply
    serializer the reply message's SerializeToString, or none at all for a marked method (gRPC
    sends bytes as they are). A servicer that lacks a method of the contract, or marks one with
    a message other than the method's reply, is refused here, when the server is built.

    A handler may also be a plain function that returns its coroutine (rpc.badges does, to
    save a coroutine per call on the hottest paths): every call to our services passes
    through the interceptor (rpc.interceptor), whose wrapper awaits what a handler returns.
    """
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

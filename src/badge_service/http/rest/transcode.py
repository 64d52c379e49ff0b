"""Every RPC over HTTP/JSON from its ``google.api.http`` annotation, as grpc-gateway serves it."""

from __future__ import annotations

from starlette.routing import BaseRoute

from badge_service.http.rest.gateway import Gateway


def routes(gateway: Gateway) -> list[BaseRoute]:
    """The transcoded routes of every RPC whose route is not a vendor's."""
    return []

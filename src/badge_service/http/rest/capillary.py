"""Capillary's REST paths from its seed, in its own spellings and envelope."""

from __future__ import annotations

from starlette.routing import BaseRoute

from badge_service.http.rest.gateway import Gateway


def routes(gateway: Gateway) -> list[BaseRoute]:
    """This vendor's routes, served through gateway."""
    return []

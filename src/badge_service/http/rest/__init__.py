"""The HTTP face's REST routes: every RPC over HTTP/JSON, through an in-process gRPC gateway.

A request is decoded here into the RPC's request message and sent over a private gRPC channel
to this process's own server (``gateway.Gateway``), exactly as grpc-gateway or Envoy's
transcoder would send it. So every rule, every check of the key and its role, every limit,
request id, metric and trace of the gRPC path applies unchanged, and nothing here can disagree
with it: this package never imports the use cases or the store.

- ``capillary``, ``crowdtwist``, ``credly``, ``badgr``: each vendor's seed paths with that
  vendor's spellings, envelopes, paging links and error bodies;
- ``transcode``: every other ``google.api.http`` route (and the project's own
  ``additional_bindings``), as grpc-gateway serves them, errors as ``google.rpc.Status`` JSON;
- ``openapi``: the OpenAPI 3.1 document of the transcoded routes.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from badge_service.http.rest import badgr, capillary, credly, crowdtwist, openapi, transcode
from badge_service.http.rest.gateway import Gateway


def routes(gateway: Gateway) -> list[BaseRoute]:
    """Every REST route, vendors' first: a vendor's path answers in its envelope even where a
    transcoded route of the same RPC would match too."""
    return [
        *capillary.routes(gateway),
        *crowdtwist.routes(gateway),
        *credly.routes(gateway),
        *badgr.routes(gateway),
        *transcode.routes(gateway),
        *openapi.routes(),
    ]

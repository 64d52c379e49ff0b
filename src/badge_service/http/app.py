"""The HTTP face's ASGI application: hosted Open Badges 2.0 and health.

Public documents (no key; Open Badges hosted verification, backpacks and browsers):

- ``/public/issuers/{entity_id}``: the issuer's Profile (a page for a browser), which names its
  ``revocationList``
  (``/public/issuers/{entity_id}/revocations``, a RevocationList of its revoked assertions);
- ``/public/badges/{entity_id}`` (and ``/image``): the BadgeClass (a page for a browser) and
  its image;
- ``/public/assertions/{id}`` (and ``/image``, baked PNG or ``?format=svg``): the Assertion;
  a revoked one answers 410 Gone in the spec's short form; ``Accept: text/html`` gets a small
  page for people instead.

Every public answer carries a strong ETag of its body (``If-None-Match`` gets 304),
``Cache-Control: public, max-age=55`` and ``Access-Control-Allow-Origin: *`` (backpacks fetch
from browsers). A minute of caching takes repeated fetches of popular badges off the
database, and a revocation still reaches every verifier within that minute.

Health for load balancers that cannot speak gRPC health: ``/healthz`` (200 while the process
serves) and ``/readyz`` (200 while gRPC health says SERVING, else 503).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import html
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from badge_service.domain import openbadges
from badge_service.domain.awards import Award, AwardState
from badge_service.domain.badge_classes import BadgeClass
from badge_service.domain.errors import DomainError, NotFound
from badge_service.domain.fields import is_http_url
from badge_service.http import rest
from badge_service.http.access import AccessLog
from badge_service.http.rest.gateway import Gateway
from badge_service.http.status import CODE_OF_HTTP, http_status, status_doc
from badge_service.service import Database, hosted
from badge_service.service.recent import Recent

log = logging.getLogger("badge_service.http")

LD_JSON = "application/ld+json"
JSON = "application/json"
HTML = "text/html; charset=utf-8"
# Short: a revocation must reach verifiers within a minute, and a verifier fetching again
# within it (a page load, a backpack refresh) costs no request. 55 s: another process may
# still answer from what it read up to hosted.RECENT_SECONDS (5 s) before the revocation.
PUBLIC_CACHE = "public, max-age=55"
NO_STORE = "no-store"
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "ETag"}
# Public answers include stored images (an SVG is a document that can carry script) and a
# page made of stored text: nothing of them may run, load or be sniffed as something else.
LOCKED = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src * data:; style-src 'unsafe-inline'; "
    "sandbox",
}

Handler = Callable[[Request], Awaitable[Response]]
# Starlette adds HEAD to GET.
PUBLIC_METHODS = ["GET", "OPTIONS"]


def _json(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _error(
    code: str,
    message: str,
    cache: str = NO_STORE,
    *,
    error: DomainError | None = None,
    status: int | None = None,
) -> Response:
    """An error as JSON ``google.rpc.Status`` (the REST routes' form too), with the HTTP
    status of its code (``status`` when given) and, for a domain error, its ErrorInfo and
    field violations."""
    doc = status_doc(code, message)
    if error is not None:
        doc = status_doc(
            code,
            message,
            reason=error.reason,
            metadata=error.metadata,
            violations=[(v.field, v.description) for v in error.violations],
        )
    body = _json(doc)
    http = http_status(code) if status is None else status
    return Response(body, http, media_type=JSON, headers={"Cache-Control": cache, **CORS})


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _none_match(header: str | None, etag: str) -> bool:
    """Whether If-None-Match names ``etag`` (weak comparison, as RFC 9110 says for it)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _public_headers(etag: str, vary: bool) -> dict[str, str]:
    headers = {"ETag": etag, "Cache-Control": PUBLIC_CACHE, **CORS, **LOCKED}
    if vary:
        headers["Vary"] = "Accept"
    return headers


def _public(
    request: Request, body: bytes, media_type: str, status: int = 200, vary: bool = False
) -> Response:
    """A public answer with its ETag, caching and CORS headers; 304 when the client holds
    it already (only a 200 is ever answered 304, as RFC 9110 says)."""
    etag = _etag(body)
    headers = _public_headers(etag, vary)
    if status == 200 and _none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, status, media_type=media_type, headers=headers)


class _Encoded(Response):
    """A Response whose status line and headers were made already (by Rendered)."""

    def __init__(self, status: int, body: bytes, raw_headers: list[tuple[bytes, bytes]]) -> None:
        # Response's own __init__ would encode the headers again; these are its attributes.
        self.status_code = status
        self.body = body
        self.background = None
        self.raw_headers = list(raw_headers)  # a copy: Response.headers may change it


class Rendered:
    """A public answer rendered once, as _public makes it: its body, ETag and encoded headers,
    and the value it was rendered from (``source``), to tell when it is stale."""

    __slots__ = ("_full", "_not_modified", "body", "etag", "source", "status")

    def __init__(
        self, source: object, body: bytes, media_type: str, status: int, *, vary: bool
    ) -> None:
        self.source = source
        self.body = body
        self.status = status
        self.etag = _etag(body)
        headers = _public_headers(self.etag, vary)
        self._full = Response(body, status, headers=headers, media_type=media_type).raw_headers
        self._not_modified = Response(status_code=304, headers=headers).raw_headers

    def answer(self, request: Request) -> Response:
        """The answer to ``request``: 304 when it holds this body already."""
        if self.status == 200 and _none_match(request.headers.get("if-none-match"), self.etag):
            return _Encoded(304, b"", self._not_modified)
        return _Encoded(self.status, self.body, self._full)


def wants_html(request: Request) -> bool:
    """Whether the client asks for a page (a browser) rather than the JSON-LD document:
    ``text/html`` accepted and no JSON type named. Verifiers send a JSON type or nothing."""
    accept = request.headers.get("accept", "").lower()
    return "text/html" in accept and "json" not in accept


def data_uri_bytes(uri: str) -> tuple[bytes, str] | None:
    """The bytes and media type of a ``data:`` URI, or None when it is not one that decodes."""
    if not uri.startswith("data:"):
        return None
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        return None
    if header.endswith(";base64"):
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return None
        header = header[: -len(";base64")]
    else:
        data = unquote_to_bytes(payload)
    media_type = header.split(";", 1)[0] or "text/plain"
    return data, media_type


def _date(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


_VERDICTS = {
    AwardState.ACTIVE: "Valid",
    AwardState.EXPIRED: "Expired",
    AwardState.REVOKED: "Revoked",
}


Cell = tuple[str, str, str | None]  # (label, text, link or None)


def _page(title: str, image_url: str | None, description: str, rows: list[Cell]) -> str:
    """A small page for people: image, heading, description and a table, every value escaped;
    links only to http(s) URLs (stored text never becomes a ``javascript:`` link)."""
    e = html.escape
    cells = []
    for label, text, link in rows:
        value = e(text)
        if link is not None and is_http_url(link):
            value = f'<a href="{e(link)}">{value}</a>'
        cells.append(f"<tr><th>{e(label)}</th><td>{value}</td></tr>")
    image = ""
    if image_url and (is_http_url(image_url) or image_url.startswith("data:image/")):
        image = f'<img src="{e(image_url)}" alt="{e(title)}" width="200">'
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title></head><body>{image}"
        f"<h1>{e(title)}</h1><p>{e(description)}</p>"
        f"<table>{''.join(cells)}</table></body></html>\n"
    )


def assertion_page(found: hosted.HostedAssertion, issuer_name: str, image_url: str) -> str:
    """The page a browser gets for an assertion: image, badge, issuer, dates and its state."""
    award, bc = found.award, found.badge_class
    rows: list[Cell] = [
        ("Badge", bc.name, None),
        ("Issuer", issuer_name, None),
        ("Issued", _date(award.issued_at), None),
    ]
    if award.expires_at is not None:
        rows.append(("Expires", _date(award.expires_at), None))
    verdict = _VERDICTS[found.state]
    if found.state is AwardState.REVOKED and award.revocation_reason:
        verdict = f"{verdict}: {award.revocation_reason}"
    rows.append(("Status", verdict, None))
    return _page(bc.name, image_url, bc.description, rows)


def issuer_page(profile: dict[str, Any]) -> str:
    """The page a browser gets for an issuer: its image, name, description, website, email."""
    url, email = str(profile.get("url", "")), str(profile.get("email", ""))
    rows: list[Cell] = [("Website", url, url), ("Email", email, None)]
    image = profile.get("image")
    return _page(
        str(profile.get("name", "")),
        image if isinstance(image, str) else None,
        str(profile.get("description", "")),
        rows,
    )


def badge_class_page(doc: dict[str, Any], issuer_name: str) -> str:
    """The page a browser gets for a badge class: image, name, description, issuer (linked to
    its page) and criteria."""
    criteria = doc.get("criteria") or {}
    rows: list[Cell] = [("Issuer", issuer_name, str(doc.get("issuer", "")))]
    if criteria.get("narrative"):
        rows.append(("Criteria", str(criteria["narrative"]), None))
    if criteria.get("id"):
        rows.append(("Criteria URL", str(criteria["id"]), str(criteria["id"])))
    if doc.get("tags"):
        rows.append(("Tags", ", ".join(str(t) for t in doc["tags"]), None))
    return _page(
        str(doc.get("name", "")), f"{doc['id']}/image", str(doc.get("description", "")), rows
    )


class HttpFace:
    """The handlers, bound to the store and the public base URL they write into documents."""

    def __init__(self, db: Database, base_url: str, ready: Callable[[], bool]) -> None:
        self._db = db
        self._base = base_url
        self._ready = ready
        # Rendered assertions (see assertion), kept as the recent reads they come from are.
        self._assertions: Recent[Rendered] = Recent()

    async def healthz(self, request: Request) -> Response:
        """Liveness: 200 while the process serves HTTP at all."""
        return Response(
            _json({"status": "ok"}), media_type=JSON, headers={"Cache-Control": NO_STORE}
        )

    async def readyz(self, request: Request) -> Response:
        """Readiness, as gRPC health says it: 200 SERVING while the store answers and the
        server is not draining, 503 NOT_SERVING otherwise."""
        ready = self._ready()
        return Response(
            _json({"status": "SERVING" if ready else "NOT_SERVING"}),
            200 if ready else 503,
            media_type=JSON,
            headers={"Cache-Control": NO_STORE},
        )

    async def issuer(self, request: Request) -> Response:
        """The issuer's Open Badges Profile."""
        doc = await hosted.issuer_profile(self._db, request.path_params["entity_id"], self._base)
        if wants_html(request):
            return _public(request, issuer_page(doc).encode("utf-8"), HTML, vary=True)
        return _public(request, _json(doc), LD_JSON, vary=True)

    async def revocations(self, request: Request) -> Response:
        """The issuer's RevocationList."""
        doc = await hosted.revocation_list(self._db, request.path_params["entity_id"], self._base)
        return _public(request, _json(doc), LD_JSON)

    async def badge_class(self, request: Request) -> Response:
        """The BadgeClass document."""
        doc = await hosted.badge_class_document(
            self._db, request.path_params["entity_id"], self._base
        )
        if wants_html(request):
            bc = await hosted.badge_class(self._db, request.path_params["entity_id"])
            profile = await hosted.issuer_profile(self._db, bc.issuer_entity_id, self._base)
            page = badge_class_page(doc, str(profile.get("name", "")))
            return _public(request, page.encode("utf-8"), HTML, vary=True)
        return _public(request, _json(doc), LD_JSON, vary=True)

    async def badge_class_image(self, request: Request) -> Response:
        """The class's image: the bytes of a ``data:`` image, or a redirect to its URL."""
        entity_id = request.path_params["entity_id"]
        bc = await hosted.badge_class(self._db, entity_id)
        decoded = data_uri_bytes(bc.image)
        if decoded is not None:
            return _public(request, decoded[0], decoded[1])
        if is_http_url(bc.image):
            return RedirectResponse(bc.image, 302, headers={"Cache-Control": PUBLIC_CACHE, **CORS})
        raise NotFound("badge class image", entity_id)

    async def assertion(self, request: Request) -> Response:
        """The hosted Assertion (410 Gone in the short form once revoked); a page for a
        browser."""
        award_id = request.path_params["id"]
        entry = await hosted.class_award(self._db, award_id)
        if not wants_html(request):
            # The document of a recent read is rendered once: a popular assertion is fetched
            # again and again, and its JSON, ETag and headers cost more than the rest.
            made = self._assertions.get(award_id)
            if made is None or made.source is not entry:
                made = self._render_assertion(entry)
                self._assertions.put(award_id, made)
            return made.answer(request)
        found = hosted.assertion_of(entry, self._base)
        status = 410 if found.state is AwardState.REVOKED else 200
        profile = await hosted.issuer_profile(
            self._db, found.badge_class.issuer_entity_id, self._base
        )
        image = openbadges.open_badge_id(
            self._base, openbadges.BADGE_CLASSES_PATH, found.badge_class.entity_id
        )
        page = assertion_page(found, str(profile.get("name", "")), f"{image}/image")
        return _public(request, page.encode("utf-8"), HTML, status, vary=True)

    def _render_assertion(self, entry: tuple[Award, BadgeClass]) -> Rendered:
        found = hosted.assertion_of(entry, self._base)
        if found.state is AwardState.REVOKED:
            return Rendered(entry, _json(found.document), JSON, 410, vary=True)
        return Rendered(entry, _json(found.document), LD_JSON, 200, vary=True)

    async def assertion_image(self, request: Request) -> Response:
        """The award's class image baked with its Assertion: PNG, or SVG with
        ``?format=svg``; 410 Gone once revoked."""
        fmt = request.query_params.get("format", "png").lower()
        if fmt not in ("png", "svg"):
            return _error("INVALID_ARGUMENT", "format must be png or svg")
        found, baked = await hosted.baked_assertion(
            self._db, request.path_params["id"], self._base, svg=fmt == "svg"
        )
        if baked is None:
            return _public(request, _json(found.document), JSON, 410)
        return _public(request, baked.data, baked.content_type)


def _preflight() -> Response:
    """CORS preflight of a public document: GET from any origin."""
    return Response(
        status_code=204,
        headers={
            **CORS,
            "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
            "Access-Control-Allow-Headers": "Accept, If-None-Match",
            "Access-Control-Max-Age": "86400",
        },
    )


def _guarded(handler: Handler) -> Handler:
    """A public route: OPTIONS is its CORS preflight; domain errors as JSON with their HTTP
    status; anything else a 500 that says nothing of the fault (logged with its trace)."""

    async def run(request: Request) -> Response:
        if request.method == "OPTIONS":
            return _preflight()
        try:
            return await handler(request)
        except DomainError as exc:
            exc.report()
            # A 404 is as cacheable as a document (ids are never reused); the rest are not.
            cache = PUBLIC_CACHE if http_status(exc.code) == 404 else NO_STORE
            return _error(exc.code, exc.message, cache, error=exc)
        except Exception:
            log.exception("unhandled error", extra={"path": request.url.path})
            return _error("INTERNAL", "internal error")

    return run


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = CODE_OF_HTTP.get(exc.status_code, "UNKNOWN")
    return _error(code, str(exc.detail), status=exc.status_code)


def build_app(
    db: Database, base_url: str, ready: Callable[[], bool], gateway: Gateway | None = None
) -> ASGIApp:
    """The ASGI application of the HTTP face: documents under ``base_url`` (already
    normalised), readiness from ``ready``, the REST routes through ``gateway`` when given,
    each request on the access log."""
    face = HttpFace(db, base_url, ready)
    issuers, classes = openbadges.ISSUERS_PATH, openbadges.BADGE_CLASSES_PATH
    assertions = openbadges.ASSERTIONS_PATH
    public = {
        f"{issuers}/{{entity_id}}": face.issuer,
        f"{issuers}/{{entity_id}}/{openbadges.REVOCATIONS_PATH}": face.revocations,
        f"{classes}/{{entity_id}}": face.badge_class,
        f"{classes}/{{entity_id}}/image": face.badge_class_image,
        f"{assertions}/{{id}}": face.assertion,
        f"{assertions}/{{id}}/image": face.assertion_image,
    }
    routes: list[BaseRoute] = [
        Route("/healthz", face.healthz, methods=["GET"]),
        Route("/readyz", face.readyz, methods=["GET"]),
        *(
            Route(f"/public/{path}", _guarded(handler), methods=PUBLIC_METHODS)
            for path, handler in public.items()
        ),
    ]
    if gateway is not None:
        routes.extend(rest.routes(gateway))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    return AccessLog(app)

"""Open Badges baking: an assertion carried inside a badge image, as the Open Badges 2.0
baking specification defines it. Pure functions on bytes and text, no I/O.

- PNG: an ``iTXt`` chunk with keyword ``openbadges``, uncompressed, empty language tag and
  translated keyword, holding the assertion JSON (or its URL). Baking replaces any earlier
  ``openbadges`` chunk and puts the new one just before ``IEND``.
- SVG: an ``<openbadges:assertion verify="URL">`` element, first child of the root ``svg``,
  in the ``http://openbadges.org`` namespace (declared on the element, so a root binding the
  prefix elsewhere cannot capture it), with the assertion JSON in a CDATA section. Baking
  splices bytes: everything but the assertion element stays exactly as it was.

Every image here may come from a client, so parsing is strict and bounded: a PNG must be a
well-formed chunk sequence with valid CRCs from ``IHDR`` to ``IEND``; an SVG must be UTF-8
XML without a DOCTYPE (which also rules out entity declarations, hence entity expansion and
external entity attacks; the check runs inside the parser, as defusedxml does, because
defusedxml is not a dependency of this project). Anything else is INVALID_ARGUMENT naming
``baked_image``.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any
from xml.dom import minidom
from xml.parsers import expat
from xml.sax.saxutils import quoteattr

from badge_service.domain import limits
from badge_service.domain.errors import InvalidArgument, LimitExceeded

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CONTENT_TYPE = "image/png"
SVG_CONTENT_TYPE = "image/svg+xml"
KEYWORD = "openbadges"
SVG_NS = "http://www.w3.org/2000/svg"
OPENBADGES_NS = "http://openbadges.org"
ASSERTION_TAG = "openbadges:assertion"

# The field a client's image arrives in (VerifyAwardRequest.baked_image).
IMAGE_FIELD = "baked_image"
# Bounds on what a client may send (limits.BAKED_*): an assertion is a few KiB; a compressed
# chunk may not inflate beyond TEXT_MAX (no zip bombs).
IMAGE_MAX = limits.BAKED_IMAGE_BYTES
TEXT_MAX = limits.BAKED_TEXT_BYTES
# PNG chunk lengths are at most 2^31 - 1 (PNG spec, 5.3).
_CHUNK_MAX = 2**31 - 1

# Characters XML 1.0 cannot hold at all (a badge name may carry them; the title drops them).
_XML_UNSAFE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_CHUNK_HEAD = struct.Struct(">I4s")
_CRC = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One PNG chunk: its 4-byte type and its data."""

    type: bytes
    data: bytes


def _bad(description: str, where: str) -> InvalidArgument:
    return InvalidArgument(where, description)


def _too_big(description: str, where: str, limit: limits.Limit) -> LimitExceeded:
    return LimitExceeded(where, description, limit.name, limit)


# --- PNG ------------------------------------------------------------------------------------


def is_png(data: bytes) -> bool:
    """Whether ``data`` starts with the PNG signature."""
    return data.startswith(PNG_SIGNATURE)


def read_png_chunks(data: bytes, where: str = IMAGE_FIELD) -> list[Chunk]:
    """The chunks of a PNG, checked: signature, lengths within the data, a valid CRC on each
    chunk, ``IHDR`` first, ``IEND`` last with nothing after it. INVALID_ARGUMENT otherwise."""
    if len(data) > IMAGE_MAX:
        raise _too_big(f"is larger than {IMAGE_MAX} bytes", where, IMAGE_MAX)
    if not is_png(data):
        raise _bad("is not a PNG (bad signature)", where)
    chunks: list[Chunk] = []
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + _CHUNK_HEAD.size > len(data):
            raise _bad("is not a valid PNG (truncated chunk header)", where)
        length, kind = _CHUNK_HEAD.unpack_from(data, pos)
        if length > _CHUNK_MAX:
            raise _bad("is not a valid PNG (chunk length out of range)", where)
        start = pos + _CHUNK_HEAD.size
        end = start + length
        if end + _CRC.size > len(data):
            raise _bad("is not a valid PNG (truncated chunk)", where)
        if not kind.isalpha() or not kind.isascii():
            raise _bad("is not a valid PNG (bad chunk type)", where)
        body = data[start:end]
        (crc,) = _CRC.unpack_from(data, end)
        if crc != zlib.crc32(kind + body):
            raise _bad(f"is not a valid PNG (bad CRC in a {kind.decode()} chunk)", where)
        if not chunks and kind != b"IHDR":
            raise _bad("is not a valid PNG (IHDR is not the first chunk)", where)
        chunks.append(Chunk(kind, body))
        pos = end + _CRC.size
        if kind == b"IEND":
            break
    if pos != len(data):
        raise _bad("is not a valid PNG (data after IEND)", where)
    return chunks


def write_png_chunks(chunks: list[Chunk]) -> bytes:
    """A PNG of ``chunks``, each with its length and CRC."""
    out = bytearray(PNG_SIGNATURE)
    for c in chunks:
        out += _CHUNK_HEAD.pack(len(c.data), c.type)
        out += c.data
        out += _CRC.pack(zlib.crc32(c.type + c.data))
    return bytes(out)


def itxt_chunk(keyword: str, text: str) -> Chunk:
    """An uncompressed iTXt chunk: keyword, NUL, compression flag 0, method 0, empty language
    tag, NUL, empty translated keyword, NUL, then the UTF-8 text."""
    return Chunk(b"iTXt", keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode())


def _keyword_of(chunk: Chunk) -> bytes | None:
    if chunk.type not in (b"iTXt", b"tEXt", b"zTXt"):
        return None
    keyword, sep, _ = chunk.data.partition(b"\x00")
    return keyword if sep else None


def _inflate(data: bytes, where: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, TEXT_MAX + 1)
    except zlib.error:
        raise _bad("is not a valid PNG (bad compressed text)", where) from None
    if len(out) > TEXT_MAX or inflater.unconsumed_tail:
        raise _too_big(f"carries a text chunk larger than {TEXT_MAX} bytes", where, TEXT_MAX)
    return out


def _text_of(chunk: Chunk, where: str) -> str:
    """The text of an ``openbadges`` text chunk (iTXt as baked by Open Badges 2.0; tEXt and
    zTXt as some 1.x bakers wrote them)."""
    _, _, rest = chunk.data.partition(b"\x00")
    try:
        if chunk.type == b"tEXt":
            return rest.decode("latin-1")
        if chunk.type == b"zTXt":
            if rest[:1] != b"\x00":
                raise _bad("is not a valid PNG (unknown compression method)", where)
            return _inflate(rest[1:], where).decode("latin-1")
        if len(rest) < 2:
            raise _bad("is not a valid PNG (truncated iTXt chunk)", where)
        flag, method = rest[0], rest[1]
        parts = rest[2:].split(b"\x00", 2)
        if len(parts) != 3:
            raise _bad("is not a valid PNG (truncated iTXt chunk)", where)
        body = parts[2]
        if flag == 1:
            if method != 0:
                raise _bad("is not a valid PNG (unknown compression method)", where)
            body = _inflate(body, where)
        elif flag != 0:
            raise _bad("is not a valid PNG (bad iTXt compression flag)", where)
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("carries an openbadges text that is not valid UTF-8", where) from None


def bake_png(png: bytes, assertion: str, where: str = IMAGE_FIELD) -> bytes:
    """``png`` with ``assertion`` (the assertion JSON, or its URL) in an ``openbadges`` iTXt
    chunk just before IEND; any earlier ``openbadges`` text chunk is removed."""
    chunks = [c for c in read_png_chunks(png, where) if _keyword_of(c) != KEYWORD.encode()]
    chunks.insert(len(chunks) - 1, itxt_chunk(KEYWORD, assertion))
    return write_png_chunks(chunks)


def extract_png(png: bytes, where: str = IMAGE_FIELD) -> str | None:
    """The text of the PNG's ``openbadges`` chunk, or None when it has none. A PNG with two
    such chunks is refused: which one counts would be ambiguous."""
    found = [c for c in read_png_chunks(png, where) if _keyword_of(c) == KEYWORD.encode()]
    if len(found) > 1:
        raise _bad("carries more than one openbadges chunk", where)
    return _text_of(found[0], where) if found else None


def placeholder_png(size: int = 64, rgb: tuple[int, int, int] = (0x2F, 0x6F, 0xB5)) -> bytes:
    """A valid ``size`` x ``size`` PNG of one colour (8-bit RGB), for badges whose image
    this service cannot read (it never fetches remote URLs)."""
    row = b"\x00" + bytes(rgb) * size  # filter type 0 (None), then the pixels
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return write_png_chunks(
        [
            Chunk(b"IHDR", ihdr),
            Chunk(b"IDAT", zlib.compress(row * size, 9)),
            Chunk(b"IEND", b""),
        ]
    )


# --- SVG ------------------------------------------------------------------------------------


def decode_svg(data: bytes, where: str = IMAGE_FIELD) -> str:
    """The text of SVG bytes; only UTF-8 (with or without a BOM) is accepted."""
    if len(data) > IMAGE_MAX:
        raise _too_big(f"is larger than {IMAGE_MAX} bytes", where, IMAGE_MAX)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _bad("is not a PNG or a UTF-8 SVG", where) from None


class _Refused(Exception):
    pass


def _refuse_doctype(*_: Any) -> Any:
    raise _Refused("has a DOCTYPE; DTDs and entity declarations are not accepted")


@dataclass(slots=True)
class _Assertion:
    """An ``openbadges:assertion`` element found by the scan: its byte span, verify URL and
    text (CDATA included)."""

    start: int
    end: int = -1
    verify: str = ""
    text: list[str] = field(default_factory=list)


class _SvgScan:
    """One expat pass over SVG bytes. Refuses any DOCTYPE (so no entity declarations,
    expansion or external references) the moment expat meets it, checks the root is ``svg``
    in the SVG namespace, and notes byte positions for splicing: where the root's start tag
    ends and the span of every ``openbadges:assertion`` element. Splicing the original bytes
    leaves the rest of the image exactly as it was (a DOM round trip would rewrite it), and
    expat's single pass in C keeps large images cheap."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.root_name = ""  # the root's qualified name as written (prefix:local or local)
        self.root_open_end = -1  # first byte after the root's start tag
        self.root_empty = False  # <svg .../>
        self.root_end = -1  # first byte after the root element
        self.assertions: list[_Assertion] = []
        self._depth = 0
        self._open: list[_Assertion] = []  # assertion elements being read (nested ones too)
        self._assertion_depths: list[int] = []
        self._awaiting_root_end = False
        # The document's encoding declaration is overridden: the bytes are UTF-8.
        parser = expat.ParserCreate(encoding="UTF-8", namespace_separator=" ")
        parser.namespace_prefixes = True
        parser.StartDoctypeDeclHandler = _refuse_doctype
        parser.EntityDeclHandler = _refuse_doctype
        parser.UnparsedEntityDeclHandler = _refuse_doctype
        parser.ExternalEntityRefHandler = _refuse_doctype
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._chars
        parser.CommentHandler = self._other
        parser.ProcessingInstructionHandler = self._other
        parser.StartCdataSectionHandler = self._other
        parser.EndCdataSectionHandler = self._other
        self._parser = parser
        try:
            parser.Parse(data, True)
        except _Refused as exc:
            raise _bad(f"is not an acceptable SVG: {exc}", where) from None
        except expat.ExpatError as exc:
            message = expat.errors.messages[exc.code]
            raise _bad(f"is not well-formed XML ({message})", where) from None
        if not self.root_name:
            raise _bad("is not an SVG (the root element is not svg in the SVG namespace)", where)

    def _mark(self) -> int:
        at: int = self._parser.CurrentByteIndex
        if self._awaiting_root_end:
            self.root_open_end = at
            self._awaiting_root_end = False
        return at

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        at = self._mark()
        uri, _, rest = name.partition(" ")
        local, _, prefix = rest.partition(" ")
        if self._depth == 0:
            if uri != SVG_NS or local != "svg":
                raise _Refused("the root element is not svg in the SVG namespace")
            self.root_name = f"{prefix}:{local}" if prefix else local
            self._awaiting_root_end = True
        elif uri == OPENBADGES_NS and local == "assertion":
            found = _Assertion(at, verify=attrs.get("verify", ""))
            self.assertions.append(found)
            self._open.append(found)
            self._assertion_depths.append(self._depth)
        self._depth += 1

    def _end(self, name: str) -> None:
        at: int = self._parser.CurrentByteIndex
        # An empty-element tag (<x/>) ends where its event is reported; an end tag (</x>)
        # starts there and ends at its '>' (an end tag holds only a name and blanks).
        empty = self.data[at : at + 2] != b"</"
        end = at if empty else self.data.index(b">", at) + 1
        if self._awaiting_root_end:
            # The root had no content: <svg></svg> ends its start tag here, <svg/> has none.
            self.root_open_end = -1 if empty else at
            self.root_empty = empty
            self._awaiting_root_end = False
        if self._depth == 1:
            self.root_end = end
        self._depth -= 1
        if self._assertion_depths and self._assertion_depths[-1] == self._depth:
            self._assertion_depths.pop()
            self._open.pop().end = end

    def _chars(self, text: str) -> None:
        self._mark()
        if self._open:
            self._open[-1].text.append(text)

    def _other(self, *_: Any) -> None:
        self._mark()


def _cdata_safe(text: str) -> str:
    # A CDATA section ends at the first "]]>"; in JSON ">" only occurs inside strings, where
    # \u003e means the same character, so escaping every ">" keeps the JSON identical. The
    # same holds for characters XML cannot carry at all.
    text = _XML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text.replace(">", "\\u003e")


def _assertion_element(assertion_json: str, verify_url: str) -> bytes:
    # The namespace is declared on the element itself, so it holds whatever the root binds
    # the prefix to.
    verify = quoteattr(_XML_UNSAFE.sub("", verify_url))
    return (
        f'<{ASSERTION_TAG} xmlns:openbadges="{OPENBADGES_NS}" verify={verify}>'
        f"<![CDATA[{_cdata_safe(assertion_json)}]]></{ASSERTION_TAG}>"
    ).encode()


def _svg_bytes(svg: str, where: str) -> bytes:
    data = svg.encode("utf-8", errors="strict")
    if len(data) > IMAGE_MAX:
        raise _too_big(f"is larger than {IMAGE_MAX} bytes", where, IMAGE_MAX)
    return data


def bake_svg(svg: str, assertion_json: str, verify_url: str, where: str = IMAGE_FIELD) -> str:
    """``svg`` with an ``openbadges:assertion`` element (verify=``verify_url``, the JSON in
    CDATA) as the first child of the root; earlier assertion elements are removed and every
    other byte is kept."""
    data = _svg_bytes(svg, where)
    scan = _SvgScan(data, where)
    element = _assertion_element(assertion_json, verify_url)
    if scan.root_empty:
        # <svg .../> becomes <svg ...>ELEMENT</svg>; an empty-element tag ends with "/>".
        end = scan.root_end - 2
        assert data[end : scan.root_end] == b"/>"
        tail = data[scan.root_end :]
        return (data[:end] + b">" + element + f"</{scan.root_name}>".encode() + tail).decode()
    pieces = [data[: scan.root_open_end], element]
    pos = scan.root_open_end
    for found in sorted(scan.assertions, key=lambda a: a.start):
        if found.start < pos:  # nested inside one already removed
            continue
        pieces.append(data[pos : found.start])
        pos = found.end
    pieces.append(data[pos:])
    return b"".join(pieces).decode("utf-8")


def extract_svg(svg: str, where: str = IMAGE_FIELD) -> str | None:
    """The assertion baked in an SVG: the JSON inside its ``openbadges:assertion`` element,
    or, when the element is empty, its ``verify`` URL; None when there is no such element."""
    scan = _SvgScan(_svg_bytes(svg, where), where)
    if len(scan.assertions) > 1:
        raise _bad("carries more than one openbadges:assertion element", where)
    if not scan.assertions:
        return None
    found = scan.assertions[0]
    text = "".join(found.text).strip()
    if len(text) > TEXT_MAX:
        raise _too_big(f"carries an assertion larger than {TEXT_MAX} characters", where, TEXT_MAX)
    return text or found.verify or None


def placeholder_svg(title: str, size: int = 64) -> str:
    """A plain SVG badge (a filled circle with a title), for badge classes whose image this
    service cannot read."""
    doc = minidom.getDOMImplementation().createDocument(SVG_NS, "svg", None)
    try:
        root = doc.documentElement
        assert root is not None
        root.setAttribute("xmlns", SVG_NS)
        for name, value in (
            ("width", str(size)),
            ("height", str(size)),
            ("viewBox", f"0 0 {size} {size}"),
        ):
            root.setAttribute(name, value)
        title_element = doc.createElementNS(SVG_NS, "title")
        title_element.appendChild(doc.createTextNode(_XML_UNSAFE.sub("", title)))
        root.appendChild(title_element)
        circle = doc.createElementNS(SVG_NS, "circle")
        half = str(size // 2)
        for name, value in (("cx", half), ("cy", half), ("r", half), ("fill", "#2f6fb5")):
            circle.setAttribute(name, value)
        root.appendChild(circle)
        out: str = doc.toxml()
        return out
    finally:
        doc.unlink()

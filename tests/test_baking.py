"""Open Badges baking of PNG and SVG images: round trips, the exact chunk and element layout
the baking specification asks for (checked with parsers written here, not the module's own),
and refusal of broken images and XML attacks."""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from badge_service.domain import baking
from badge_service.domain.errors import InvalidArgument

SIGNATURE = b"\x89PNG\r\n\x1a\n"
VERIFY = "https://badges.example.com/public/assertions/65f000000000000000000001"
ASSERTION = json.dumps({"id": VERIFY, "type": "Assertion", "narrative": "a]]>b <&> ü 🏅"})


def raw_chunks(png: bytes) -> list[tuple[bytes, bytes, int]]:
    """(type, data, crc) of every chunk, parsed independently of the module under test."""
    assert png[:8] == SIGNATURE
    out = []
    pos = 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert len(data) == length
        out.append((kind, data, crc))
        pos += 12 + length
    assert pos == len(png)
    return out


def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    if crc is None:
        crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_with(*extra: bytes, size: int = 2) -> bytes:
    """A valid RGB PNG of ``size`` x ``size`` with ``extra`` chunks after IHDR."""
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    pixels = (b"\x00" + b"\xff\x00\x00" * size) * size
    return (
        SIGNATURE
        + chunk(b"IHDR", ihdr)
        + b"".join(extra)
        + chunk(b"IDAT", zlib.compress(pixels))
        + chunk(b"IEND", b"")
    )


def assert_valid_png(png: bytes) -> list[tuple[bytes, bytes, int]]:
    """Every CRC right, IHDR first, IEND last and empty, the image data decodes to IHDR's
    size: what any PNG reader needs."""
    chunks = raw_chunks(png)
    for kind, data, crc in chunks:
        assert crc == zlib.crc32(kind + data), kind
    assert chunks[0][0] == b"IHDR"
    assert chunks[-1][:2] == (b"IEND", b"")
    assert [k for k, _, _ in chunks].count(b"IEND") == 1
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (depth, colour) == (8, 2)
    pixels = zlib.decompress(b"".join(d for k, d, _ in chunks if k == b"IDAT"))
    assert len(pixels) == height * (1 + 3 * width)
    return chunks


def itxt_openbadges(png: bytes) -> list[bytes]:
    return [d for k, d, _ in raw_chunks(png) if k == b"iTXt" and d.startswith(b"openbadges\x00")]


def bad(call, *args, match: str, reason: str = "INVALID_FIELD") -> None:
    with pytest.raises(InvalidArgument) as info:
        call(*args)
    assert info.value.field == "baked_image"
    assert info.value.reason == reason
    assert match in info.value.message, info.value.message


# --- PNG ---------------------------------------------------------------------------------------


def test_placeholder_png_is_a_valid_64px_png() -> None:
    png = baking.placeholder_png()
    chunks = assert_valid_png(png)
    assert struct.unpack(">II", chunks[0][1][:8]) == (64, 64)
    assert [k for k, _, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]


def test_bake_png_inserts_an_uncompressed_itxt_chunk_before_iend() -> None:
    source = png_with(chunk(b"tEXt", b"Comment\x00made by hand"))
    baked = baking.bake_png(source, ASSERTION)
    chunks = assert_valid_png(baked)
    assert [k for k, _, _ in chunks] == [b"IHDR", b"tEXt", b"IDAT", b"iTXt", b"IEND"]
    # keyword, NUL, compression flag 0, method 0, empty language, NUL, empty translation, NUL
    assert chunks[3][1] == b"openbadges\x00\x00\x00\x00\x00" + ASSERTION.encode("utf-8")
    # The other chunks are untouched, byte for byte.
    assert [c for c in chunks if c[0] != b"iTXt"] == raw_chunks(source)
    assert baking.extract_png(baked) == ASSERTION


def test_rebaking_a_png_replaces_its_assertion() -> None:
    once = baking.bake_png(png_with(), "first")
    twice = baking.bake_png(once, ASSERTION)
    assert_valid_png(twice)
    assert itxt_openbadges(twice) == [b"openbadges\x00\x00\x00\x00\x00" + ASSERTION.encode()]
    assert baking.extract_png(twice) == ASSERTION


def test_baking_replaces_an_old_text_chunk_of_the_same_keyword() -> None:
    source = png_with(chunk(b"tEXt", b"openbadges\x00https://old.example.com/a.json"))
    baked = baking.bake_png(source, ASSERTION)
    kinds = [k for k, _, _ in assert_valid_png(baked)]
    assert kinds == [b"IHDR", b"IDAT", b"iTXt", b"IEND"]
    assert baking.extract_png(baked) == ASSERTION


def test_extract_png_without_an_assertion_is_none() -> None:
    assert baking.extract_png(png_with(chunk(b"tEXt", b"Comment\x00hello"))) is None


def test_extract_png_reads_other_bakers_text_chunks() -> None:
    url = "https://issuer.example.com/assertions/1.json"
    assert baking.extract_png(png_with(chunk(b"tEXt", b"openbadges\x00" + url.encode()))) == url
    zipped = zlib.compress(ASSERTION.encode())
    compressed_itxt = b"openbadges\x00\x01\x00\x00\x00" + zipped
    assert baking.extract_png(png_with(chunk(b"iTXt", compressed_itxt))) == ASSERTION
    assert (
        baking.extract_png(
            png_with(chunk(b"zTXt", b"openbadges\x00\x00" + zlib.compress(url.encode())))
        )
        == url
    )


@given(text=st.text(max_size=300))
@settings(max_examples=50, deadline=None)
def test_png_round_trip_of_any_text(text: str) -> None:
    baked = baking.bake_png(baking.placeholder_png(8), text)
    assert_valid_png(baked)
    assert baking.extract_png(baked) == text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bad signature"),
        (b"GIF89a\x01\x00", "bad signature"),
        (SIGNATURE, "truncated chunk header"),
        (SIGNATURE + chunk(b"IHDR", b"\x00" * 13)[:-6], "truncated chunk"),
        (SIGNATURE + chunk(b"IHDR", b"\x00" * 13, crc=0) + chunk(b"IEND", b""), "bad CRC"),
        (SIGNATURE + chunk(b"IDAT", b"") + chunk(b"IEND", b""), "IHDR is not the first"),
        (SIGNATURE + chunk(b"IHDR", b"\x00" * 13), "truncated chunk header"),
        (png_with() + b"trailing", "data after IEND"),
        (SIGNATURE + chunk(b"IH\x00R", b"") + chunk(b"IEND", b""), "bad chunk type"),
        (SIGNATURE + struct.pack(">I4s", 2**31, b"IHDR"), "chunk length out of range"),
    ],
)
def test_broken_pngs_are_invalid_argument(data: bytes, message: str) -> None:
    bad(baking.extract_png, data, match=message)
    bad(baking.bake_png, data, "x", match=message)


def test_two_assertions_in_one_png_are_refused() -> None:
    one = chunk(b"iTXt", b"openbadges\x00\x00\x00\x00\x00first")
    two = chunk(b"iTXt", b"openbadges\x00\x00\x00\x00\x00second")
    bad(baking.extract_png, png_with(one, two), match="more than one openbadges chunk")


def test_a_compressed_chunk_may_not_inflate_beyond_the_limit() -> None:
    bomb = zlib.compress(b" " * (baking.TEXT_MAX + 10), 9)
    data = png_with(chunk(b"iTXt", b"openbadges\x00\x01\x00\x00\x00" + bomb))
    bad(baking.extract_png, data, match="larger than", reason="LIMIT_EXCEEDED")


def test_bad_itxt_content_is_refused() -> None:
    bad(
        baking.extract_png,
        png_with(chunk(b"iTXt", b"openbadges\x00\x00\x00\x00\x00\xff\xfe")),
        match="not valid UTF-8",
    )
    bad(
        baking.extract_png,
        png_with(chunk(b"iTXt", b"openbadges\x00\x01\x00\x00\x00not zlib")),
        match="bad compressed text",
    )
    bad(
        baking.extract_png,
        png_with(chunk(b"iTXt", b"openbadges\x00\x00\x00")),
        match="truncated iTXt",
    )


# --- SVG ---------------------------------------------------------------------------------------

SVG_NS = "{http://www.w3.org/2000/svg}"
OB_NS = "{http://openbadges.org}"
SOURCE_SVG = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<!-- a badge -->\n"
    '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
    'viewBox="0 0 10 10"><style><![CDATA[circle { fill: red; }]]></style>'
    '<circle cx="5" cy="5" r="5"/><a xlink:href="https://example.com">x &amp; y</a></svg>'
)


def test_bake_svg_adds_the_assertion_element_first() -> None:
    baked = baking.bake_svg(SOURCE_SVG, ASSERTION, VERIFY)
    root = ET.fromstring(baked)
    assert root.tag == f"{SVG_NS}svg"
    first = root[0]
    assert first.tag == f"{OB_NS}assertion"
    assert first.attrib == {"verify": VERIFY}
    assert json.loads(first.text or "") == json.loads(ASSERTION)
    assert "<![CDATA[" in baked and 'xmlns:openbadges="http://openbadges.org"' in baked
    # The picture is all still there.
    assert [child.tag for child in root[1:]] == [f"{SVG_NS}style", f"{SVG_NS}circle", f"{SVG_NS}a"]
    assert root[1].text == "circle { fill: red; }"
    assert root[3].attrib == {"{http://www.w3.org/1999/xlink}href": "https://example.com"}
    assert root[3].text == "x & y"
    assert json.loads(baking.extract_svg(baked) or "") == json.loads(ASSERTION)


def test_rebaking_an_svg_replaces_its_assertion() -> None:
    once = baking.bake_svg(SOURCE_SVG, '{"id": "one"}', VERIFY + "1")
    twice = baking.bake_svg(once, '{"id": "two"}', VERIFY + "2")
    root = ET.fromstring(twice)
    found = root.findall(f".//{OB_NS}assertion")
    assert len(found) == 1
    assert found[0].attrib["verify"] == VERIFY + "2"
    assert baking.extract_svg(twice) == '{"id": "two"}'


def test_extract_svg_of_an_empty_assertion_element_is_its_verify_url() -> None:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:openbadges="http://openbadges.org">'
        f'<openbadges:assertion verify="{VERIFY}"/></svg>'
    )
    assert baking.extract_svg(svg) == VERIFY
    assert baking.extract_svg(SOURCE_SVG) is None


def test_placeholder_svg_is_an_svg_with_the_title() -> None:
    svg = baking.placeholder_svg("Math \x01<Expert>")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    assert root.find(f"{SVG_NS}title").text == "Math <Expert>"  # type: ignore[union-attr]
    assert baking.extract_svg(svg) is None


@given(values=st.dictionaries(st.text(max_size=10), st.text(max_size=60), max_size=5))
@settings(max_examples=50, deadline=None)
def test_svg_round_trip_of_any_json(values: dict[str, str]) -> None:
    text = json.dumps(values)  # ASCII, as the service bakes it
    baked = baking.bake_svg(baking.placeholder_svg("t"), text, VERIFY)
    assert json.loads(baking.extract_svg(baked) or "") == values


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
    '<svg xmlns="http://www.w3.org/2000/svg">&b;</svg>'
)
EXTERNAL = (
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<svg xmlns="http://www.w3.org/2000/svg">&x;</svg>'
)
PUBLIC_DTD = (
    '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
    '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd"><svg xmlns="http://www.w3.org/2000/svg"/>'
)


@pytest.mark.parametrize(
    ("svg", "message"),
    [
        (BILLION_LAUGHS, "has a DOCTYPE"),
        (EXTERNAL, "has a DOCTYPE"),
        (PUBLIC_DTD, "has a DOCTYPE"),
        ("<svg xmlns='http://www.w3.org/2000/svg'><g></svg>", "not well-formed XML"),
        ("", "not well-formed XML"),
        ("<html xmlns='http://www.w3.org/1999/xhtml'/>", "root element is not svg"),
        ("<svg/>", "root element is not svg"),
    ],
)
def test_bad_and_hostile_svgs_are_invalid_argument(svg: str, message: str) -> None:
    bad(baking.extract_svg, svg, match=message)
    bad(baking.bake_svg, svg, "{}", VERIFY, match=message)


def test_svg_bytes_must_be_utf8() -> None:
    bad(baking.decode_svg, "<svg/>".encode("utf-16"), match="not a PNG or a UTF-8 SVG")
    assert baking.decode_svg(b"\xef\xbb\xbf<svg/>") == "<svg/>"


def test_two_assertions_in_one_svg_are_refused() -> None:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:ob="http://openbadges.org">'
        "<ob:assertion>{}</ob:assertion><g><ob:assertion>{}</ob:assertion></g></svg>"
    )
    bad(baking.extract_svg, svg, match="more than one openbadges:assertion")


def test_an_svg_binding_the_prefix_elsewhere_still_bakes() -> None:
    # The element declares its own namespace, so the root's binding of the prefix is moot.
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:openbadges="urn:other">'
        "<openbadges:note>kept</openbadges:note></svg>"
    )
    baked = baking.bake_svg(svg, '{"id": "x"}', VERIFY)
    root = ET.fromstring(baked)
    assert [child.tag for child in root] == [f"{OB_NS}assertion", "{urn:other}note"]
    assert baking.extract_svg(baked) == '{"id": "x"}'


def test_an_empty_root_gets_content() -> None:
    for svg, close in (
        ('<svg xmlns="http://www.w3.org/2000/svg" id="a/>b"/>\n<!-- end -->', "</svg>"),
        ('<s:svg xmlns:s="http://www.w3.org/2000/svg"/>', "</s:svg>"),
        ('<svg xmlns="http://www.w3.org/2000/svg"></svg>', "</svg>"),
    ):
        baked = baking.bake_svg(svg, '{"id": "x"}', VERIFY)
        assert close in baked
        root = ET.fromstring(baked)
        assert [child.tag for child in root] == [f"{OB_NS}assertion"]
        assert baking.extract_svg(baked) == '{"id": "x"}'


def test_baking_keeps_every_other_byte() -> None:
    baked = baking.bake_svg(SOURCE_SVG, '{"id": "x"}', VERIFY)
    start = baked.index("<openbadges:assertion")
    end = baked.index("</openbadges:assertion>") + len("</openbadges:assertion>")
    assert baked[:start] + baked[end:] == SOURCE_SVG
    assert baked[:start].endswith('viewBox="0 0 10 10">')
    rebaked = baking.bake_svg(baked, '{"id": "y"}', VERIFY)
    assert rebaked == baked.replace('"x"', '"y"')


def test_a_large_svg_round_trips() -> None:
    body = "".join(
        f'<rect x="{i % 100}" y="{i // 100}" width="1" height="1"/>' for i in range(50_000)
    )
    svg = f'<svg xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    assert len(svg) > 2_000_000
    baked = baking.bake_svg(svg, '{"id": "x"}', VERIFY)
    assert baking.extract_svg(baked) == '{"id": "x"}'
    assert baked.endswith(f"{body}</svg>")

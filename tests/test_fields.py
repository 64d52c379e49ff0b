"""The field rules of domain/fields.py on their own (no server): what an http(s) URL, a text,
an e-mail address, a slug and a date are, as properties over generated strings and as a
table of the edge cases the copies these rules replaced disagreed on.

``url_like`` and ``EDGE_URLS`` are also what tests/test_fields_properties.py sends to every
URL field of every RPC.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from urllib.parse import urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from badge_service.domain import limits
from badge_service.domain.badge_templates import slugify
from badge_service.domain.errors import InvalidArgument, LimitExceeded
from badge_service.domain.fields import (
    check_email,
    check_http_url,
    check_image,
    check_text,
    is_date_text,
    is_email,
    is_http_url,
    is_slug,
)
from badge_service.domain.ids import is_entity_id, is_hex_id, new_entity_id, new_hex_id

# (string, whether it is an http(s) URL). The first three passed a badge template's check
# and failed an issuer's before there was one rule.
EDGE_CASES: list[tuple[str, bool]] = [
    ("http://:80/x", False),
    ("http://example.com:99999/", False),
    ("http://example.com/\x07", False),
    ("http://example.com/a\x7fb", False),
    ("http://example.com/\x85", False),
    ("http://example.com/\u00a0", False),
    ("http://exa mple.com/", False),
    (" http://example.com/", False),
    ("http://example.com/\n", False),
    ("http://", False),
    ("http:///path", False),
    ("http:example.com", False),
    ("ftp://example.com/", False),
    ("javascript:alert(1)", False),
    ("//example.com/", False),
    ("example.com", False),
    ("http://user:pass@example.com/", False),
    ("http://@example.com/", False),
    ("https://example.com\\@evil.example/", False),
    ("http://example.com\\path", False),
    ("http://exa<mple.com/", False),
    ("http://exa|mple.com/", False),
    ("http://[zz]/", False),
    ("http://[::1/", False),
    ("http://example.com:-1/", False),
    ("http://example.com:+80/", False),
    ("http://example.com:\uff18\uff10/", False),
    ("http://example.com:abc/", False),
    ("http://example.com", True),
    ("https://example.com/a/b?c=d#e", True),
    ("HTTP://EXAMPLE.COM/", True),
    ("http://example.com:0/", True),
    ("http://example.com:65535/", True),
    ("http://example.com:/", True),
    ("http://127.0.0.1:8080/x", True),
    ("http://[::1]:8080/", True),
    ("https://bücher.example/é?q=ü", True),
    ("https://x.example/%20%zz", True),
    ("http://localhost", True),
]
EDGE_URLS = [value for value, _ in EDGE_CASES]


# --- Generated URL-ish strings ----------------------------------------------------------------

_SCHEMES = ["http", "https", "HTTP", "hTTps", "ftp", "javascript", "", "http:", "mailto"]
_SEPARATORS = ["://", "://", "://", ":/", ":", ":///", "//"]
_USERINFO = ["", "", "", "user@", "u:p@", "@"]
_HOSTS = [
    "example.com",
    "a.b",
    "localhost",
    "",
    "127.0.0.1",
    "[::1]",
    "[zz]",
    "bücher.example",
    "xn--bcher-kva.example",
    "exa mple.com",
    "a<b",
    "a\\b",
    "a|b",
    "a^b",
    "under_score.example",
    "-x-.example",
]
_PORTS = ["", "", "", ":", ":0", ":80", ":65535", ":65536", ":99999", ":-1", ":+8", ":\uff18", ":x"]
# Path characters: ordinary ones, and every kind the rule has an opinion on (whitespace of
# several kinds, C0 and C1 controls, DEL, backslash, percent signs, non-ASCII).
_PATH_CHARS = st.one_of(
    st.sampled_from("abc/-._~?#=&%+@:"),
    st.sampled_from(" \t\n\r\x0b\x0c\x00\x01\x1f\x7f\x80\x85\x9f\u00a0\u2028\u3000\\"),
    st.characters(codec="utf-8"),
)


def url_like() -> st.SearchStrategy[str]:
    """Strings shaped like URLs: scheme, separator, user info, host, port and path each
    drawn from good and bad choices, so most are near misses of a valid URL."""
    return st.builds(
        lambda *parts: "".join(parts),
        st.sampled_from(_SCHEMES),
        st.sampled_from(_SEPARATORS),
        st.sampled_from(_USERINFO),
        st.one_of(st.sampled_from(_HOSTS), st.text(min_size=0, max_size=8)),
        st.sampled_from(_PORTS),
        st.text(_PATH_CHARS, max_size=12).map(lambda p: "/" + p if p else p),
    )


# A host that every rule takes: labels of letters, digits and inner hyphens.
_LABEL = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?\Z")
_GOOD_HOSTS = st.lists(_LABEL, min_size=1, max_size=3).map(".".join)
_GOOD_PATHS = st.text(st.sampled_from("abcXYZ019-._~!$&'()*+,;=:@/%"), max_size=20)


def good_urls() -> st.SearchStrategy[str]:
    """http(s) URLs every rule must take."""
    port = st.one_of(st.just(""), st.integers(0, 65535).map(lambda p: f":{p}"))
    return st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
        st.sampled_from(["http", "https", "HTTP", "Https"]),
        _GOOD_HOSTS,
        port,
        _GOOD_PATHS,
    )


# --- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "valid"), EDGE_CASES)
def test_edge_cases(value: str, valid: bool) -> None:
    assert is_http_url(value) is valid


def _reference_verdict(value: str) -> bool:
    """The rule written out a second way, character by character."""
    for c in value:
        if c.isspace() or unicodedata.category(c) == "Cc" or c == "\\":
            return False
    try:
        parts = urlsplit(value)
        host, _ = parts.hostname, parts.port
    except ValueError:
        return False
    if parts.scheme.lower() not in ("http", "https") or not host:
        return False
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return False
    forbidden = "<>^|[]" if parts.netloc.startswith("[") else "<>^|[]:"
    return not any(c in forbidden for c in host)


@given(st.one_of(url_like(), st.text(max_size=30), st.sampled_from(EDGE_URLS)))
@example("http://example.com/\u2029")
def test_is_http_url_is_the_rule_written_out(value: str) -> None:
    assert is_http_url(value) is _reference_verdict(value)


@given(good_urls())
def test_well_formed_urls_are_taken(value: str) -> None:
    assert is_http_url(value)
    check_http_url(value, "f", required=True)


@given(
    good_urls(),
    st.sampled_from(" \t\n\r\x00\x01\x1f\x7f\x80\x85\x9f\u00a0\u2028\u3000\\"),
    st.data(),
)
def test_a_bad_character_anywhere_spoils_a_url(value: str, bad: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(value)))
    assert not is_http_url(value[:at] + bad + value[at:])


@given(st.one_of(url_like(), st.sampled_from(EDGE_URLS)), st.booleans())
def test_check_http_url_refuses_exactly_what_is_not_a_url(value: str, required: bool) -> None:
    try:
        check_http_url(value, "x.url", required=required)
    except InvalidArgument as err:
        assert err.field == "x.url"
        assert not isinstance(err, LimitExceeded)
        assert (not value and required) or not is_http_url(value)
    else:
        assert value == "" or is_http_url(value)


def test_check_http_url_order_and_limits() -> None:
    check_http_url("", "u")  # unset
    with pytest.raises(InvalidArgument, match="is required"):
        check_http_url("", "u", required=True)
    with pytest.raises(InvalidArgument, match="is required"):
        check_http_url("   ", "u", required=True)
    with pytest.raises(InvalidArgument, match="NUL"):
        check_http_url("http://example.com/\x00", "u")
    longest = "https://x.example/" + "e" * (limits.URL_BYTES - 18)
    check_http_url(longest, "u")
    with pytest.raises(LimitExceeded) as over:
        check_http_url(longest + "e", "u")
    assert over.value.limit == limits.URL_BYTES.name
    # Over the limit wins over not being a URL at all.
    with pytest.raises(LimitExceeded):
        check_http_url("x" * (limits.URL_BYTES + 1), "u")


def test_images_are_urls_or_base64_data_uris() -> None:
    limit = limits.BADGR_IMAGE_DATA_CHARS
    check_image("data:image/png;base64,iVBORw0KGgo=", "i", limit=limit)
    check_image("https://example.com/i.png", "i", limit=limit)
    for bad in ("data:image/png;base64,@@@@", "data:text/html;base64,AAAA", "http://:80/i.png"):
        with pytest.raises(InvalidArgument):
            check_image(bad, "i", limit=limit)
    with pytest.raises(InvalidArgument, match="is required"):
        check_image("", "i", limit=limit, required=True)


# --- Text -------------------------------------------------------------------------------------


@given(st.text(max_size=12), st.booleans())
def test_check_text(value: str, required: bool) -> None:
    limit = limits.BADGE_TEXT_CHARS
    padded = value * 2000  # beyond the limit unless empty
    for text in (value, padded):
        try:
            check_text(text, "t", limit=limit, required=required)
        except LimitExceeded:
            assert len(text) > limit and "\x00" not in text
        except InvalidArgument as err:
            assert err.field == "t"
            assert "\x00" in text or (required and not text.strip())
        else:
            assert "\x00" not in text and len(text) <= limit
            assert not required or text.strip()


# --- E-mail addresses, slugs, dates and ids ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a@example.com", True),
        ("Jane.Doe+tag@sub.example.org", True),
        ("a@b.co", True),
        ("a" * 308 + "@example.com", True),
        ("a@b", False),
        ("not an email", False),
        ("a@example.com\n", False),
        (" a@example.com", False),
        ("a@@example.com", False),
        ("a@-example.com", False),
        ("josé@example.com", False),
        ("a@exa_mple.com", False),
    ],
)
def test_email_addresses(value: str, valid: bool) -> None:
    assert is_email(value) is valid


@given(st.text(max_size=40))
def test_an_email_address_has_one_at_and_no_space(value: str) -> None:
    if is_email(value):
        local, _, domain = value.partition("@")
        assert local and "." in domain and "@" not in domain
        assert not any(c.isspace() or ord(c) > 126 for c in value)


def test_check_email_wording_and_limit() -> None:
    check_email("", "e", limit=limits.BADGR_EMAIL_CHARS)
    with pytest.raises(InvalidArgument, match="must be an email address"):
        check_email("x", "e", limit=limits.BADGR_EMAIL_CHARS)
    with pytest.raises(LimitExceeded):
        check_email("a" * 250 + "@example.com", "e", limit=limits.BADGR_EMAIL_CHARS)


@given(st.text(max_size=40))
def test_slugify_makes_slugs(text: str) -> None:
    slug = slugify(text)
    assert slug == "" or is_slug(slug)
    if is_slug(text):
        assert slugify(text) == text


@pytest.mark.parametrize("value", ["", "-a", "a-", "a--b", "A", "a b", "a_b", "abc\n", "é"])
def test_not_slugs(value: str) -> None:
    assert not is_slug(value)


@given(st.dates())
def test_dates(day: dt.date) -> None:
    text = day.isoformat()
    assert is_date_text(text) and dt.date.fromisoformat(text) == day
    for bad in (
        text + "\n",
        text.replace("-", ""),
        "\uff12\uff10\uff12\uff14-01-01",
        f"{text}T00:00",
    ):
        assert not is_date_text(bad)


def test_ids_refuse_a_trailing_newline() -> None:
    hex_id, entity_id = new_hex_id(), new_entity_id()
    assert is_hex_id(hex_id) and is_entity_id(entity_id)
    assert not is_hex_id(hex_id + "\n") and not is_entity_id(entity_id + "\n")

"""The pure rules of badge templates, without a server: Credly filter and sort parsing, slugs,
requirement cycles, page-token positions and page URLs."""

from __future__ import annotations

import datetime as dt

import pytest

from badge_service.domain.badge_templates import (
    BadgeTemplate,
    TemplateState,
    requirement_cycle,
    slug_candidates,
    slugify,
)
from badge_service.domain.credly_query import (
    DEFAULT_SORT,
    SortKey,
    SortTerm,
    TemplateFilter,
    check_position,
    page_url,
    parse_filter,
    parse_sort,
    sort_text,
)
from badge_service.domain.errors import InvalidArgument

UTC = dt.UTC


def test_parse_filter_every_key() -> None:
    got = parse_filter(
        'query::Arch|name::"Exact Name"|public::False|reporting_tags::Retail, expert'
        "|recommendation_ids::ABC,abc|skills::Über,x|state::Active,draft,active"
        "|created_at_min::2024-02-29|created_at_max::2024-02-29"
        "|updated_at_min::2024-01-01|updated_at_max::9999-12-31"
        "|owner_id::O1|collection_id::C1,c2"
    )
    assert got == TemplateFilter(
        query="Arch",
        name=None,
        name_exact="Exact Name",
        public=False,
        reporting_tags=("retail", "expert"),
        recommendation_ids=("abc",),
        skills=("über", "x"),
        states=(TemplateState.ACTIVE, TemplateState.DRAFT),
        created_from=dt.datetime(2024, 2, 29, tzinfo=UTC),
        created_before=dt.datetime(2024, 3, 1, tzinfo=UTC),
        updated_from=dt.datetime(2024, 1, 1, tzinfo=UTC),
        updated_before=None,
        owner_ids=("o1",),
        collection_ids=("c1", "c2"),
    )
    assert parse_filter("name::part") == TemplateFilter(name="part")
    # A lone double quote is a partial match on it.
    assert parse_filter('name::"') == TemplateFilter(name='"')
    assert parse_filter("") == parse_filter("   ") == TemplateFilter()
    # "::" inside a value belongs to the value.
    assert parse_filter("query::a::b") == TemplateFilter(query="a::b")


@pytest.mark.parametrize(
    ("text", "description"),
    [
        ("nope::1", "unknown key 'nope'"),
        ("state", "'state' is not a key::value pair"),
        ("state::active||public::true", "'' is not a key::value pair"),
        ("public::true|public::false", "key 'public' is given more than once"),
        ("public::1", "key 'public' must be true or false, not '1'"),
        ("state::gone", "key 'state' must list active, archived or draft, not 'gone'"),
        ("created_at_min::2023-02-29", "key 'created_at_min' is not a real date: '2023-02-29'"),
        ("updated_at_max::20240101", "key 'updated_at_max' must be a date YYYY-MM-DD"),
        ("skills::,", "key 'skills' needs at least one value"),
    ],
)
def test_parse_filter_errors(text: str, description: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_filter(text)
    assert caught.value.field == "filter"
    assert caught.value.reason == "INVALID_FILTER"
    assert caught.value.violations[0].description.startswith(description)


def test_parse_sort() -> None:
    assert parse_sort("") == DEFAULT_SORT == (SortTerm(SortKey.CREATED_AT, descending=True),)
    terms = parse_sort(" name | -badges_count|updated_at")
    assert terms == (
        SortTerm(SortKey.NAME),
        SortTerm(SortKey.BADGES_COUNT, descending=True),
        SortTerm(SortKey.UPDATED_AT),
    )
    assert sort_text(terms) == "name|-badges_count|updated_at"
    for bad in ("x", "name|name", "-name|name", "name||updated_at", "+name"):
        with pytest.raises(InvalidArgument) as caught:
            parse_sort(bad)
        assert caught.value.field == "sort" and caught.value.reason == "INVALID_SORT"


def test_slugs() -> None:
    assert slugify("Badge Template 1") == "badge-template-1"
    assert slugify("  Ünïcode -- Ärchery!! ") == "unicode-archery"
    assert slugify("日本語") == ""
    assert slugify("a" * 300) == "a" * 255
    candidates = list(slug_candidates("Badge Template 1", "the-id"))
    assert candidates[:3] == ["badge-template-1", "badge-template-1-2", "badge-template-1-3"]
    assert candidates[-1] == "the-id" and len(candidates) == 10
    assert next(slug_candidates("日本語", "x")) == "badge-template"
    # Numbered candidates stay within the slug limit.
    assert all(len(c) <= 255 for c in slug_candidates("b" * 300, "x"))


def test_requirement_cycles() -> None:
    edges = [("b", "c"), ("c", "d"), ("x", "a")]
    assert requirement_cycle("a", ["b"], edges) is None
    assert requirement_cycle("d", ["b"], edges) == ["d", "b", "c", "d"]
    assert requirement_cycle("a", ["a"], []) == ["a", "a"]
    # The template's own old edges do not count: they are being replaced.
    assert requirement_cycle("a", [], [("a", "b"), ("b", "a")]) is None
    # A long chain does not overflow anything.
    chain = [(f"n{i}", f"n{i + 1}") for i in range(5000)]
    assert requirement_cycle("n5000", ["n0"], chain) is not None


def test_check_position() -> None:
    sort = (SortTerm(SortKey.NAME), SortTerm(SortKey.BADGES_COUNT, descending=True))
    assert check_position(["a", 3, "id"], sort) == ["a", 3, "id"]
    for bad in (
        ["a", 3],
        ["a", "3", "id"],
        [1, 3, "id"],
        ["a", True, "id"],
        ["a", 2**63, "id"],
        "x",
    ):
        with pytest.raises(InvalidArgument):
            check_position(bad, sort)


def test_page_url() -> None:
    assert page_url("org", None, filter_text="", sort="", per=50, default_per=50) == ""
    assert (
        page_url(
            "org", 2, filter_text='state::active|name::"A B"', sort="-name", per=10, default_per=50
        )
        == "/organizations/org/badge_templates?filter=state%3A%3Aactive%7Cname%3A%3A%22A%20B%22"
        "&sort=-name&page=2&page_size=10"
    )


def test_template_derived_fields() -> None:
    t = BadgeTemplate(name="x", state=TemplateState.ACTIVE)
    assert (t.allow_delete, t.allow_archive, t.default_expires_at) == (True, True, None)
    t.badges_count, t.state = 1, TemplateState.ARCHIVED
    assert (t.allow_delete, t.allow_archive) == (False, False)

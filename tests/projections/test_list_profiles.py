"""Listing profiles: filters, text search, both sorts, keyset pages and their cursors."""

from __future__ import annotations

import pytest

from projections.errors import InvalidCursorError, InvalidQueryError
from projections.reading import PAGE_BOUNDS

PROFILES = [
    ("alpha", "A gentle nudge", ["calm", "small"], ["chat"]),
    ("Bravo", "Loud and BOLD", ["loud"], ["chat", "voice"]),
    ("charlie", "calm waters", ["calm"], []),
    ("Delta", "nothing special", ["small", "loud"], ["voice"]),
    ("echo 100%", "per_cent sign", [], ["chat"]),
    ("Ünïcode Straße", "Grüße", ["calm"], []),
]


@pytest.fixture
def listed(ledger, project):
    ids = {}
    for name, description, tags, products in PROFILES:
        ids[name] = ledger.create_profile(
            {"name": name, "description": description, "tags": tags, "products": products, "steering": {1: 1.0}}
        ).profile.id
    ledger.update_profile(ids["charlie"], {"layer": 2})  # most recently updated
    project()
    return ids


def names(page):
    return [row.name for row in page.items]


def test_sorted_by_name_case_insensitively(read_model, listed):
    assert names(read_model.list_profiles()) == [
        "alpha", "Bravo", "charlie", "Delta", "echo 100%", "Ünïcode Straße"
    ]


def test_sorted_by_last_update_newest_first(read_model, listed):
    assert names(read_model.list_profiles(sort="updated_at"))[:2] == ["charlie", "Ünïcode Straße"]


def test_tags_match_any_by_default_or_all(read_model, listed):
    assert names(read_model.list_profiles(tags=["loud", "small"])) == ["alpha", "Bravo", "Delta"]
    assert names(read_model.list_profiles(tags=["loud", "small"], tags_match="all")) == ["Delta"]
    assert names(read_model.list_profiles(tags=["nope"])) == []


def test_product_filter(read_model, listed):
    assert names(read_model.list_profiles(products=["voice"])) == ["Bravo", "Delta"]
    assert names(read_model.list_profiles(products=["chat"], tags=["calm"])) == ["alpha"]


def test_search_is_case_insensitive_over_name_and_description(read_model, listed):
    assert names(read_model.list_profiles(search="CALM")) == ["charlie"]  # tags are not searched
    assert names(read_model.list_profiles(search="bold")) == ["Bravo"]
    assert names(read_model.list_profiles(search="ALPH")) == ["alpha"]
    assert names(read_model.list_profiles(search="straße")) == ["Ünïcode Straße"]
    assert names(read_model.list_profiles(search="GRÜSSE")) == ["Ünïcode Straße"]


def test_search_treats_wildcards_literally(read_model, listed):
    assert names(read_model.list_profiles(search="100%")) == ["echo 100%"]
    assert names(read_model.list_profiles(search="per_cent")) == ["echo 100%"]
    assert names(read_model.list_profiles(search="%")) == ["echo 100%"]


@pytest.mark.parametrize("sort", ["name", "updated_at"])
def test_pages_follow_each_other_without_gaps_or_repeats(read_model, listed, sort):
    everything = names(read_model.list_profiles(sort=sort))
    seen, cursor = [], None
    while True:
        page = read_model.list_profiles(sort=sort, limit=4 if sort == "name" else 1, cursor=cursor)
        seen += names(page)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == everything


def test_a_filtered_listing_pages_within_its_filter(read_model, listed):
    first = read_model.list_profiles(tags=["calm"], limit=2)
    assert names(first) == ["alpha", "charlie"] and first.next_cursor
    second = read_model.list_profiles(tags=["calm"], limit=2, cursor=first.next_cursor)
    assert names(second) == ["Ünïcode Straße"] and second.next_cursor is None


@pytest.mark.parametrize("cursor", ["garbage!", "", "eyJsIjoiZXZlbnRzIiwiayI6WzJdfQ", "eyJsIjoicHJvZmlsZXM6bmFtZSIsImsiOlsxXX0"])
def test_a_bad_cursor_is_refused_with_a_clear_error(read_model, listed, cursor):
    with pytest.raises(InvalidCursorError, match="invalid cursor"):
        read_model.list_profiles(cursor=cursor)


def test_a_cursor_from_the_other_sort_is_refused(read_model, listed):
    by_name = read_model.list_profiles(limit=1).next_cursor
    with pytest.raises(InvalidCursorError, match="another order"):
        read_model.list_profiles(sort="updated_at", cursor=by_name)


@pytest.mark.parametrize("arguments", [{"limit": 0}, {"limit": 10_001}, {"sort": "size"}, {"tags_match": "some"}])
def test_bad_arguments_are_refused(read_model, listed, arguments):
    with pytest.raises(InvalidQueryError):
        read_model.list_profiles(**arguments)


def test_a_snapshot_reads_one_moment_and_a_searchs_settings_end_with_its_query(read_model, listed, ledger, project):
    postgres = read_model.dialect.is_postgres
    with read_model.snapshot():
        before = read_model.list_profiles(search="a").items
        if postgres:  # as a search does where PostgreSQL has trigrams: a setting for its query alone
            read_model._all("SELECT 1", setup=("SET LOCAL enable_indexscan = off",))
        settings = read_model._all("SHOW enable_indexscan") if postgres else [("on",)]
        ledger.create_profile({"name": "made meanwhile", "steering": {1: 1.0}})
        project()
        assert read_model.list_profiles(search="a").items == before  # the moment the snapshot began
    assert list(settings[0].values() if isinstance(settings[0], dict) else settings[0]) == ["on"]
    assert "made meanwhile" in [row.name for row in read_model.list_profiles(search="made").items]


def test_a_page_ends_before_the_steering_it_holds_passes_its_bound_and_the_next_goes_on(read_model, ledger, project):
    big = {index: 1.0 for index in range(PAGE_BOUNDS["features_max"] // 2)}
    for name in ("b1", "b2", "b3"):
        ledger.create_profile({"name": name, "steering": big})
    ledger.create_profile({"name": "b4", "steering": {1: 1.0}})
    project()
    first = read_model.list_profiles(limit=10)
    assert [row.name for row in first.items] == ["b1", "b2"]  # the bound exactly: b3 would pass it
    rest = read_model.list_profiles(limit=10, cursor=first.next_cursor)
    assert [row.name for row in rest.items] == ["b3", "b4"] and rest.next_cursor is None

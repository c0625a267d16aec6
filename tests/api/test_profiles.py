"""Profiles through HTTP: create, read, update (with If-Match), delete, activate, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import httpx

from tests.api.conftest import assert_error, create, etag, forged, fresh, start_server

PROFILE_KEYS = {
    "id", "name", "description", "model_id", "sae_id", "layer", "steering", "feature_count", "is_active",
    "created_at", "updated_at", "version", "tags", "products", "metadata", "execution_count", "last_executed_at",
}


def test_create_answers_201_with_the_profile_its_position_and_etag(client):
    response = client.post(
        "/api/profiles",
        json={
            "name": "calm",
            "description": "less shouting",
            "model_id": "gemma-2-2b",
            "sae_id": "gemma-scope-res-16k",
            "layer": 12,
            "steering": {"1234": 5.0, "42": -2},
            "tags": ["tone", "tone", " safe "],
            "products": ["chat"],
            "metadata": {"owner": "ops"},
        },
        headers={"X-Actor": "alice", "X-Request-ID": "req-123"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert PROFILE_KEYS <= body.keys()
    assert body["steering"] == {"42": -2.0, "1234": 5.0}
    assert body["feature_count"] == 2 and body["version"] == 1 and body["is_active"] is False
    assert body["tags"] == ["tone", "safe"] and body["products"] == ["chat"]
    assert body["execution_count"] == 0 and body["last_executed_at"] is None
    assert body["position"] >= 1 and response.headers["X-Ledger-Position"] == str(body["position"])
    assert response.headers["ETag"] == etag(body, 1)
    assert response.headers["X-Request-ID"] == "req-123"
    uuid.UUID(body["id"])


def test_get_by_id_and_by_name_and_list(client):
    alpha = create(client, "Alpha One", tags=["x"])
    create(client, "beta", tags=["y"])
    query = fresh(client, client.post("/api/profiles", json={"name": "gamma"}).json()["position"])
    got = client.get(f"/api/profiles/{alpha['id']}", params=query)
    assert got.status_code == 200 and got.json()["name"] == "Alpha One"
    assert got.headers["ETag"] == etag(alpha, 1)
    by_name = client.get("/api/profiles/by-name/alpha  one", params=query)  # names compare case/space-insensitively
    assert by_name.status_code == 200 and by_name.json()["id"] == alpha["id"]
    listing = client.get("/api/profiles", params=query).json()
    assert [p["name"] for p in listing["profiles"]] == ["Alpha One", "beta", "gamma"]
    assert listing["active_profile_id"] is None and listing["next_cursor"] is None


def test_list_filters_sorts_and_paginates(client):
    last = 0
    for number in range(7):
        tags = ["even"] if number % 2 == 0 else ["odd"]
        products = ["chat"] if number < 3 else ["voice"] if number == 6 else []
        last = create(client, f"p{number}", tags=[*tags, "all"], products=products)["position"]
    query = fresh(client, last)
    evens = client.get("/api/profiles", params={**query, "tag": "even"}).json()["profiles"]
    assert [p["name"] for p in evens] == ["p0", "p2", "p4", "p6"]
    both = client.get("/api/profiles", params=[("tag", "even"), ("tag", "all"), ("tags_match", "all")]).json()
    assert len(both["profiles"]) == 4
    assert len(client.get("/api/profiles", params={"product": "chat"}).json()["profiles"]) == 3
    for repeated in ([("product", "chat"), ("product", "voice")], [("product", "voice"), ("product", "chat")]):
        listed = client.get("/api/profiles", params=repeated).json()["profiles"]  # any of them, in either order
        assert [p["name"] for p in listed] == ["p0", "p1", "p2", "p6"]
    assert [p["name"] for p in client.get("/api/profiles", params={"search": "P3"}).json()["profiles"]] == ["p3"]
    create(client, "ｃａｌｍ ｓｅａ", description="ｗｉｄｅ")  # the name is stored as "calm sea"; the description as written
    for term, found in (("ｃａｌｍ", ["calm sea"]), ("CALM", ["calm sea"]), ("ｗｉｄｅ", ["calm sea"]), ("wide", []),
                        ("sea  calm", ["calm sea"]), ("sea ｗｉｄｅ", ["calm sea"]), ("sea storm", [])):  # its words
        listed = client.get("/api/profiles", params={"search": term}).json()["profiles"]
        assert [p["name"] for p in listed] == found, term  # a name is found as it was typed (each word of it)
    assert_error(client.get("/api/profiles", params={"search": "w " * 33}), 422)
    # the cost of a search grows with its length on every row: past a name's longest, it is refused
    long_search = assert_error(client.get("/api/profiles", params={"search": "a" * 101}), 422, "invalid_query")
    assert long_search["field"] == "search" and "100 characters" in long_search["detail"]
    assert client.get("/api/profiles", params={"search": f" {'a' * 100} "}).json()["profiles"] == []
    client.delete("/api/profiles/calm sea")
    updated = client.get("/api/profiles", params={"sort": "updated"}).json()["profiles"]
    assert [p["name"] for p in updated][:2] == ["p6", "p5"]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/profiles", params=params).json()
        seen += [p["name"] for p in page["profiles"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"p{n}" for n in range(7)]


def test_list_refuses_bad_parameters(client):
    assert_error(client.get("/api/profiles", params={"cursor": "garbage"}), 422, "invalid_cursor")
    assert_error(client.get("/api/profiles", params={"limit": 0}), 422, "invalid_request")
    assert_error(client.get("/api/profiles", params={"limit": "ten"}), 422, "invalid_request")
    assert_error(client.get("/api/profiles", params={"sort": "size"}), 422, "invalid_request")
    assert_error(client.get("/api/profiles", params={"tags_match": "some"}), 422, "invalid_request")
    other = client.get("/api/profiles", params={"sort": "updated", "limit": 1})
    create(client, "a")
    last = create(client, "b")["position"]
    page = client.get("/api/profiles", params={"sort": "updated", "limit": 1, "min_position": last}).json()
    assert other.status_code == 200 and page["next_cursor"]
    # a cursor of one listing is refused by another
    assert_error(client.get("/api/profiles", params={"cursor": page["next_cursor"]}), 422, "invalid_cursor")
    issued = client.get("/api/profiles", params={"limit": 1}).json()["next_cursor"]
    for text in ("\ud800", "a\u0000b"):  # made by hand: text no column holds (a lone surrogate was a 500)
        cursor = forged(issued, [text, "00000000-0000-0000-0000-000000000000"])
        assert_error(client.get("/api/profiles", params={"limit": 1, "cursor": cursor}), 422, "invalid_cursor")


def test_a_cursor_sent_with_other_filters_than_it_was_issued_under_is_refused_not_continued_under_them(client):
    for name, tags in (("a1", ["x"]), ("a2", []), ("a3", ["x"]), ("a4", ["x"])):
        create(client, name, tags=tags)
    first = client.get("/api/profiles", params={"tag": "x", "limit": 1}).json()
    assert [p["name"] for p in first["profiles"]] == ["a1"]
    for same in ({"tag": " x "}, {"tag": ["x", "x"], "tags_match": "all"}):  # the same filter, another page size
        following = client.get("/api/profiles", params={**same, "limit": 2, "cursor": first["next_cursor"]})
        assert [p["name"] for p in following.json()["profiles"]] == ["a3", "a4"], same
    searched = client.get("/api/profiles", params={"search": "A  a", "limit": 1}).json()["next_cursor"]
    assert client.get("/api/profiles", params={"search": " a", "cursor": searched}).status_code == 200  # its words
    for other in ({}, {"tag": "y"}, {"tag": "x", "search": "a"}, {"tag": "x", "sort": "updated"},
                  {"tag": "x", "product": "p"}, {"tag": ["x", "z"]}):
        refused = assert_error(client.get("/api/profiles", params={**other, "cursor": first["next_cursor"]}), 422,
                               "invalid_cursor")
        assert refused["field"] == "cursor" and "other filters" in refused["detail"], other
    by_actor = client.get("/api/events", params={"actor": "anonymous", "limit": 1}).json()["next_cursor"]
    assert client.get("/api/events", params={"actor": " anonymous ", "cursor": by_actor}).status_code == 200
    log = client.get("/api/events", params={"type": "Profile.Created", "limit": 1}).json()
    assert_error(client.get("/api/events", params={"cursor": log["next_cursor"]}), 422, "invalid_cursor")
    rest = client.get("/api/events", params={"type": "Profile.Created", "cursor": log["next_cursor"]}).json()
    assert [event["type"] for event in rest["events"]] == ["Profile.Created"] * 3


def test_a_page_of_profiles_or_versions_stops_before_its_steering_passes_its_bound_and_the_next_goes_on(client):
    def walk(url: str, key: str) -> list[list[dict]]:
        pages, cursor = [], None
        while True:
            page = client.get(url, params={"limit": 10, **({"cursor": cursor} if cursor else {})})
            assert len(page.content) < 2**21
            pages.append(page.json()[key])
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return pages

    heavy = {str(index): 1.5 for index in range(30_000)}  # about 450 KB as JSON: two fit under 65,536 features
    for name in ("h1", "h2", "h3"):
        create(client, name, steering=heavy)
    create(client, "h4", steering={"1": 1.0})
    assert [[p["name"] for p in page] for page in walk("/api/profiles", "profiles")] == [["h1", "h2"], ["h3", "h4"]]
    client.put("/api/profiles/h4", json={"steering": {str(index): 2.5 for index in range(70_000)}})  # alone: past it
    client.put("/api/profiles/h4", json={"steering": heavy})
    versions = walk("/api/profiles/h4/versions", "versions")
    assert [[v["version"] for v in page] for page in versions] == [[1], [2], [3]]  # 1 + 70,000 > 65,536 > 1


def test_a_page_of_profiles_or_versions_also_ends_before_a_mebibyte_of_descriptions_and_metadata(client):
    def walk(url: str, key: str, field: str) -> list[list]:
        pages, cursor = [], None
        while True:
            page = client.get(url, params={"cursor": cursor} if cursor else {})
            assert len(page.content) < 1_200_000  # before: one page of all of them, 2.4 MB
            pages.append([item[field] for item in page.json()[key]])
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return pages

    notes = "n" * 50_000  # with a description of 10,000 characters, 60 KB a row: 18 rows pass a mebibyte
    for number in range(40):
        create(client, f"m{number:02}", description="d" * 10_000, metadata={"notes": notes})
    pages = walk("/api/profiles", "profiles", "name")
    assert [len(page) for page in pages] == [17, 17, 6]
    assert sum(pages, []) == [f"m{number:02}" for number in range(40)]
    for number in range(1, 20):
        client.put("/api/profiles/m00", json={"metadata": {"notes": notes, "revision": number}})
    versions = walk("/api/profiles/m00/versions", "versions", "version")
    assert [len(page) for page in versions] == [17, 3] and sum(versions, []) == list(range(1, 21))


def test_unknown_and_malformed_ids(client):
    missing = uuid.uuid4()
    body = assert_error(client.get(f"/api/profiles/{missing}"), 404, "profile_not_found")
    assert body["profile_id"] == str(missing)
    # not a UUID: a name, and no profile has it
    assert assert_error(client.get("/api/profiles/not-a-uuid"), 404, "profile_not_found")["name"] == "not-a-uuid"
    assert_error(client.put("/api/profiles/not-a-uuid", json={"name": "x"}), 404, "profile_not_found")
    assert_error(client.delete("/api/profiles/12"), 404, "profile_not_found")
    assert_error(client.get("/api/profiles/by-name/nobody"), 404, "profile_not_found")
    assert_error(client.put(f"/api/profiles/{missing}", json={"name": "x"}), 404, "profile_not_found")
    assert_error(client.delete(f"/api/profiles/{missing}"), 404, "profile_not_found")
    assert_error(client.post(f"/api/profiles/{missing}/activate"), 404, "profile_not_found")


def test_create_refuses_invalid_values_with_the_field(client):
    body = assert_error(client.post("/api/profiles", json={"name": "  "}), 422, "invalid_value")
    assert body["field"] == "name"
    body = assert_error(client.post("/api/profiles", json={"name": "x", "steering": {"abc": 1}}), 422)
    assert body["field"] == "steering.abc"
    body = assert_error(client.post("/api/profiles", json={"name": "x", "layer": -1}), 422, "invalid_value")
    assert body["field"] == "layer"
    body = assert_error(client.post("/api/profiles", json={"name": "x", "layer": "3"}), 422, "invalid_request")
    assert body["field"] == "layer"
    body = assert_error(client.post("/api/profiles", json={"name": "x", "colour": "red"}), 422, "invalid_request")
    assert "colour" in body["detail"]
    assert_error(client.post("/api/profiles", json={}), 422, "invalid_request")
    assert_error(client.post("/api/profiles", json=["name"]), 422, "invalid_request")


def test_name_clash_is_409_naming_the_holder_as_it_is_spelt(client):
    holder = create(client, "Twin")
    body = assert_error(client.post("/api/profiles", json={"name": " twin "}), 409, "profile_name_taken")
    assert body["name"] == "twin" and body["profile_id"] == holder["id"]
    assert "profile 'Twin'" in body["detail"], body  # the look-alike asked for, and who holds it
    other = create(client, "other")
    renamed = assert_error(client.put(f"/api/profiles/{other['id']}", json={"name": "TWIN"}), 409, "profile_name_taken")
    assert "profile 'Twin'" in renamed["detail"], renamed


def test_steering_omitted_copies_the_active_profile(client):
    source = create(client, "source", steering={"7": 1.25}, model_id="m", sae_id="s", layer=3)
    client.post(f"/api/profiles/{source['id']}/activate")
    copy = client.post("/api/profiles", json={"name": "copy"}).json()
    assert copy["steering"] == {"7": 1.25} and (copy["model_id"], copy["sae_id"], copy["layer"]) == ("m", "s", 3)


def test_partial_update_changes_only_given_fields(client):
    profile = create(client, "orig", description="d", tags=["t"], steering={"1": 1.0})
    response = client.put(f"/api/profiles/{profile['id']}", json={"description": "new"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["description"] == "new" and body["tags"] == ["t"] and body["steering"] == {"1": 1.0}
    assert body["version"] == 2 and response.headers["ETag"] == etag(profile, 2)
    assert body["position"] > profile["position"]
    # descriptive change without a new version
    same = client.put(f"/api/profiles/{profile['id']}", json={"tags": ["u"], "bump_version": False}).json()
    assert same["version"] == 2 and same["tags"] == ["u"]
    # a spec change needs a version
    body = assert_error(
        client.put(f"/api/profiles/{profile['id']}", json={"steering": {"2": 1}, "bump_version": False}), 422
    )
    assert body["error"] == "spec_change_needs_version"
    # null leaves a field as it is; "" clears a description; nothing changed → changed false, same version
    kept = client.put(f"/api/profiles/{profile['id']}", json={"description": None, "steering": None}).json()
    assert kept["changed"] is False and kept["description"] == "new" and kept["steering"] == {"1": 1.0}
    cleared = client.put(f"/api/profiles/{profile['id']}", json={"description": ""}).json()
    assert cleared["description"] is None and cleared["version"] == 3
    unchanged = client.put(f"/api/profiles/{profile['id']}", json={"description": ""})
    assert unchanged.status_code == 200 and unchanged.json()["changed"] is False
    assert unchanged.json()["version"] == 3
    # rename frees the old name
    client.put(f"/api/profiles/{profile['id']}", json={"name": "renamed"})
    assert create(client, "orig")["name"] == "orig"


def test_if_match_makes_updates_conditional(client):
    profile = create(client, "cond")
    url = f"/api/profiles/{profile['id']}"
    ok = client.put(url, json={"description": "a"}, headers={"If-Match": etag(profile, 1)})
    assert ok.status_code == 200 and ok.headers["ETag"] == etag(profile, 2)
    body = assert_error(client.put(url, json={"description": "b"}, headers={"If-Match": '"1"'}), 412, "stale_version")
    assert body["current_version"] == 2 and body["expected_version"] == 1
    assert client.put(url, json={"description": "b"}, headers={"If-Match": 'W/"2.2"'}).status_code == 200
    assert client.put(url, json={"description": "c"}, headers={"If-Match": "*"}).status_code == 200
    assert_error(client.put(url, json={"description": "d"}, headers={"If-Match": '"banana"'}), 412)
    assert_error(client.delete(url, headers={"If-Match": '"1"'}), 412, "stale_version")
    latest = client.put(url, json={"description": "e"}).json()
    assert client.get(url, params=fresh(client, latest["position"])).headers["ETag"] == etag(profile, 5)


def test_an_activation_heeds_if_match_and_a_command_that_cannot_refuses_it_rather_than_ignoring_it(client):
    profile = create(client, "reviewed")
    url = f"/api/profiles/{profile['id']}"
    client.put(url, json={"description": "changed after the review"})
    stale = assert_error(client.post(f"{url}/activate", headers={"If-Match": etag(profile, 1)}), 412, "stale_version")
    assert stale["current_version"] == 2
    assert client.post(f"{url}/activate", headers={"If-Match": etag(profile, 2)}).status_code == 200
    read = {"If-Match": etag(profile, 2)}  # as a cautious client sends it with every change
    for path, body in (("/api/profiles/deactivate", None), ("/api/profiles", {"name": "new"}),
                       ("/api/profiles/import", {"name": "imported"}), (f"{url}/executions", {"seed": 1})):
        refused = assert_error(client.post(path, json=body, headers=read), 422)
        assert refused["field"] == "If-Match" and "takes no If-Match" in refused["detail"]
    assert client.get("/api/profiles/active").json()["id"] == profile["id"]
    assert [p["name"] for p in client.get("/api/profiles").json()["profiles"]] == ["reviewed"]


def test_an_empty_or_quoted_wildcard_if_match_matches_nothing(client):
    profile = create(client, "no blank cheques")
    url = f"/api/profiles/{profile['id']}"
    for tag in ('""', '"*"', 'W/""', "", '"1.1.1"'):
        assert_error(client.put(url, json={"description": "x"}, headers={"If-Match": tag}), 412, "stale_version")
        assert_error(client.post(f"{url}/revert", json={"version": 1}, headers={"If-Match": tag}), 412)
        assert_error(client.delete(url, headers={"If-Match": tag}), 412, "stale_version")
    assert client.get(url).json()["description"] is None


def test_an_etag_read_from_one_profile_does_not_pass_on_another_that_took_its_name(client):
    first = create(client, "handed on")
    read = client.get(f"/api/profiles/{first['id']}").headers["ETag"]
    assert client.delete(f"/api/profiles/{first['id']}").status_code == 200
    second = create(client, "handed on", description="someone else's")
    assert client.get(f"/api/profiles/{second['id']}").json()["version"] == 1  # same versions: "1.1" before

    by_name = "/api/profiles/handed%20on"
    refused = assert_error(client.put(by_name, json={"description": "mine"}, headers={"If-Match": read}), 412,
                           "stale_version")
    assert second["id"] in refused["detail"]
    assert_error(client.post(f"{by_name}/revert", json={"version": 1}, headers={"If-Match": read}), 412)
    assert_error(client.delete(by_name, headers={"If-Match": read}), 412, "stale_version")
    assert client.get(by_name).json()["description"] == "someone else's"
    assert client.put(by_name, json={"description": "mine"}, headers={"If-Match": etag(second, 1)}).status_code == 200


def test_an_edit_that_keeps_the_version_still_moves_the_etag_so_if_match_loses_no_update(client):
    url = f"/api/profiles/{create(client, 'shared')['id']}"
    read_by_a = client.get(url).headers["ETag"]
    by_b = client.put(url, json={"description": "B wrote this", "bump_version": False}, headers={"If-Match": read_by_a})
    assert by_b.status_code == 200 and by_b.json()["version"] == 1 and by_b.headers["ETag"] != read_by_a
    body = assert_error(client.put(url, json={"description": "A overwrote", "bump_version": False},
                                   headers={"If-Match": read_by_a}), 412, "stale_version")
    assert by_b.headers["ETag"] in body["detail"]
    assert client.get(url).json()["description"] == "B wrote this"
    assert_error(client.delete(url, headers={"If-Match": read_by_a}), 412, "stale_version")
    assert client.get(url).headers["ETag"] == by_b.headers["ETag"]
    activated = client.post(f"{url}/activate")
    assert activated.status_code == 200 and client.get(url).headers["ETag"] != by_b.headers["ETag"]
    assert client.put(url, json={"description": "c"}, headers={"If-Match": client.get(url).headers["ETag"]}).status_code == 200


def test_delete(client):
    profile = create(client, "doomed")
    response = client.delete(f"/api/profiles/{profile['id']}", params={"delete_executions": "true"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["deleted"] is True and body["id"] == profile["id"] and body["delete_executions"] is True
    assert response.headers["X-Ledger-Position"] == str(body["position"])
    assert_error(client.get(f"/api/profiles/{profile['id']}", params=fresh(client, body["position"])), 404)
    assert_error(client.delete(f"/api/profiles/{profile['id']}"), 404, "profile_not_found")
    assert create(client, "doomed")["name"] == "doomed"  # the name is free again
    assert_error(client.delete(f"/api/profiles/{profile['id']}", params={"delete_executions": "maybe"}), 422)


def test_activation_lifecycle(client):
    first, second = create(client, "first"), create(client, "second")
    none = assert_error(client.get("/api/profiles/active"), 404, "no_active_profile")
    assert "active" in none["detail"]
    response = client.post(f"/api/profiles/{first['id']}/activate", headers={"X-Reason": "launch"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["is_active"] is True and body["warnings"] == [] and body["pinned_version"] is None
    active = client.get("/api/profiles/active", params=fresh(client, body["position"]))
    assert active.status_code == 200 and active.json()["id"] == first["id"]
    assert_error(client.delete(f"/api/profiles/{first['id']}"), 409, "profile_active")
    client.put(f"/api/profiles/{second['id']}", json={"steering": {"9": 1}})
    pinned = client.post(f"/api/profiles/{second['id']}/activate", json={"version": 1}).json()
    assert pinned["pinned_version"] == 1
    listing = client.get("/api/profiles", params=fresh(client, pinned["position"])).json()
    assert listing["active_profile_id"] == second["id"]
    assert [p["name"] for p in listing["profiles"] if p["is_active"]] == ["second"]
    (in_list,) = [p for p in listing["profiles"] if p["is_active"]]
    for read in ("/api/profiles/active", f"/api/profiles/{second['id']}", "/api/profiles/second",
                 "/api/profiles/by-name/second"):
        assert client.get(read).json() == in_list | {"pinned": True, "version": 1, "latest_version": 2}, read
    assert_error(client.post(f"/api/profiles/{second['id']}/activate", json={"version": 5}), 404)
    assert_error(client.post(f"/api/profiles/{second['id']}/activate", json={"version": "1"}), 422)
    off = client.post("/api/profiles/deactivate")
    assert off.status_code == 200 and off.json()["deactivated"] is True and off.json()["profile_id"] == second["id"]
    assert_error(client.get("/api/profiles/active", params=fresh(client, off.json()["position"])), 404)
    again = client.post("/api/profiles/deactivate").json()
    assert again["deactivated"] is False and again["position"] >= off.json()["position"]
    assert client.delete(f"/api/profiles/{first['id']}").status_code == 200


def test_a_pinned_version_is_shown_whole_never_mixed_with_the_latest(client):
    """Version 1 pinned: every view of the profile shows version 1's content (its spec and its description, tags,
    products and metadata), as ``/versions/1`` does, under version 1's number; never version 2's details with it."""
    made = create(client, "pin", steering={"1": 1.0}, description="d1", tags=["v1tag"], products=["p1"],
                  metadata={"v": 1}, layer=15)
    url = f"/api/profiles/{made['id']}"
    client.put(url, json={"steering": {"2": 2.0}, "description": "d2", "tags": ["v2tag"], "products": ["p2"],
                          "metadata": {"v": 2}, "layer": 14})
    activation = client.post(f"{url}/activate", json={"version": 1}).json()
    pinned_then = datetime.now(timezone.utc).isoformat()
    version_1 = client.get(f"{url}/versions/1").json()
    content = ("description", "model_id", "sae_id", "layer", "steering", "tags", "products", "metadata")
    expected = {"version": 1, "pinned": True, "latest_version": 2, "name": "pin"} | {f: version_1[f] for f in content}
    assert expected["description"] == "d1" and expected["steering"] == {"1": 1.0}
    listing = client.get("/api/profiles", params=fresh(client, activation["position"])).json()
    views = [p for p in listing["profiles"] if p["is_active"]] + [client.get(read).json() for read in (
        "/api/profiles/active", url, "/api/profiles/pin", "/api/profiles/by-name/pin")]
    views.append(client.get(url, params={"as_of": pinned_then}).json())
    for view in [activation] + views:
        assert {f: view[f] for f in expected if f in view} == {f: v for f, v in expected.items() if f in view}, view
    for view in views:
        assert expected.items() <= view.items(), view


def test_a_pinned_profile_is_exported_and_run_as_the_version_every_read_shows(client):
    """An export and an external run recorded without a version take the version in force, so the run's re-run spec
    is the steering every read showed when it ran, not a later version's."""
    made = create(client, "pinned-run", steering={"1": 1.0})
    url = f"/api/profiles/{made['id']}"
    client.put(url, json={"steering": {"2": 2.0}, "name": "pinned-run-renamed"})
    client.post(f"{url}/activate", json={"version": 1})
    exported = client.get(f"{url}/export").json()["profile"]
    assert (exported["profile_version"], exported["steering"]) == (1, {"1": 1.0})  # was version 2
    assert exported["name"] == client.get(url).json()["name"] == "pinned-run-renamed"  # was version 1's own name
    assert client.get(f"{url}/export", params={"version": 1}).json()["profile"]["name"] == "pinned-run"  # history
    assert client.post(f"{url}/executions", json={"run_id": "cohort-pinned"}).json()["profile_version"] == 1
    spec = client.get("/api/runs/cohort-pinned/spec").json()
    assert (spec["profile_version"], spec["steering"]) == (1, {"1": 1.0})
    assert client.get(f"{url}/export", params={"version": 2}).json()["profile"]["profile_version"] == 2
    client.post("/api/profiles/deactivate")
    assert client.post(f"{url}/executions", json={}).json()["profile_version"] == 2  # the latest is in force again
    assert client.get(f"{url}/export").json()["profile"]["profile_version"] == 2


def test_activation_reports_compatibility_warnings(client_factory):
    def check(profile):
        return [f"layer {profile.layer} is not hooked"] if profile.layer == 99 else []

    with client_factory(compatibility_check=check) as client:
        profile = create(client, "far", layer=99)
        body = client.post(f"/api/profiles/{profile['id']}/activate").json()
        assert body["warnings"] == ["layer 99 is not hooked"] and body["is_active"] is True


def test_actor_and_reason_headers_are_recorded_as_the_utf8_they_were_sent_in(database_url):
    running = start_server(database_url)
    try:
        with httpx.Client(base_url=running.base_url) as http:  # over a socket: the headers' bytes as sent
            made = http.post("/api/profiles", json={"name": "accented"},
                             headers={"X-Actor": "zoë".encode(), "X-Reason": "café ☕".encode()})
            assert made.status_code == 201, made.text
            by_actor = http.get("/api/events", params={"actor": "zoë"}).json()["events"]
            created = next(event for event in by_actor if event["type"] == "Profile.Created")
            assert (created["actor"], created["reason"], created["profile_id"]) == ("zoë", "café ☕", made.json()["id"])
            for header in ("X-Actor", "X-Reason"):
                refused = http.post("/api/profiles", json={"name": "latin1"}, headers={header: "café".encode("latin-1")})
                assert assert_error(refused, 422, "invalid_request")["field"] == header
            overridden = "approved\u202e by nobody"  # a reason that would read otherwise than it is stored
            for refused in (http.post("/api/profiles", json={"name": "latin1"}, headers={"X-Reason": overridden.encode()}),
                            http.post("/api/profiles", json={"name": "latin1", "reason": overridden})):
                assert "bidirectional" in assert_error(refused, 422)["detail"], refused.text
            assert http.get("/api/profiles/latin1").status_code == 404
    finally:
        running.stop()


def test_actor_reason_and_correlation_reach_the_audit_log(client):
    response = client.post(
        "/api/profiles",
        json={"name": "audited", "reason": "because"},
        headers={"X-Actor": "bob", "X-Correlation-ID": "corr-9"},
    )
    assert response.headers["X-Request-ID"] == "corr-9"
    events = client.get("/api/events", params={"profile_id": response.json()["id"], **fresh(client, response.json()["position"])}).json()
    created = events["events"][0]
    assert (created["actor"], created["reason"], created["correlation_id"]) == ("bob", "because", "corr-9")
    generated = client.post("/api/profiles", json={"name": "anon"}, headers={"X-Reason": "hdr"})
    request_id = generated.headers["X-Request-ID"]
    assert request_id
    events = client.get("/api/events", params={"profile_id": generated.json()["id"], **fresh(client, generated.json()["position"])}).json()
    assert events["events"][0]["actor"] == "anonymous" and events["events"][0]["reason"] == "hdr"
    assert events["events"][0]["correlation_id"] == request_id
    for odd in ("<script>", "a b", "x" * 129):  # not an id a tracing system makes: the server draws one
        drawn = client.post("/api/profiles", json={"name": f"odd {len(odd)}"}, headers={"X-Request-ID": odd})
        assert drawn.status_code == 201 and drawn.headers["X-Request-ID"] != odd


def test_the_list_filters_a_pinned_active_profile_on_the_version_it_shows(client):
    profile = create(client, "pinned", description="first words", tags=["old"], products=["prod-a"])
    url = f"/api/profiles/{profile['id']}"
    client.put(url, json={"description": "second words", "tags": ["new"], "products": ["prod-b"]})
    activated = client.post(f"{url}/activate", json={"version": 1}).json()

    def listed(**params: str) -> list[tuple[int, list[str]]]:
        page = client.get("/api/profiles", params={**params, **fresh(client, activated["position"])}).json()
        return [(row["version"], row["tags"]) for row in page["profiles"]]

    for shown in ({"tag": "old"}, {"product": "prod-a"}, {"search": "first"}, {"search": "PINNED"},
                  {"tag": "old", "search": "first"}):
        assert listed(**shown) == [(1, ["old"])], shown
    for hidden in ({"tag": "new"}, {"product": "prod-b"}, {"search": "second"}, {"tag": "old", "search": "second"}):
        assert listed(**hidden) == [], hidden
    client.post(f"{url}/activate")  # following the latest again: the filters test version 2
    assert listed(tag="new") == [(2, ["new"])] and listed(tag="old") == []


def test_a_change_based_on_the_pinned_version_a_read_showed_is_stale_when_the_profile_moved_past_it(client):
    made = create(client, "lu", steering={"1": 1.0}, tags=["a"])
    url = f"/api/profiles/{made['id']}"
    client.put(url, json={"tags": ["a", "b"], "steering": {"1": 2.0}}, headers={"X-Actor": "bob"})  # version 2
    activation = client.post(f"{url}/activate", json={"version": 1})
    read = client.get(url, params=fresh(client, activation.json()["position"]))
    assert (read.json()["version"], read.json()["tags"], read.json()["pinned"]) == (1, ["a"], True)
    assert read.headers["ETag"] == activation.headers["ETag"] == etag(made, 1, 3)  # the version it shows
    stale = client.put(url, json={"tags": ["a", "c"]}, headers={"If-Match": read.headers["ETag"]})
    assert "is at version 2" in assert_error(stale, 412, "stale_version")["detail"]  # was a 200 that lost "b"
    assert client.get(f"{url}/versions/2").json()["tags"] == ["a", "b"]
    assert client.get("/api/profiles/active").headers["ETag"] == read.headers["ETag"]  # it had none
    based_on_the_latest = client.put(url, json={"tags": ["a", "b", "c"]}, headers={"If-Match": etag(made, 2, 3)})
    assert based_on_the_latest.status_code == 200, based_on_the_latest.text


def test_a_change_of_the_active_profile_answers_as_reads_show_it_the_version_in_force(client):
    made = create(client, "kept active", description="one")
    url = f"/api/profiles/{made['id']}"
    client.post(f"{url}/activate")
    following = client.put(url, json={"description": "two"}).json()
    assert (following["version"], following["latest_version"], following["pinned"]) == (2, 2, False)  # was null
    client.post(f"{url}/activate", json={"version": 1})
    for command in (lambda: client.put(url, json={"description": "three"}),
                    lambda: client.post(f"{url}/revert", json={"version": 2})):
        answer = command()
        body = answer.json()  # it made a version that is not in force: pinned, version 1 is (was "pinned": false)
        assert (body["version"], body["description"], body["pinned"]) == (1, "one", True), body
        assert answer.headers["ETag"] == client.get(url).headers["ETag"]  # the version it shows, as a read gives it
    assert body["latest_version"] == 4 and client.get(f"{url}/versions/4").json()["description"] == "two"


def test_a_reason_in_the_body_overrides_x_reason_an_empty_one_too(client):
    profile = create(client, "reasoned")
    url = f"/api/profiles/{profile['id']}"
    client.put(url, json={"description": "a", "reason": "from the body"}, headers={"X-Reason": "from the header"})
    client.put(url, json={"description": "b", "reason": ""}, headers={"X-Reason": "from the header"})
    client.put(url, json={"description": "c"}, headers={"X-Reason": "from the header"})
    reasons = [e["reason"] for e in client.get("/api/events", params={"profile_id": profile["id"]}).json()["events"]
               if e["type"] == "Profile.DetailsRevised"]
    assert reasons == ["from the body", None, "from the header"]

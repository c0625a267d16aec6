"""Versions, time travel (as_of), diffs and reverts through HTTP."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

from tests.api.conftest import assert_error, create, etag, fresh


def test_versions_list_and_get(client):
    profile = create(client, "v", steering={"1": 1.0})
    url = f"/api/profiles/{profile['id']}"
    client.put(url, json={"steering": {"1": 2.0}}, headers={"X-Actor": "ann", "X-Reason": "stronger"})
    last = client.put(url, json={"description": "third"}).json()
    versions = client.get(f"{url}/versions", params=fresh(client, last["position"])).json()
    assert [v["version"] for v in versions["versions"]] == [1, 2, 3]
    assert versions["next_cursor"] is None
    second = versions["versions"][1]
    assert second["steering"] == {"1": 2.0} and second["actor"] == "ann" and second["reason"] == "stronger"
    assert second["event_type"] == "Profile.SpecRevised"
    page = client.get(f"{url}/versions", params={"limit": 2}).json()
    assert len(page["versions"]) == 2 and page["next_cursor"]
    rest = client.get(f"{url}/versions", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [v["version"] for v in rest["versions"]] == [3]
    one = client.get(f"{url}/versions/1")
    assert one.status_code == 200 and one.json()["steering"] == {"1": 1.0}
    assert_error(client.get(f"{url}/versions/9"), 404, "profile_version_not_found")
    assert_error(client.get(f"{url}/versions/zero"), 422, "invalid_request")
    assert_error(client.get(f"{url}/versions/0"), 422, "invalid_request")
    assert_error(client.get(f"/api/profiles/{uuid.uuid4()}/versions"), 404, "profile_not_found")
    assert_error(client.get(f"{url}/versions", params={"cursor": "nope"}), 422, "invalid_cursor")


def test_a_version_edited_without_a_new_one_names_its_creator_and_its_last_editor(client):
    url = f"/api/profiles/{create(client, 'ed', steering={'1': 1.0})['id']}"
    edited = client.put(url, json={"description": "fixed", "bump_version": False},
                        headers={"X-Actor": "bob", "X-Reason": "typo"}).json()
    (version,) = client.get(f"{url}/versions").json()["versions"]
    assert (version["description"], version["event_type"], version["edited_by"], version["edit_reason"]) == (
        "fixed", "Profile.Created", "bob", "typo")
    assert version["actor"] != "bob" and version["edited_at"] > version["recorded_at"]
    second = client.put(url, json={"description": "anew"}).json()
    assert second["version"] == 2 and edited["version"] == 1
    assert client.get(f"{url}/versions/2").json()["edited_by"] is None  # a new version starts unedited


def test_as_of_shows_an_active_profile_with_the_version_in_force_as_the_present_does(client):
    url = f"/api/profiles/{create(client, 'pin', steering={'5': 1.0})['id']}"
    client.put(url, json={"steering": {"5": 3.0}})
    client.post(f"{url}/activate", json={"version": 1})
    time.sleep(0.05)
    pinned_then = datetime.now(timezone.utc).isoformat()
    time.sleep(0.05)
    client.post(f"{url}/activate")  # now following the latest
    now = datetime.now(timezone.utc).isoformat()
    fields = ("version", "is_active", "pinned", "latest_version", "steering")
    assert [client.get(url, params={"as_of": pinned_then}).json()[f] for f in fields] == [1, True, True, 2, {"5": 1.0}]
    assert [client.get(url, params={"as_of": now}).json()[f] for f in fields] == [2, True, False, 2, {"5": 3.0}]
    assert [client.get(url).json()[f] for f in fields] == [2, True, False, 2, {"5": 3.0}]


def test_as_of_shows_the_profile_as_it_stood(client):
    profile = create(client, "tt", steering={"5": 1.0})
    url = f"/api/profiles/{profile['id']}"
    time.sleep(0.05)
    between = datetime.now(timezone.utc)
    time.sleep(0.05)
    client.put(url, json={"steering": {"5": 3.0}})
    then = client.get(url, params={"as_of": between.isoformat()})
    assert then.status_code == 200, then.text
    assert then.json()["steering"] == {"5": 1.0} and then.json()["version"] == 1
    assert then.headers["ETag"] == etag(profile, 1)
    zulu = between.replace(tzinfo=None).isoformat() + "Z"
    assert client.get(url, params={"as_of": zulu}).json()["version"] == 1
    before = (between - timedelta(days=1)).isoformat()
    assert_error(client.get(url, params={"as_of": before}), 404, "profile_not_found")
    assert_error(client.get(url, params={"as_of": "yesterday"}), 422, "invalid_request")
    for far in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:30:00+01:00"):  # ISO 8601, past year 9999 (or 1) in UTC
        refused = assert_error(client.get(url, params={"as_of": far}), 422, "invalid_request")
        assert refused["detail"].startswith("as_of must be a time between the years 1 and 9999 in UTC"), refused
    deleted = client.delete(url).json()
    assert_error(client.get(url, params={"as_of": datetime.now(timezone.utc).isoformat()}), 404)
    assert client.get(url, params={"as_of": between.isoformat(), **fresh(client, deleted["position"])}).status_code == 200



def test_as_of_with_a_name_reads_the_profile_that_held_the_name_then(client):
    first = create(client, "sw", steering={"1": 1.0}, layer=7)
    time.sleep(0.05)
    while_first = datetime.now(timezone.utc).isoformat()
    time.sleep(0.05)
    client.delete(f"/api/profiles/{first['id']}")
    second = create(client, "sw", steering={"1": 1.0}, layer=8)  # the name taken again
    renamed = create(client, "calm", steering={"2": 1.0})
    time.sleep(0.05)
    before_the_rename = datetime.now(timezone.utc).isoformat()
    time.sleep(0.05)
    client.put(f"/api/profiles/{renamed['id']}", json={"name": "calm2"})
    then = client.get("/api/profiles/sw", params={"as_of": while_first})
    assert then.status_code == 200, then.text  # was 404: "profile <the second's id> did not exist at …"
    assert (then.json()["id"], then.json()["layer"]) == (first["id"], 7)
    assert client.get("/api/profiles/sw").json()["id"] == second["id"]  # now: the one holding it now
    called = client.get("/api/profiles/calm", params={"as_of": before_the_rename})
    assert called.status_code == 200 and called.json()["id"] == renamed["id"], called.text  # was 404: no such name
    long_ago = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
    missing = assert_error(client.get("/api/profiles/sw", params={"as_of": long_ago}), 404, "profile_not_found")
    assert missing["detail"].startswith("no profile was named 'sw' at ")

def test_diff_field_by_field_and_per_feature(client):
    profile = create(client, "d", steering={"1": 1.0, "2": 2.0, "3": 3.0}, tags=["a"])
    url = f"/api/profiles/{profile['id']}"
    client.put(url, json={"steering": {"2": 2.5, "3": 3.0, "4": 4.0}, "tags": ["b"], "layer": 7})
    body = client.get(f"{url}/diff", params={"from": 1, "to": 2}).json()
    assert body["from_version"] == 1 and body["to_version"] == 2
    changes = {change["field"]: (change["before"], change["after"]) for change in body["changes"]}
    assert changes == {"tags": (["a"], ["b"]), "layer": (None, 7)}
    assert body["steering"] == {
        "added": {"4": 4.0},
        "removed": {"1": 1.0},
        "changed": {"2": {"before": 2.0, "after": 2.5}},
    }
    assert client.get(f"{url}/diff").json()["from_version"] == 1  # defaults: latest vs the one before
    same = client.get(f"{url}/diff", params={"from": 2, "to": 2}).json()
    assert same["changes"] == [] and same["steering"] == {"added": {}, "removed": {}, "changed": {}}
    assert_error(client.get(f"{url}/diff", params={"from": 1, "to": 5}), 404, "profile_version_not_found")
    assert_error(client.get(f"{url}/diff", params={"from": "one"}), 422, "invalid_request")
    assert_error(client.get(f"/api/profiles/{uuid.uuid4()}/diff"), 404, "profile_not_found")


def test_revert_makes_a_new_version_equal_to_the_old_one(client):
    profile = create(client, "r", steering={"1": 1.0}, description="first")
    url = f"/api/profiles/{profile['id']}"
    client.put(url, json={"steering": {"1": 9.0}, "description": "second"})
    response = client.post(f"{url}/revert", json={"version": 1, "reason": "oops"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 3 and body["steering"] == {"1": 1.0} and body["description"] == "first"
    assert response.headers["ETag"] == etag(profile, 3) and response.headers["X-Ledger-Position"] == str(body["position"])
    versions = client.get(f"{url}/versions", params=fresh(client, body["position"])).json()["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3] and versions[2]["reason"] == "oops"
    assert_error(client.post(f"{url}/revert", json={"version": 7}), 404, "profile_version_not_found")
    assert_error(client.post(f"{url}/revert", json={}), 422, "invalid_request")
    assert_error(client.post(f"{url}/revert", json={"version": 1}, headers={"If-Match": '"2"'}), 412)


def test_an_auditor_reads_which_version_a_revert_went_back_to_and_where_an_import_came_from(client):
    url = f"/api/profiles/{create(client, 'origin', steering={'1': 1.0}, tags=['a'])['id']}"
    client.put(url, json={"steering": {"1": 9.0}})
    client.put(url, json={"tags": ["b"]})
    assert client.post(f"{url}/revert", json={"version": 1}).status_code == 200  # a spec change: SpecRevised
    assert client.post(f"{url}/revert", json={"version": 3}).status_code == 200  # tags only: DetailsRevised
    versions = client.get(f"{url}/versions").json()["versions"]
    assert [(v["version"], v["reverted_to"], v["imported"]) for v in versions] == [
        (1, None, None), (2, None, None), (3, None, None), (4, 1, None), (5, 3, None)]
    log = client.get("/api/events", params={"profile_id": url.rsplit("/", 1)[1]}).json()["events"]
    revisions = [event["data"].get("reverted_to") for event in log if event["type"].endswith("Revised")]
    assert revisions == [None, None, 1, 3]

    document = client.get(f"{url}/export", params={"version": 2}).json()
    copy = client.post("/api/profiles/import", params={"rename": "true"}, json=document)
    assert copy.status_code == 201, copy.text
    (first,) = client.get(f"/api/profiles/{copy.json()['id']}/versions").json()["versions"]
    assert first["imported"] == {"exported_from": "profile-ledger", "exported_at": document["exported_at"],
                                 "profile_version": 2}
    flat = client.post("/api/profiles/import", json={"name": "flat origin", "version": 7}).json()
    (first,) = client.get(f"/api/profiles/{flat['id']}/versions").json()["versions"]
    assert first["imported"] == {"exported_from": None, "exported_at": None, "profile_version": 7}
    made = create(client, "made here")
    assert client.get(f"/api/profiles/{made['id']}/versions").json()["versions"][0]["imported"] is None
    local_time = client.post("/api/profiles/import", json={**document, "exported_at": "2026-01-02T03:04:05+01:00",
                                                           "profile": {**document["profile"], "name": "local"}})
    (first,) = client.get(f"/api/profiles/{local_time.json()['id']}/versions").json()["versions"]
    assert first["imported"]["exported_at"] == "2026-01-02T02:04:05Z"  # recorded in UTC, as every time
    for field, claim in (("exported_at", "yesterday"), ("exported_at", "2026-13-45T00:00:00Z"),
                         ("exported_from", "evil\u202esystem"), ("exported_from", "x" * 300)):
        refused = client.post("/api/profiles/import", json={**document, field: claim, "profile": {
            **document["profile"], "name": f"refused {field}"}})
        assert assert_error(refused, 422, "invalid_import")["field"] == field, claim


def test_a_revert_brings_back_the_content_but_keeps_the_name_the_profile_has_now(client):
    profile = create(client, "first name", steering={"1": 1.0})
    url = f"/api/profiles/{profile['id']}"
    client.put(url, json={"name": "second name", "steering": {"1": 5.0}})
    create(client, "first name")  # another profile takes the old name

    reverted = client.post(f"{url}/revert", json={"version": 1})
    assert reverted.status_code == 200, reverted.text
    assert reverted.json()["name"] == "second name" and reverted.json()["steering"] == {"1": 1.0}
    assert client.get("/api/profiles/second%20name").json()["id"] == profile["id"]

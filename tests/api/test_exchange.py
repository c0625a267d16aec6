"""Export as an attachment safe for any name; import from a JSON body or a multipart file."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.api.exchange import content_disposition
from ledger.values import STEERING_MAX as FEATURES_MAX
from tests.api.conftest import assert_error, create, fresh


def _filenames(header: str) -> tuple[str, str]:
    match = re.fullmatch(r'attachment; filename="([^"]*)"; filename\*=UTF-8\'\'(\S+)', header)
    assert match, header
    return match.group(1), unquote(match.group(2))


@given(st.text(min_size=0, max_size=150))
@settings(max_examples=300, deadline=None)
def test_content_disposition_is_safe_for_any_name(name):
    header = content_disposition(name)
    assert header.isascii() and "\r" not in header and "\n" not in header
    fallback, full = _filenames(header)
    for filename in (fallback, full):
        assert filename.endswith(".json") and len(filename) > len(".json")
        assert not any(ch in filename for ch in '/\\"') and all(ord(ch) >= 32 and ord(ch) != 127 for ch in filename)
        assert not filename.startswith(".")
    assert all(32 <= ord(ch) < 127 for ch in fallback)


def test_export_downloads_the_profile_as_an_attachment(client):
    profile = create(client, "Über\\..\\prod \"x\"", steering={"3": 1.5}, tags=["t"], layer=4)
    response = client.get(f"/api/profiles/{profile['id']}/export", params=fresh(client, profile["position"]))
    assert response.status_code == 200, response.text
    fallback, full = _filenames(response.headers["Content-Disposition"])
    assert full == "Über_.._prod _x.json" and fallback == "Uber_.._prod _x.json"
    document = response.json()
    assert document["type"] == "millm_profile" and document["version"] == "1.0"
    assert document["profile"]["name"] == profile["name"] and document["profile"]["steering"] == {"3": 1.5}
    assert document["profile"]["layer"] == 4 and document["profile"]["profile_version"] == 1
    assert document["exported_at"].endswith("Z")  # UTC, written as every other time in the API
    updated = client.put(f"/api/profiles/{profile['id']}", json={"steering": {"3": 2.0}}).json()
    old = client.get(f"/api/profiles/{profile['id']}/export", params={"version": 1, **fresh(client, updated["position"])})
    assert old.json()["profile"]["steering"] == {"3": 1.5}
    assert_error(client.get(f"/api/profiles/{profile['id']}/export", params={"version": 9}), 404)
    assert_error(client.get(f"/api/profiles/{uuid.uuid4()}/export"), 404, "profile_not_found")


def test_import_round_trip_from_multipart_and_json(client):
    profile = create(client, "shared", steering={"8": -1.0}, products=["chat"])
    document = client.get(f"/api/profiles/{profile['id']}/export", params=fresh(client, profile["position"])).content
    clash = client.post("/api/profiles/import", files={"file": ("shared.json", document, "application/json")})
    assert_error(clash, 409, "profile_name_taken")
    renamed = client.post(
        "/api/profiles/import", params={"rename": "true"}, files={"file": ("shared.json", document)}
    )
    assert renamed.status_code == 201, renamed.text
    body = renamed.json()
    assert body["name"] == "shared (imported)" and body["steering"] == {"8": -1.0} and body["products"] == ["chat"]
    assert renamed.headers["X-Ledger-Position"] == str(body["position"])
    doc = json.loads(document)
    doc["profile"]["name"] = "from json"
    imported = client.post("/api/profiles/import", json=doc)
    assert imported.status_code == 201 and imported.json()["name"] == "from json"
    flat = client.post("/api/profiles/import", json={"name": "flat", "steering": {"1": 1}})
    assert flat.status_code == 201 and flat.json()["steering"] == {"1": 1.0}
    saved_by_an_editor = b"\xef\xbb\xbf" + document  # a UTF-8 byte-order mark first
    with_mark = client.post("/api/profiles/import", params={"rename": "true"},
                            files={"file": ("s.json", saved_by_an_editor)})
    assert with_mark.status_code == 201 and with_mark.json()["steering"] == {"8": -1.0}, with_mark.text
    only_a_mark = client.post("/api/profiles/import", files={"file": ("s.json", b"\xef\xbb\xbf \n")})
    assert assert_error(only_a_mark, 422)["detail"] == "the import document is empty"


def test_import_refuses_bad_documents(client):
    assert_error(client.post("/api/profiles/import", files={"file": ("x.json", b"{not json")}), 422, "invalid_request")
    assert_error(client.post("/api/profiles/import", files={"other": ("x.json", b"{}")}), 422, "invalid_request")
    document = json.dumps({"name": "one of two", "steering": {"1": 1}}).encode()
    two = assert_error(client.post("/api/profiles/import", files=[("file", ("a.json", document)),
                                                                    ("file", ("b.json", document))]), 422)
    assert two["field"] == "file" and "more than one" in two["detail"]
    misplaced = assert_error(client.post("/api/profiles/import", data={"rename": "true"},
                                         files={"file": ("a.json", document)}), 422)
    assert misplaced["field"] == "rename" and "?rename=true" in misplaced["detail"]
    assert_error(client.post("/api/profiles/import", content=b"", headers={"content-type": "application/json"}), 422)
    body = assert_error(client.post("/api/profiles/import", json={"type": "other"}), 422, "invalid_import")
    assert body["field"] == "type"
    body = assert_error(
        client.post("/api/profiles/import", json={"type": "millm_profile", "profile": {"name": "x", "steering": {"a": 1}}}),
        422,
        "invalid_import",
    )
    assert body["field"] == "profile.steering.a"
    assert_error(client.post("/api/profiles/import", json=[1, 2]), 422, "invalid_import")
    both = {"type": "millm_profile", "profile": {"name": "x", "model": "m", "model_id": "other"}}
    assert assert_error(client.post("/api/profiles/import", json=both), 422)["field"] == "profile.model_id"
    agreeing = {"type": "millm_profile", "profile": {"name": "agreeing", "sae": "s", "sae_id": "s"}}
    assert client.post("/api/profiles/import", json=agreeing).status_code == 201
    tags_as_object = {"type": "millm_profile", "profile": {"name": "x", "tags": {"a": 1}}}
    assert assert_error(client.post("/api/profiles/import", json=tags_as_object), 422)["field"] == "profile.tags"
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):  # as on every JSON route
        assert_error(client.post("/api/profiles/import", content=b"name=x", headers={"content-type": content_type}),
                     415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"version": "1.0", "type": "millm_profile", "profile": {"name": "x", "steerring": {"1": 1.0}}},
         "profile.steerring"),
        ({"version": "1.0", "type": "millm_profile", "profile": {"name": "x"}, "signature": "abc"}, "signature"),
        ({"name": "flat", "steering": {"1": 1.0}, "colour": "red"}, "colour"),
    ],
)
def test_an_import_with_an_unknown_field_is_refused_naming_it(client, document, field):
    """Issue 10 (Low): import ignored unknown fields, so a misspelt field was silently dropped."""
    body = assert_error(client.post("/api/profiles/import", json=document), 422, "invalid_import")
    assert body["field"] == field and repr(field) in body["detail"]
    assert client.get("/api/events").json()["events"] == []


@pytest.mark.parametrize(("document", "field"), [
    ({"version": 1, "type": "millm_profile", "profile": {"name": "x"}}, "version"),
    ({"type": "millm_profile", "profile": {"name": "x"}, "exported_at": 5}, "exported_at"),
    ({"type": "millm_profile", "profile": {"name": "x"}, "exported_from": {"a": 1}}, "exported_from"),
    ({"type": "millm_profile", "profile": {"name": "x", "profile_version": "x"}}, "profile.profile_version"),
    ({"type": "millm_profile", "profile": {"name": "x", "profile_version": -5}}, "profile.profile_version"),
    ({"type": "millm_profile", "profile": {"name": "x", "profile_version": 1.5}}, "profile.profile_version"),
    ({"type": "millm_profile", "profile": {"name": "x", "profile_version": 2**70}}, "profile.profile_version"),
    ({"name": "flat", "exported_at": 5}, "exported_at"),
    ({"name": "flat", "version": -5}, "version"),
    ({"name": "flat", "version": 0}, "version"),
    ({"name": "flat", "version": 2**63}, "version"),
    ({"name": "flat", "version": 5.5}, "version"),
    ({"name": "flat", "version": True}, "version"),
])
def test_an_import_refuses_a_field_it_reads_for_information_only_given_a_wrong_type(client, document, field):
    body = assert_error(client.post("/api/profiles/import", json=document), 422, "invalid_import")
    assert body["field"] == field, body
    assert client.get("/api/events").json()["events"] == []


def test_a_flat_profile_as_this_api_answers_it_imports(client):
    created = client.post("/api/profiles", json={"name": "round", "steering": {"2": 0.5}}).json()
    document = client.get(f"/api/profiles/{created['id']}", params=fresh(client, created["position"])).json()
    answer = client.post("/api/profiles/import", params={"rename": "true"}, json=document)
    assert answer.status_code == 201, answer.text
    revised = client.put(f"/api/profiles/{created['id']}", json={"steering": {"2": 0.75}}).json()
    document = client.get(f"/api/profiles/{created['id']}").json()
    assert document["version"] == revised["version"] == 2  # the profile's version, not the format's
    again = client.post("/api/profiles/import", params={"rename": "true"}, json=document)
    assert again.status_code == 201 and again.json()["steering"] == {"2": 0.75}, again.text
    activated = client.post(f"/api/profiles/{created['id']}/activate").json()
    for answer in (created, revised, activated):  # the answers to commands, too
        imported = client.post("/api/profiles/import", params={"rename": "true"}, json=answer)
        assert imported.status_code == 201 and imported.json()["steering"] == answer["steering"], imported.text
    typed = {"version": "2.0", "type": "millm_profile", "profile": {"name": "future"}}
    assert assert_error(client.post("/api/profiles/import", json=typed), 422, "invalid_import")["field"] == "version"


def test_an_import_with_a_strength_too_long_for_a_float_is_refused_naming_the_feature(client):
    document = '{"name": "long", "steering": {"1": ' + "9" * 310 + "}}"  # (was 500: int too large for a float)
    for body in ({"content": document, "headers": {"Content-Type": "application/json"}},
                 {"files": {"file": ("long.json", document)}}):
        refused = assert_error(client.post("/api/profiles/import", **body), 422)
        assert refused["field"] == "steering.1" and "between" in refused["detail"], refused


def test_an_import_renamed_on_a_clash_always_finds_a_free_name(client):
    names = []
    for _ in range(60):  # a nightly job importing one document (before: refused from the 52nd on, 409)
        answer = client.post("/api/profiles/import", params={"rename": "true"}, json={"name": "nightly"})
        assert answer.status_code == 201, answer.text
        names.append(answer.json()["name"])
    assert names[:3] == ["nightly", "nightly (imported)", "nightly (imported 2)"] and len(set(names)) == 60
    assert names[-1] == "nightly (imported 59)"
    deleted = client.get("/api/profiles/by-name/nightly (imported 7)").json()["id"]
    assert client.delete(f"/api/profiles/{deleted}").status_code == 200
    again = client.post("/api/profiles/import", params={"rename": "true"}, json={"name": "nightly"}).json()
    assert again["name"] not in names[:7] + names[8:]  # a free name, the freed one or one past the last


def test_exporting_a_version_of_a_profile_that_never_was_says_there_is_no_such_profile(client):
    nobody = "00000000-0000-4000-8000-000000000000"
    for params in ({}, {"version": 1}):  # (with a version: was profile_version_not_found, "has no version 1")
        assert_error(client.get(f"/api/profiles/{nobody}/export", params=params), 404, "profile_not_found")


def test_a_deleted_profiles_versions_stay_history_to_export_but_its_present_is_gone(client, tmp_path, database_url):
    import subprocess
    import sys

    made = create(client, "gone", steering={"1": 0.5})
    client.put(f"/api/profiles/{made['id']}", json={"steering": {"2": 1.0}})
    deleted = client.delete(f"/api/profiles/{made['id']}")
    assert deleted.status_code == 200, deleted.text
    first = client.get(f"/api/profiles/{made['id']}/export", params={"version": 1})
    assert first.status_code == 200 and first.json()["profile"]["steering"] == {"1": 0.5}, first.text
    assert "gone" in first.headers["Content-Disposition"]
    latest = assert_error(client.get(f"/api/profiles/{made['id']}/export"), 404, "profile_not_found")
    assert "has been deleted" in latest["detail"] and "?version=" in latest["detail"]  # was "not found"
    last = client.get(f"/api/profiles/{made['id']}/diff").json()  # its latest: the version it was deleted at
    assert (last["name"], last["from_version"], last["to_version"]) == ("gone", 1, 2), last
    assert_error(client.get(f"/api/profiles/{made['id']}/export", params={"version": 3}), 404)
    for method in ("GET", "PUT"):  # now, as every command says it
        body = {"description": "x"} if method == "PUT" else None
        found = client.request(method, f"/api/profiles/{made['id']}", json=body)
        assert "has been deleted" in assert_error(found, 404, "profile_not_found")["detail"], method
    later = {"as_of": "2999-01-01T00:00:00Z"}
    detail = assert_error(client.get(f"/api/profiles/{made['id']}", params=later), 404)["detail"]
    assert f"was deleted at {datetime.now(UTC).year}" in detail and "before 2999" in detail, detail  # not as_of
    shown = subprocess.run([sys.executable, "-m", "ledger", "--database", database_url, "show", made["id"],
                            "--as-of", later["as_of"]], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 1 and detail in shown.stderr, shown  # as the API says
    diffed = subprocess.run([sys.executable, "-m", "ledger", "--database", database_url, "diff", made["id"]],
                            capture_output=True, text=True, timeout=120)
    assert diffed.returncode == 0 and diffed.stdout.startswith("gone: version 1 → 2"), diffed


def test_the_export_of_the_largest_profile_imports_again_though_larger_than_other_bodies(client):
    steering = {str(index): -1.2345678901234567e-100 for index in range(FEATURES_MAX)}  # the longest strengths
    document = json.dumps({"type": "millm_profile", "version": "1.0", "profile": {"name": "wide", "steering": steering}},
                          indent=2).encode()
    assert len(document) > 3 * 1024 * 1024  # past the limit of other bodies, 2 MiB (it was a 413)
    made = client.post("/api/profiles/import", content=document, headers={"Content-Type": "application/json"})
    assert made.status_code == 201, made.text[:300]
    exported = client.get(f"/api/profiles/{made.json()['id']}/export")
    assert exported.json()["profile"]["steering"] == steering
    copied = client.post("/api/profiles/import", params={"rename": True}, content=exported.content,
                         headers={"Content-Type": "application/json"})
    assert copied.status_code == 201 and len(copied.json()["steering"]) == FEATURES_MAX, copied.text[:300]
    assert_error(client.post("/api/profiles/import", content=b" " * (17 * 1024 * 1024),
                             headers={"Content-Type": "application/json"}), 413)

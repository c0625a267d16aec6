"""Bad input never gets a 500 or a traceback: one error shape, 4xx statuses."""

from __future__ import annotations

import uuid

import pytest

from ledger.api.exchange import IMPORT_BODY_FACTOR
from tests.api.conftest import assert_error, create


def test_malformed_json_is_422(client):
    response = client.post("/api/profiles", content=b'{"name": ', headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_request")
    response = client.put(f"/api/profiles/{uuid.uuid4()}", content=b"{oops}", headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_request")


def test_a_lone_surrogate_escape_is_named_as_such_not_as_a_truncated_body(client):
    lone = b'{"name": "x", "description": "\\ud800"}'  # (followed by more text, msgspec names it itself)
    for path in ("/api/profiles", "/api/profiles/import"):
        refused = assert_error(client.post(path, content=lone, headers={"content-type": "application/json"}), 422)
        assert "a lone utf-16 surrogate \\ud800 (byte 30)" in refused["detail"] and "truncated" not in refused["detail"]
    cut_short = b'{"name": "a\\\\ud800", "layer": 15'  # an escaped backslash, then text: the body is cut short
    json_body = {"content-type": "application/json"}
    refused = assert_error(client.post("/api/profiles", content=cut_short, headers=json_body), 422)
    assert "truncated" in refused["detail"] and "surrogate" not in refused["detail"]


def test_unknown_fields_are_refused(client):
    profile = create(client, "strict")
    body = assert_error(client.put(f"/api/profiles/{profile['id']}", json={"nmae": "typo"}), 422, "invalid_request")
    assert "nmae" in body["detail"]
    assert_error(client.post(f"/api/profiles/{profile['id']}/activate", json={"pin": 1}), 422, "invalid_request")
    assert_error(client.post(f"/api/profiles/{profile['id']}/revert", json={"version": 1, "x": 0}), 422)


@pytest.mark.parametrize(
    "body",
    [
        {"name": 5},
        {"name": "x", "steering": [1, 2]},
        {"name": "x", "steering": {"1": "strong"}},
        {"name": "x", "steering": {"1": True}},
        {"name": "x", "tags": "tag"},
        {"name": "x", "tags": [1]},
        {"name": "x", "metadata": []},
        {"name": "x", "layer": 1.5},
        {"name": "x", "layer": True},
        {"name": "x", "steering": {"-1": 1}},
        {"name": "x" * 101},
        {"name": "team/tone"},
        {"name": "ｔｅａｍ／ｔｏｎｅ"},
        {"name": ".."},
    ],
)
def test_bad_types_and_values_are_422(pg_client, body):
    response = assert_error(pg_client.post("/api/profiles", json=body), 422)
    assert response["error"] in ("invalid_request", "invalid_value")


def test_oversized_body_is_413(client_factory):
    with client_factory(max_body_size=1024) as client:
        big = {"name": "big", "description": "x" * 4096}
        assert_error(client.post("/api/profiles", json=big), 413, "payload_too_large")
        too_large_import = b" " * (IMPORT_BODY_FACTOR * 1024 + 1)  # an import's limit is a multiple of the configured
        assert_error(client.post("/api/profiles/import", files={"file": ("x.json", too_large_import)}), 413)
        assert client.post("/api/profiles", json={"name": "small"}).status_code == 201


def test_unknown_route_and_method(client):
    assert_error(client.get("/api/nothing"), 404, "not_found")
    assert_error(client.patch("/api/profiles"), 405, "method_not_allowed")
    for path in ("/v1", "/v1/embeddings"):  # OpenAI's clients read errors in OpenAI's shape ("/v1" was the ledger's)
        assert assert_error(client.get(path), 404, "not_found")["error"]["type"] == "invalid_request_error"


def test_bad_headers(client):
    assert_error(client.post("/api/profiles", json={"name": "h"}, headers={"X-Actor": "a" * 500}), 422)
    tabbed = assert_error(client.post("/api/profiles", json={"name": "h"}, headers={"X-Actor": "a\tb"}), 422)
    assert tabbed["field"] == "X-Actor" and "control or invisible" in tabbed["detail"]  # as the console's sign-in
    assert_error(client.get("/api/profiles", headers={"X-Min-Position": "soon"}), 422, "invalid_request")
    assert_error(client.get("/api/profiles", params={"min_position": -1}), 422, "invalid_request")
    assert_error(client.get("/api/events", params={"since": "last tuesday"}), 422, "invalid_request")
    assert_error(client.get("/api/events", params={"profile_id": "nope"}), 404, "profile_not_found")  # no such name


def test_a_command_without_its_body_says_so(client):
    for headers in ({}, {"Content-Type": "application/json"}):
        body = assert_error(client.post("/api/profiles", headers=headers), 422, "invalid_request")
        assert body["detail"] == "body: this request needs a JSON body", body


def test_a_body_that_is_not_json_is_a_415_and_not_read_as_json(client):
    deep = '{"name": "deep", "metadata": {"a": ' + "[" * 20000 + "]" * 20000 + "}}"
    for path, body in (("/api/profiles", '{"name": "plain", "layer": "3"}'), ("/api/profiles/deactivate", deep)):
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            refused = client.post(path, content=body, headers={"Content-Type": content_type})
            assert_error(refused, 415, "unsupported_media_type")
    chat = client.post("/v1/chat/completions", content='{"messages": []}', headers={"Content-Type": "text/plain"})
    assert chat.status_code == 415 and chat.json()["error"]["code"] == "unsupported_media_type"
    latin = '{"name": "caf\xe9"}'.encode("latin-1")  # JSON in another encoding than UTF-8: before, "malformed JSON"
    for path in ("/api/profiles", "/api/profiles/import"):
        refused = client.post(path, content=latin, headers={"Content-Type": "application/json; charset=latin-1"})
        assert "latin-1" in assert_error(refused, 415, "unsupported_media_type")["detail"], path
    assert client.get("/api/events").json()["events"] == []
    named = client.post("/api/profiles", content='{"name": "caf\u00e9"}'.encode(),
                        headers={"Content-Type": 'application/json; charset="UTF-8"'})
    assert named.status_code == 201, named.text


def test_a_change_sent_by_a_page_of_another_site_is_refused(client):
    for origin in ("https://evil.example", "null", "http://127.0.0.1:1"):
        refused = client.post("/api/profiles", json={"name": "x"}, headers={"Origin": origin})
        assert_error(refused, 403, "cross_site_request")
    assert client.get("/api/events").json()["events"] == []
    same_site = client.post("/api/profiles", json={"name": "ok"}, headers={"Origin": str(client.base_url).rstrip("/")})
    assert same_site.status_code == 201  # and clients that send no Origin (curl, SDKs) are not affected
    assert client.get("/api/profiles", headers={"Origin": "https://evil.example"}).status_code == 200  # reading


def test_a_refused_parameter_is_named_as_the_client_sent_it(client):
    url = f"/api/profiles/{create(client, 'wire-names')['id']}"
    sent = [
        (client.get(f"{url}/diff", params={"from": "abc"}), "from", "query"),
        (client.get(f"{url}/diff", params={"to": 0}), "to", "query"),
        (client.get(url, headers={"X-Min-Position": "soon"}), "X-Min-Position", "header"),
        (client.get(url, params={"min_position": "soon"}), "min_position", "query"),
        (client.post("/api/profiles", json={"name": 3}), "name", "body"),
    ]
    for response, field, source in sent:
        body = assert_error(response, 422, "invalid_request")
        assert (body["field"], body["errors"][0]["source"]) == (field, source)
        assert body["detail"].startswith(f"{field}: ")


def test_versions_and_positions_out_of_range_are_422_on_every_route(client):
    url = f"/api/profiles/{create(client, 'ranged')['id']}"
    for huge in (2**64, "9" * 4301):  # beyond any integer column; beyond what Python converts from text
        for bad in (0, -1, huge):
            for command in ("activate", "revert", "executions"):
                assert assert_error(client.post(f"{url}/{command}", json={"version": bad}), 422)["field"] == "version"
        for path, params in [(f"{url}/versions/{huge}", {}), (f"{url}/export", {"version": huge}),
                             (f"{url}/diff", {"from": 1, "to": huge}), ("/api/events", {"after": huge}),
                             ("/api/profiles", {"min_position": huge}), ("/api/events/stream", {"after": huge}),
                             ("/api/profiles/active", {"min_position": huge}), ("/events/stream", {"after": huge})]:
            assert_error(client.get(path, params=params), 422, "invalid_request")
        for header, path in [("X-Min-Position", "/api/profiles"), ("Last-Event-ID", "/api/events/stream"),
                             ("Last-Event-ID", "/events/stream")]:
            assert_error(client.get(path, headers={header: str(huge)}), 422, "invalid_request")
        for tag in (f'"{huge}"', f'"1.{huge}"'):  # matches no version
            assert_error(client.put(url, json={"description": "x"}, headers={"If-Match": tag}), 412)
    listed = client.put(url, json={"description": "x"}, headers={"If-Match": '"9.9", "1.1"'})
    assert assert_error(listed, 422, "invalid_request")["field"] == "If-Match"  # not read as its first tag
    assert client.get(f"{url}/versions/1").status_code == 200


def test_a_key_given_twice_in_one_object_is_refused_not_last_wins(client):
    made = create(client, "twice")
    for method, path, body, field in (
            ("PUT", f"/api/profiles/{made['id']}", '{"description": "a", "description": "b"}', "description"),
            ("PUT", f"/api/profiles/{made['id']}", '{"steering": {"1": 1.0, "1": 2.0}}', "steering.1"),
            ("POST", "/api/profiles", '{"name": "n14", "name": "n15"}', "name"),
            ("POST", "/api/profiles/import", '{"name": "n16", "tags": [], "name": "n17"}', "name"),
            ("PUT", f"/api/profiles/{made['id']}", '{"metadata": {"a": {"k": 1, "k": 2}}}', "metadata.a.k")):
        refused = client.request(method, path, content=body, headers={"Content-Type": "application/json"})
        error = assert_error(refused, 422, "invalid_request")
        assert "is given twice in one object" in error["detail"] and error["field"] == field, body  # before: "k"
    chat = client.post("/v1/chat/completions", content='{"messages": [{"role": "user", "content": "hi", '
                       '"role": "user"}], "max_tokens": 3}', headers={"Content-Type": "application/json"})
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "messages[0].role", chat.text
    assert client.get(f"/api/profiles/{made['id']}").json()["version"] == 1  # before: versions with "b" and 2.0
    assert client.get("/api/profiles/by-name/n15").status_code == 404

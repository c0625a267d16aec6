"""The contract as a user meets it through the HTTP API: updates never wipe what they do not name, names work
wherever an id does, the active view shows the version in force, deleted profiles come back, strengths are
bounded, and a run's re-run spec is found by its run id."""

from __future__ import annotations

import http.client
import json
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import assert_error, create, etag, fresh, make_client, start_server

# -- updates: absent or null leaves a field as it is ---------------------------------------------------------
ABSENT = object()
UPDATABLE = ("name", "description", "model_id", "sae_id", "layer", "steering", "tags", "products", "metadata")
EXPLICIT = {
    "name": st.sampled_from(["-x", "-y"]),  # a suffix to the profile's own (unique) name
    "description": st.sampled_from(["", "calm", "quiet sea"]),
    "model_id": st.sampled_from(["", "m1", "m2"]),
    "sae_id": st.sampled_from(["", "s1"]),
    "layer": st.sampled_from([0, 3, 12]),
    "steering": st.dictionaries(st.sampled_from(["1", "2", "30"]), st.sampled_from([0.5, -2.0, 200.0]), max_size=3),
    "tags": st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3),
    "products": st.lists(st.sampled_from(["p1", "p2"]), unique=True, max_size=2),
    "metadata": st.sampled_from([{}, {"k": 1}, {"deep": {"list": [1, 2]}}]),
}
UPDATES = st.lists(
    st.fixed_dictionaries({field: st.one_of(st.just(ABSENT), st.none(), values) for field, values in EXPLICIT.items()}),
    min_size=1,
    max_size=4,
)


def expected_after(value: Any, field: str, base_name: str) -> Any:
    """What a field reads after an update that names it with ``value`` (clearing values read as cleared)."""
    if field == "name":
        return base_name + value
    if field in ("description", "model_id", "sae_id") and value == "":
        return None
    return value


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory):
    with make_client(f"sqlite:///{tmp_path_factory.mktemp('contract') / 'ledger.sqlite'}") as test_client:
        yield test_client


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(updates=UPDATES)
def test_no_sequence_of_updates_loses_a_field_it_did_not_name(shared_client, updates):
    client = shared_client
    base = f"prop-{uuid.uuid4().hex[:12]}"
    profile = create(
        client, base, description="d", model_id="m", sae_id="s", layer=2, steering={"1": 1.0},
        tags=["t"], products=["p"], metadata={"keep": True},
    )
    expected = {field: profile[field] for field in UPDATABLE}
    for update in updates:
        body = {field: value for field, value in update.items() if value is not ABSENT}
        if isinstance(body.get("name"), str):
            body["name"] = base + body["name"]
        response = client.put(f"/api/profiles/{profile['id']}", json=body)
        assert response.status_code == 200, response.text
        for field, value in update.items():
            if value is not ABSENT and value is not None:
                expected[field] = expected_after(value, field, base)
        assert {field: response.json()[field] for field in UPDATABLE} == expected


def test_null_leaves_every_field_and_the_version_as_they_are(client):
    profile = create(client, "keeper", description="d", steering={"3": 1.5}, tags=["t"], products=["p"],
                     metadata={"k": 1}, model_id="m", sae_id="s", layer=4)
    body = {field: None for field in UPDATABLE}
    response = client.put(f"/api/profiles/{profile['id']}", json={**body, "bump_version": None, "reason": None})
    assert response.status_code == 200, response.text
    after = response.json()
    assert after["changed"] is False and after["version"] == 1
    assert {field: after[field] for field in UPDATABLE} == {field: profile[field] for field in UPDATABLE}
    renamed = client.put(f"/api/profiles/{profile['id']}", json={"description": "e", "bump_version": None}).json()
    assert renamed["version"] == 2  # a null flag is its default, as a null field is "as it is"


def test_an_error_names_its_field_one_way_an_unknown_field_too(client):
    for body, field in (({"name": "x", "tags": ["ok", 5]}, "tags[1]"),
                        ({"name": "x", "tags": ["ok", "a\nb"]}, "tags[1]"),
                        ({"name": "x", "products": ["p" * 1000]}, "products[0]"),
                        ({"name": "x", "colour": 1}, "colour")):
        assert assert_error(client.post("/api/profiles", json=body), 422)["field"] == field, body


def test_clearing_is_explicit_and_makes_a_version(client):
    profile = create(client, "clearable", description="d", steering={"3": 1.5}, tags=["t"], products=["p"],
                     metadata={"k": 1}, model_id="m", sae_id="s")
    cleared = client.put(
        f"/api/profiles/{profile['id']}",
        json={"description": "", "steering": {}, "tags": [], "products": [], "metadata": {}, "model_id": "", "sae_id": ""},
    ).json()
    assert (cleared["description"], cleared["steering"], cleared["tags"], cleared["products"]) == (None, {}, [], [])
    assert (cleared["metadata"], cleared["model_id"], cleared["sae_id"], cleared["version"]) == ({}, None, None, 2)


def test_the_openapi_document_says_how_to_keep_and_clear_each_field(client):
    schema = client.get("/schema/openapi.json").json()["components"]["schemas"]["UpdateProfile"]["properties"]
    for field in UPDATABLE:
        assert "`null`: left as it is" in schema[field]["description"], field
    for field, clearing in (("description", '`""`'), ("steering", "`{}`"), ("tags", "`[]`"), ("metadata", "`{}`")):
        assert f"{clearing} clears" in schema[field]["description"], field


def test_the_openapi_document_says_which_bodies_may_be_left_out_what_streams_send_and_415(client):
    paths = client.get("/schema/openapi.json").json()["paths"]
    optional = {(path, method) for path, item in paths.items() for method, operation in item.items()
                if "requestBody" in operation and not operation["requestBody"]["required"]}
    assert optional == {("/api/profiles/{profile_id}/activate", "post"), ("/api/profiles/deactivate", "post"),
                        ("/api/profiles/{profile_id}/restore", "post"),
                        ("/api/executions/{execution_id}/replay", "post"), ("/api/ledger/rebuild", "post")}
    for path, method in optional:  # as documented: no body at all (404: no such profile or execution; 503: no model)
        called = path.replace("{profile_id}", "nobody").replace("{execution_id}", str(uuid.uuid4()))
        assert client.post(called).status_code in (200, 202, 404, 503), path
    for item in paths.values():
        for operation in item.values():
            assert "requestBody" not in operation or "415" in operation["responses"], operation["summary"]
    stream = paths["/api/events/stream"]["get"]["responses"]
    assert list(stream["200"]["content"]) == ["text/event-stream"] and "404" in stream
    assert client.get("/api/events/stream", params={"profile_id": "nobody"}).status_code == 404


def test_the_openapi_document_states_the_bounds_the_api_enforces(client):
    schemas = client.get("/schema/openapi.json").json()["components"]["schemas"]

    def branch(body: str, field: str) -> dict:  # the non-null branch of an optional field
        found = schemas[body]["properties"][field]
        return next((option for option in found.get("anyOf", [found]) if option.get("type") != "null"), found)

    for body in ("CreateProfile", "UpdateProfile"):
        assert (branch(body, "layer")["minimum"], branch(body, "layer")["maximum"]) == (0, 2**31 - 1), body
        assert (branch(body, "name")["minLength"], branch(body, "name")["maxLength"]) == (1, 100), body
        assert branch(body, "tags")["maxItems"] == 100 and branch(body, "tags")["items"]["maxLength"] == 64, body
        assert branch(body, "description")["maxLength"] == 10_000, body
    assert branch("RecordExecution", "duration_ms")["minimum"] == 0
    assert branch("RecordExecution", "entity_count")["minimum"] == 0
    assert branch("RecordExecution", "run_id")["maxLength"] == 200
    assert branch("ActivateProfile", "version")["minimum"] == 1
    assert {"type": "array", "items": {"$ref": "#/components/schemas/TextPart"}, "minItems": 1} in \
        schemas["ChatMessage"]["properties"]["content"]["anyOf"]


# -- names wherever an id goes -------------------------------------------------------------------------------
def test_every_profile_route_takes_the_name_url_encoded(client):
    profile = create(client, "Calm Sea", steering={"1": 1.0})
    pid, name = profile["id"], "calm%20sea"  # URL-encoded, compared case-insensitively
    base = f"/api/profiles/{name}"
    assert client.get(base, params=fresh(client, profile["position"])).json()["id"] == pid
    updated = client.put(base, json={"steering": {"2": 2.0}})
    assert updated.status_code == 200 and updated.json()["id"] == pid and updated.json()["version"] == 2
    query = fresh(client, updated.json()["position"])
    assert client.get(f"{base}/diff", params={"from": 1, "to": 2}).json()["profile_id"] == pid
    assert [v["version"] for v in client.get(f"{base}/versions", params=query).json()["versions"]] == [1, 2]
    assert client.get(f"{base}/versions/1", params=query).json()["steering"] == {"1": 1.0}
    recorded = client.post(f"{base}/executions", json={"run_id": "by-name"})
    assert recorded.status_code == 201 and recorded.json()["profile_id"] == pid
    query = fresh(client, recorded.json()["position"])
    assert [e["run_id"] for e in client.get(f"{base}/executions", params=query).json()["executions"]] == ["by-name"]
    assert client.get(f"{base}/export", params=query).json()["profile"]["name"] == "Calm Sea"
    reverted = client.post(f"{base}/revert", json={"version": 1})
    assert reverted.status_code == 200 and reverted.json()["steering"] == {"1": 1.0}
    assert client.post(f"{base}/activate").json()["id"] == pid
    client.post("/api/profiles/deactivate")
    deleted = client.delete(base)
    assert deleted.status_code == 200 and deleted.json()["id"] == pid
    restored = client.post(f"{base}/restore")  # a deleted profile is found by the name it had
    assert restored.status_code == 200 and restored.json()["id"] == pid
    assert_error(client.get("/api/profiles/no%20such%20profile"), 404, "profile_not_found")


def test_a_renamed_profile_is_not_found_by_its_old_name(client):
    profile = create(client, "before")
    client.put(f"/api/profiles/{profile['id']}", json={"name": "after"})
    assert_error(client.get("/api/profiles/before"), 404, "profile_not_found")
    renamed = client.put(f"/api/profiles/{profile['id']}", json={"description": "x"}).json()
    assert client.get("/api/profiles/after", params=fresh(client, renamed["position"])).json()["id"] == profile["id"]


def test_the_openapi_document_says_every_profile_id_may_be_a_name(client):
    paths = client.get("/schema/openapi.json").json()["paths"]
    checked = 0
    for path, operations in paths.items():
        if "{profile_id}" not in path:
            continue
        for operation in operations.values():
            (parameter,) = [p for p in operation["parameters"] if p["name"] == "profile_id"]
            assert "its name" in parameter["description"], path
            checked += 1
    assert checked >= 12


# -- the version in force --------------------------------------------------------------------------------------
def test_the_active_view_shows_the_pinned_version_everywhere(client):
    profile = create(client, "pinned", steering={"1": 1.0}, layer=3)
    client.put(f"/api/profiles/{profile['id']}", json={"steering": {"2": 2.0}, "layer": 5})
    activated = client.post(f"/api/profiles/{profile['id']}/activate", json={"version": 1})
    assert activated.status_code == 200, activated.text
    in_force = {"version": 1, "steering": {"1": 1.0}, "layer": 3, "pinned": True, "latest_version": 2}
    assert {key: activated.json()[key] for key in in_force} == in_force
    assert activated.json()["pinned_version"] == 1
    query = fresh(client, activated.json()["position"])
    active = client.get("/api/profiles/active", params=query).json()
    assert {key: active[key] for key in in_force} == in_force
    (listed,) = [row for row in client.get("/api/profiles", params=query).json()["profiles"] if row["is_active"]]
    assert {key: listed[key] for key in in_force} == in_force
    following = client.post(f"/api/profiles/{profile['id']}/activate").json()
    latest = {"version": 2, "steering": {"2": 2.0}, "layer": 5, "pinned": False, "latest_version": 2}
    assert {key: following[key] for key in latest} == latest
    active = client.get("/api/profiles/active", params=fresh(client, following["position"])).json()
    assert {key: active[key] for key in latest} == latest


# -- restore -----------------------------------------------------------------------------------------------------
def test_a_deleted_profile_comes_back_with_its_versions_and_executions(client):
    profile = create(client, "phoenix", steering={"1": 1.0}, tags=["t"])
    pid = profile["id"]
    client.post(f"/api/profiles/{pid}/executions", json={"run_id": "before-death", "seed": 3})
    client.put(f"/api/profiles/{pid}", json={"steering": {"2": 2.0}})
    deleted = client.delete(f"/api/profiles/{pid}").json()
    assert_error(client.get(f"/api/profiles/{pid}", params=fresh(client, deleted["position"])), 404)
    restored = client.post(f"/api/profiles/{pid}/restore", json={"reason": "undo"})
    assert restored.status_code == 200, restored.text
    body = restored.json()
    assert (body["name"], body["version"], body["steering"], body["tags"]) == ("phoenix", 2, {"2": 2.0}, ["t"])
    query = fresh(client, body["position"])
    row = client.get(f"/api/profiles/{pid}", params=query).json()
    assert (row["version"], row["execution_count"], row["is_active"]) == (2, 1, False)
    assert [v["version"] for v in client.get(f"/api/profiles/{pid}/versions", params=query).json()["versions"]] == [1, 2]
    runs = client.get(f"/api/profiles/{pid}/executions", params=query).json()["executions"]
    assert [e["run_id"] for e in runs] == ["before-death"]
    events = client.get("/api/events", params={"profile_id": pid, **query}).json()["events"]
    (restore_event,) = [event for event in events if event["type"] == "Profile.Restored"]
    assert restore_event["reason"] == "undo" and restore_event["data"]["version"] == 2
    assert_error(client.post(f"/api/profiles/{pid}/restore"), 409, "profile_not_deleted")


def test_a_restore_whose_name_is_taken_is_refused_naming_the_holder(client):
    first = create(client, "contested")
    client.delete(f"/api/profiles/{first['id']}")
    holder = create(client, "Contested")
    body = assert_error(client.post(f"/api/profiles/{first['id']}/restore"), 409, "profile_name_taken")
    assert body["profile_id"] == holder["id"] and holder["id"] in body["detail"]
    assert_error(client.get(f"/api/profiles/{first['id']}"), 404)  # nothing half-written
    assert_error(client.post(f"/api/profiles/{uuid.uuid4()}/restore"), 404, "profile_not_found")


# -- strengths ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strength", [500, -200.5, 1e300])
def test_strengths_beyond_the_bound_are_refused(client, strength):
    response = client.post("/api/profiles", json={"name": f"strong {strength}", "steering": {"1": strength}})
    assert assert_error(response, 422, "invalid_value")["field"] == "steering.1"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_strengths_that_are_not_finite_numbers_are_refused(client, literal):
    body = b'{"name": "nan", "steering": {"1": ' + literal + b"}}"
    response = client.post("/api/profiles", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 422)


def test_strengths_at_the_bound_are_accepted_and_updates_are_bounded_too(client):
    profile = create(client, "edge", steering={"1": 200, "2": -200})
    assert profile["steering"] == {"1": 200.0, "2": -200.0}
    assert_error(client.put(f"/api/profiles/{profile['id']}", json={"steering": {"1": 201}}), 422, "invalid_value")


# -- the re-run spec by run id -----------------------------------------------------------------------------------
def test_the_re_run_spec_of_a_run_carries_its_version_seed_entity_count_and_products(client):
    profile = create(client, "cohorts", steering={"4": 0.5}, products=["healthsim"], model_id="m", layer=7)
    pid = profile["id"]
    client.put(f"/api/profiles/{pid}", json={"steering": {"4": 1.0}})
    recorded = client.post(
        f"/api/profiles/{pid}/executions", json={"version": 1, "run_id": "cohort-7", "seed": 42, "entity_count": 1000}
    ).json()
    spec = client.get("/api/runs/cohort-7/spec", params=fresh(client, recorded["position"])).json()
    assert (spec["profile_id"], spec["profile_version"], spec["execution_id"]) == (pid, 1, recorded["id"])
    assert (spec["steering"], spec["model_id"], spec["layer"]) == ({"4": 0.5}, "m", 7)
    assert (spec["seed"], spec["entity_count"], spec["products"]) == (42, 1000, ["healthsim"])
    assert_error(client.get("/api/runs/no-such-run/spec"), 404, "run_not_found")


# -- a header or query parameter that takes one value is given once ------------------------------------------
def send(base_url: str, method: str, path: str, headers: list[tuple[str, str]], body: Any = None) -> tuple[int, Any]:
    """A request over a plain socket, each header line as given (two lines of one name stay two lines)."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest(method, path)
        encoded = b"" if body is None else json.dumps(body).encode()
        for name, value in [*headers, ("Content-Type", "application/json"), ("Content-Length", str(len(encoded)))]:
            connection.putheader(name, value)
        connection.endheaders(encoded)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        connection.close()


def test_two_if_match_lines_are_a_list_and_refused_so_a_stale_one_is_never_skipped(sqlite_url):
    running = start_server(sqlite_url)
    try:
        status, profile = send(running.base_url, "POST", "/api/profiles", [], {"name": "fz", "steering": {"1": 1.0}})
        assert status == 201
        send(running.base_url, "PUT", "/api/profiles/fz", [], {"description": "v2"})
        current, stale = etag(profile, 2), etag(profile, 1)
        for lines in ([current, stale], [stale, current]):
            status, body = send(running.base_url, "PUT", "/api/profiles/fz",
                                [("If-Match", tag) for tag in lines], {"description": "lost?"})
            assert (status, body["error"], body["field"]) == (422, "invalid_request", "If-Match"), body
        status, body = send(running.base_url, "GET", "/api/profiles/fz", [])
        assert (body["version"], body["description"]) == (2, "v2")
        for name in ("Idempotency-Key", "X-Actor", "X-Reason"):
            status, body = send(running.base_url, "POST", "/api/profiles", [(name, "a"), (name, "b")], {"name": "twice"})
            assert (status, body["field"]) == (422, name), body
        status, body = send(running.base_url, "POST", "/v1/chat/completions",
                            [("Idempotency-Key", "a"), ("Idempotency-Key", "b")], {"messages": []})
        assert (status, body["error"]["param"]) == (400, "Idempotency-Key"), body
        assert send(running.base_url, "GET", "/api/profiles/twice", [])[0] == 404
    finally:
        running.stop()


def test_a_query_parameter_that_takes_one_value_given_twice_is_refused_a_list_one_is_not(client):
    create(client, "listed", tags=["a", "b"])
    assert_error(client.get("/api/profiles?limit=1&limit=2"), 422, "invalid_value")["field"] == "limit"
    assert_error(client.get("/api/profiles?sort=name&sort=-name"), 422, "invalid_value")
    assert [p["name"] for p in client.get("/api/profiles?tag=a&tag=b").json()["profiles"]] == ["listed"]


def test_the_openapi_document_lists_what_any_request_may_be_refused_with_and_what_a_chat_stream_sends(client):
    document = client.get("/schema/openapi.json").json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            answers = operation["responses"]
            assert "unknown_host" in answers["400"]["description"], (method, path)
            if method != "get":
                assert "cross_site_request" in answers["403"]["description"], (method, path)
                assert "idempotency_key_in_use" in answers["409"]["description"], (method, path)
            if path.startswith("/api/"):
                assert "422" in answers, (method, path)  # an unknown query parameter, on every operation
    streamed = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert streamed["text/event-stream"]["schema"] == {"$ref": "#/components/schemas/ChatCompletionChunk"}
    chunk = document["components"]["schemas"]["ChatCompletionChunk"]
    assert {"id", "object", "created", "model", "choices"} <= set(chunk["required"])
    assert client.post("/api/profiles", headers={"Origin": "https://elsewhere.example"},
                       json={"name": "x"}).status_code == 403


def test_a_broken_multipart_form_is_an_invalid_request_as_documented(client):
    answer = client.post("/api/profiles/import", content=b"--x\r\n",
                         headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert assert_error(answer, 422, "invalid_request")
    assert "422" in client.get("/schema/openapi.json").json()["paths"]["/api/profiles/import"]["post"]["responses"]


def test_options_and_a_405_name_every_method_a_path_takes(sqlite_url):
    running = start_server(sqlite_url)  # as served: HEAD answered wherever GET is
    try:
        with httpx.Client(base_url=running.base_url) as client:
            for path, methods in (("/api/profiles", "GET, HEAD, OPTIONS, POST"),
                                  ("/api/profiles/calm", "DELETE, GET, HEAD, OPTIONS, PUT"),
                                  ("/v1/chat/completions", "OPTIONS, POST")):
                answer = client.options(path)
                assert (answer.status_code, answer.headers["Allow"]) == (204, methods), path
                refused = client.patch(path)
                assert (refused.status_code, refused.headers["Allow"]) == (405, methods), path
                if "HEAD" in methods:
                    assert client.head(path).status_code in (200, 404), path
    finally:
        running.stop()


def test_every_refused_query_argument_is_named_in_field(client):
    profile = create(client, "fielded")
    for params, field in (({"search": " ".join(["w"] * 33)}, "search"), ({"cursor": "x"}, "cursor"),
                          ({"limit": "0"}, "limit")):
        assert assert_error(client.get("/api/profiles", params=params), 422).get("field") == field, params
    assert assert_error(client.get("/api/events", params={"cursor": "x"}), 422, "invalid_cursor")["field"] == "cursor"
    versions = f"/api/profiles/{profile['id']}/versions"
    assert assert_error(client.get(versions, params={"cursor": "x"}), 422, "invalid_cursor")["field"] == "cursor"


def test_a_path_parameter_of_the_wrong_type_is_named_in_field_in_the_apis_words(client):
    versions = f"/api/profiles/{create(client, 'typed')['id']}/versions"
    for method, path, field, kind in (("GET", "/api/executions/not-a-uuid", "execution_id", "a UUID"),
                                      ("GET", "/api/executions/{1}/spec", "execution_id", "a UUID"),
                                      ("POST", "/api/executions/nope/replay", "execution_id", "a UUID"),
                                      ("GET", "/api/executions/nope/", "execution_id", "a UUID"),
                                      ("DELETE", "/api/tokens/x", "token_id", "a UUID"),
                                      ("GET", f"{versions}/abc", "version", "an integer")):
        refused = assert_error(client.request(method, path), 422, "invalid_request")
        assert refused["field"] == field and refused["detail"].startswith(f"{field} must be {kind} (got "), refused
        assert "literal" not in refused["detail"] and "hexadecimal" not in refused["detail"]  # before: Python's


# -- what a plain client is told -----------------------------------------------------------------------------------
def test_what_a_command_creates_is_read_where_its_location_says(client):
    made = client.post("/api/profiles", json={"name": "located", "steering": {"1": 0.5}})
    assert made.status_code == 201 and made.headers["Location"] == f"/api/profiles/{made.json()['id']}", made.headers
    assert client.get(made.headers["Location"]).json()["name"] == "located"
    document = client.get(f"/api/profiles/{made.json()['id']}/export").json()
    imported = client.post("/api/profiles/import", params={"rename": "true"}, json=document)
    assert imported.status_code == 201, imported.text
    assert client.get(imported.headers["Location"]).json()["id"] == imported.json()["id"]
    run = client.post(f"/api/profiles/{made.json()['id']}/executions", json={"seed": 7, "run_id": "r-1"})
    assert run.status_code == 201, run.text
    assert client.get(run.headers["Location"]).json()["run_id"] == "r-1"
    replayed = client.post("/api/profiles", json={"name": "again"}, headers={"Idempotency-Key": "k-located"})
    again = client.post("/api/profiles", json={"name": "again"}, headers={"Idempotency-Key": "k-located"})
    assert again.headers["Location"] == replayed.headers["Location"] == f"/api/profiles/{replayed.json()['id']}"
    spec = client.get("/schema/openapi.json").json()["paths"]
    for path in ("/api/profiles", "/api/profiles/import", "/api/profiles/{profile_id}/executions"):
        assert "Location" in spec[path]["post"]["responses"]["201"]["headers"], path


def test_if_none_match_on_a_command_is_refused_not_ignored(client):
    made = create(client, "unmatched")
    for method, path, body in (("PUT", f"/api/profiles/{made['id']}", {"description": "z"}),
                               ("POST", "/api/profiles", {"name": "unmatched-2"})):
        refused = client.request(method, path, json=body, headers={"If-None-Match": "*"})
        assert assert_error(refused, 422)["field"] == "If-None-Match", method  # before: 200 and 201, unconditionally
    read = client.get(f"/api/profiles/{made['id']}", headers={"If-None-Match": "*"})  # a query: answered as ever
    assert read.status_code == 200 and read.json()["version"] == 1
    assert client.get("/api/profiles/by-name/unmatched-2").status_code == 404


def test_a_change_based_on_the_pinned_active_profiles_version_is_told_the_etag_of_the_latest(client):
    made = create(client, "pinned-read", steering={"1": 1.0})
    client.put(f"/api/profiles/{made['id']}", json={"steering": {"2": 2.0}})
    client.post(f"/api/profiles/{made['id']}/activate", json={"version": 1})
    read = client.get(f"/api/profiles/{made['id']}")
    assert read.json()["version"] == 1
    stale = assert_error(client.put(f"/api/profiles/{made['id']}", json={"description": "d"},
                                    headers={"If-Match": read.headers["ETag"]}), 412, "stale_version")
    assert "has changed since" not in stale["detail"] and stale["current_version"] == 2, stale  # nothing had
    forged = read.headers["ETag"].replace('"1.', '"9.', 1)  # a version never read: said as such, not as pinned
    assert "has changed since version 9" in assert_error(client.put(
        f"/api/profiles/{made['id']}", json={"description": "d"}, headers={"If-Match": forged}), 412)["detail"]
    latest = stale["detail"].split("If-Match: ")[1]
    changed = client.put(f"/api/profiles/{made['id']}", json={"description": "d"}, headers={"If-Match": latest})
    assert changed.status_code == 200 and changed.json()["latest_version"] == 3, changed.text


def test_an_audit_window_that_ends_before_it_starts_is_refused(client):
    window = {"since": "2030-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"}
    assert assert_error(client.get("/api/events", params=window), 422)["field"] == "since"  # before: an empty page


def test_the_openapi_document_names_the_context_fields_errors_carry(client):
    documented = client.get("/schema/openapi.json").json()["components"]["schemas"]["ErrorBody"]["properties"]
    missing = assert_error(client.get("/api/profiles/by-name/nobody"), 404)
    assert set(missing) <= set(documented), missing
    for field in ("name", "version", "run_id", "execution_id", "job_id", "log_position", "required_role"):
        assert field in documented, field


def test_the_openapi_document_describes_the_exchange_document_an_export_gives_and_an_import_takes(client):
    spec = client.get("/schema/openapi.json").json()
    answer = spec["paths"]["/api/profiles/{profile_id}/export"]["get"]["responses"]["200"]["content"]
    assert answer["application/json"]["schema"] == {"$ref": "#/components/schemas/ExchangeDocument"}  # was any object
    taken = spec["paths"]["/api/profiles/import"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/ExchangeDocument"} in taken["oneOf"]
    schemas = spec["components"]["schemas"]
    held = schemas[schemas["ExchangeDocument"]["properties"]["profile"]["$ref"].rsplit("/", 1)[1]]["properties"]
    made = create(client, "exchanged", steering={"3": 0.25}, tags=["t"], metadata={"k": [1, 2.5]})
    exported = client.get(f"/api/profiles/{made['id']}/export").json()
    assert set(exported["profile"]) == set(held) and exported["profile"]["metadata"] == {"k": [1, 2.5]}

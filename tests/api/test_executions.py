"""Executions: recorded under a profile, read by id, their spec, and the profile a run used."""

from __future__ import annotations

import uuid

from tests.api.conftest import assert_error, create, fresh


def test_record_and_read_executions(client):
    profile = create(client, "runner", steering={"4": 0.5}, model_id="m")
    url = f"/api/profiles/{profile['id']}/executions"
    response = client.post(
        url,
        json={"run_id": "cohort-1", "seed": 42, "entity_count": 1000, "duration_ms": 1500, "metadata": {"k": 1}},
        headers={"X-Actor": "gen"},
    )
    assert response.status_code == 201, response.text
    recorded = response.json()
    assert recorded["profile_version"] == 1 and recorded["status"] == "success" and recorded["seed"] == 42
    assert recorded["actor"] == "gen" and recorded["kind"] == "external"
    assert response.headers["X-Ledger-Position"] == str(recorded["position"])
    query = fresh(client, recorded["position"])
    got = client.get(f"/api/executions/{recorded['id']}", params=query).json()
    assert got["run_id"] == "cohort-1" and got["entity_count"] == 1000 and got["metadata"] == {"k": 1}
    spec = client.get(f"/api/executions/{recorded['id']}/spec").json()
    assert spec["steering"] == {"4": 0.5} and spec["seed"] == 42 and spec["model_id"] == "m"
    client.put(f"/api/profiles/{profile['id']}", json={"steering": {"4": 1.0}})
    failed = client.post(url, json={"version": 1, "status": "failed", "error_message": "boom", "run_id": "cohort-2"})
    assert failed.status_code == 201 and failed.json()["profile_version"] == 1
    listing = client.get(url, params=fresh(client, failed.json()["position"])).json()
    assert [e["run_id"] for e in listing["executions"]] == ["cohort-2", "cohort-1"]
    page = client.get(url, params={"limit": 1}).json()
    assert len(page["executions"]) == 1 and page["next_cursor"]
    assert client.get(url, params={"limit": 1, "cursor": page["next_cursor"]}).json()["executions"][0]["run_id"] == "cohort-1"
    shown = client.get(f"/api/profiles/{profile['id']}").json()
    assert shown["execution_count"] == 2 and shown["last_executed_at"] is not None
    run = client.get("/api/runs/cohort-1/profile").json()
    assert run["profile_id"] == profile["id"] and run["profile_version"] == 1
    assert run["version"]["steering"] == {"4": 0.5} and run["profile"]["steering"] == {"4": 1.0}


def test_execution_errors(client):
    profile = create(client, "e")
    url = f"/api/profiles/{profile['id']}/executions"
    assert_error(client.post(url, json={"status": "exploded"}), 422, "invalid_request")
    assert_error(client.post(url, json={"version": 3}), 404, "profile_version_not_found")
    assert_error(client.post(url, json={"entity_count": -1}), 422, "invalid_value")
    assert_error(client.post(url, json={"seed": "42"}), 422, "invalid_request")
    assert_error(client.post(url, json={"seed": 1.5}), 422, "invalid_request")
    assert_error(client.post(url, json={"surprise": True}), 422, "invalid_request")
    assert_error(client.post(f"/api/profiles/{uuid.uuid4()}/executions", json={}), 404, "profile_not_found")
    assert_error(client.get(f"/api/profiles/{uuid.uuid4()}/executions"), 404, "profile_not_found")
    assert_error(client.get(f"/api/executions/{uuid.uuid4()}"), 404, "execution_not_found")
    assert_error(client.get(f"/api/executions/{uuid.uuid4()}/spec"), 404, "execution_not_found")
    assert_error(client.get("/api/executions/xyz"), 422, "invalid_request")
    assert_error(client.get("/api/runs/nothing-here/profile"), 404, "run_not_found")
    assert_error(client.get(url, params={"cursor": "bogus"}), 422, "invalid_cursor")
    for unreachable in ("a/b", ".", ".."):  # a run is looked up by its id in URL paths
        assert assert_error(client.post(url, json={"run_id": unreachable}), 422)["field"] == "run_id"
    for unreadable in ("tab\tx", "\u202egnp"):  # read in listings: shown otherwise than stored
        assert assert_error(client.post(url, json={"run_id": unreadable}), 422)["field"] == "run_id"


def test_a_run_id_is_found_as_it_was_given_around_spaces_included(client):
    url = f"/api/profiles/{create(client, 'spaced')['id']}/executions"
    recorded = client.post(url, json={"run_id": " cohort 9 "}).json()
    assert recorded["run_id"] == "cohort 9"
    for path in ("/api/runs/cohort%209/profile", "/api/runs/%20cohort%209%20/profile", "/api/runs/%20cohort%209%20/spec"):
        found = client.get(path, params=fresh(client, recorded["position"]))
        assert found.status_code == 200 and found.json()["run_id"] == "cohort 9", path  # as recorded, not as asked


def test_a_deleted_profiles_executions_read_like_the_rest_of_its_history_whether_it_had_any_or_not(client):
    ran, idle = create(client, "ran then went"), create(client, "never ran")
    client.post(f"/api/profiles/{ran['id']}/executions", json={"run_id": "last-run"})
    for profile in (ran, idle):
        assert client.delete(f"/api/profiles/{profile['id']}").status_code == 200
    listed = {profile["id"]: client.get(f"/api/profiles/{profile['id']}/executions") for profile in (ran, idle)}
    assert listed[ran["id"]].status_code == 200 and len(listed[ran["id"]].json()["executions"]) == 1
    assert listed[idle["id"]].status_code == 200 and listed[idle["id"]].json()["executions"] == []
    assert client.get(f"/api/profiles/{idle['id']}/versions").status_code == 200
    assert_error(client.get(f"/api/profiles/{uuid.uuid4()}/executions"), 404, "profile_not_found")


def test_every_execution_of_a_run_id_is_listed_newest_first_and_its_spec_is_the_latests(client):
    calm, other = create(client, "calm", steering={"1": 1.0}), create(client, "other", steering={"2": 1.0})
    for profile, seed in ((calm, 42), (calm, 43), (other, 5)):
        assert client.post(f"/api/profiles/{profile['id']}/executions",
                           json={"run_id": "cohort-7", "seed": seed}).status_code == 201
    first = client.get("/api/runs/cohort-7/executions", params={"limit": 2}).json()
    rest = client.get("/api/runs/cohort-7/executions", params={"cursor": first["next_cursor"]}).json()
    listed = first["executions"] + rest["executions"]
    assert [(e["profile_id"], e["seed"]) for e in listed] == [(other["id"], 5), (calm["id"], 43), (calm["id"], 42)]
    assert client.get("/api/runs/cohort-7/spec").json()["seed"] == 5
    assert_error(client.get("/api/runs/nobody/executions"), 404, "run_not_found")
    for route in ("executions", "spec", "profile"):  # an id longer than any run's: not echoed whole
        refused = assert_error(client.get(f"/api/runs/{'x' * 5000}/{route}"), 404, "run_not_found")
        assert len(refused["detail"]) < 300 and "(5000 characters)" in refused["detail"], refused["detail"][:400]


def test_a_runs_spec_says_when_the_attempt_it_is_taken_from_failed(client):
    calm = create(client, "calm", steering={"1": 1.0})
    client.post(f"/api/profiles/{calm['id']}/executions", json={"run_id": "span", "seed": 1})
    ok = client.get("/api/runs/span/spec").json()
    assert (ok["seed"], ok["status"], ok["error_message"]) == (1, "success", None)
    client.post(f"/api/profiles/{calm['id']}/executions",
                json={"run_id": "span", "seed": 2, "status": "failed", "error_message": "boom"})
    failed = client.get("/api/runs/span/spec").json()
    assert (failed["seed"], failed["status"], failed["error_message"]) == (2, "failed", "boom")  # were unsaid


def test_a_query_parameter_a_route_does_not_take_is_refused_naming_it(client):
    create(client, "calm", steering={"1": 1.0})
    for path, wrong in (("/api/profiles/calm", "asof"), ("/api/profiles/calm", "version"),
                        ("/api/profiles/calm/diff", "from_version"), ("/api/events", "profile")):
        refused = assert_error(client.get(path, params={wrong: "1"}), 422)
        assert refused["field"] == wrong and "takes" in refused["detail"], refused
    assert client.get("/api/profiles/calm", params={"as_of": "2999-01-01T00:00:00Z"}).status_code == 200


def test_a_profile_as_it_stood_counts_the_executions_recorded_by_then(client):
    import time

    profile = create(client, "counted", steering={"1": 1.0})
    url = f"/api/profiles/{profile['id']}"
    before = client.get(url).json()["created_at"]
    first = client.post(f"{url}/executions", json={"seed": 1}).json()
    time.sleep(0.01)
    client.post(f"{url}/executions", json={"seed": 2})
    assert client.get(url).json()["execution_count"] == 2
    at_first = client.get(url, params={"as_of": first["executed_at"]}).json()
    assert (at_first["execution_count"], at_first["last_executed_at"]) == (1, first["executed_at"]), at_first
    assert client.get(url, params={"as_of": before}).json()["execution_count"] == 0
    assert client.get(url, params={"as_of": "2999-01-01T00:00:00Z"}).json()["execution_count"] == 2


def test_deleting_a_profiles_executions_does_not_rewrite_how_it_stood_before(client):
    profile = create(client, "rewritten", steering={"1": 1.0})
    url = f"/api/profiles/{profile['id']}"
    client.post(f"{url}/executions", json={"seed": 1})
    last = client.post(f"{url}/executions", json={"seed": 2}).json()
    assert client.post(f"{url}/executions", json={"seed": 3}).status_code == 201
    then = client.get(url).json()["last_executed_at"]
    assert client.delete(url, params={"delete_executions": "true"}).status_code == 200
    restored = client.post(f"{url}/restore").json()
    assert restored["execution_count"] == 0  # deleted with it, and not brought back
    at_last = client.get(url, params={"as_of": last["executed_at"]}).json()
    assert (at_last["execution_count"], at_last["last_executed_at"]) == (2, last["executed_at"]), at_last
    assert client.get(url, params={"as_of": then}).json()["execution_count"] == 3
    assert client.get(url, params={"as_of": "2999-01-01T00:00:00Z"}).json()["execution_count"] == 0  # as now


def test_a_page_of_executions_ends_before_a_mebibyte_of_their_records_and_the_next_goes_on(client):
    profile = create(client, "busy")
    notes = "n" * 50_000  # with an error message of 10,000 characters, 60 KB a run: 18 pass a mebibyte
    for number in range(40):
        recorded = client.post(f"/api/profiles/{profile['id']}/executions", json={
            "run_id": "heavy", "status": "failed", "error_message": "e" * 10_000, "metadata": {"notes": notes,
                                                                                              "number": number}})
        assert recorded.status_code == 201, recorded.text
    for url in (f"/api/profiles/{profile['id']}/executions", "/api/runs/heavy/executions"):
        numbers, sizes, cursor = [], [], None
        while True:
            page = client.get(url, params={"cursor": cursor} if cursor else {})
            assert len(page.content) < 1_200_000, url  # before: one page of all forty, 2.4 MB
            sizes.append(len(page.json()["executions"]))
            numbers += [execution["metadata"]["number"] for execution in page.json()["executions"]]
            if (cursor := page.json()["next_cursor"]) is None:
                break
        assert sizes == [17, 17, 6] and numbers == list(range(39, -1, -1)), url


def test_an_external_run_is_refused_a_replay_as_never_replayable_even_where_no_model_is_loaded(client):
    made = create(client, "cohort")
    run = client.post(f"/api/profiles/{made['id']}/executions", json={"run_id": "cohort-1", "seed": 1}).json()
    refused = assert_error(client.post(f"/api/executions/{run['id']}/replay"), 422)  # was 503 model_not_loaded
    assert "only generations can be replayed" in refused["detail"], refused

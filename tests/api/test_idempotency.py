"""``Idempotency-Key`` (issue 10, Low: a write that committed was answered 503 during a database stop, and its
retry duplicated it): a retry with the same key returns the first answer and appends nothing, on one server or on
another server of the same PostgreSQL; the same key for a different request is refused."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from litestar.testing import TestClient

from ledger.api import idempotency as idempotency_api
from ledger.idempotency import Answers
from tests.api.conftest import assert_error, create, make_client


def head(client: TestClient) -> int:
    return int(client.app.state.runtime.ledger.recorder.max_notification_id() or 0)


def keyed(key: str, **headers: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **headers}


def test_a_retried_create_returns_the_first_answer_and_appends_nothing(client):
    body = {"name": "calm", "steering": {"3": 0.5}}
    first = client.post("/api/profiles", json=body, headers=keyed("create-calm-1"))
    assert first.status_code == 201
    position = head(client)
    for _ in range(3):
        again = client.post("/api/profiles", json=body, headers=keyed("create-calm-1"))
        assert again.status_code == 201 and again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["X-Ledger-Position"] == first.headers["X-Ledger-Position"]
        assert again.headers["ETag"] == first.headers["ETag"]
    assert head(client) == position
    listed = client.get("/api/profiles", params={"min_position": position}).json()
    assert [p["name"] for p in listed["profiles"]] == ["calm"]


def test_the_same_key_for_a_different_request_is_refused(client):
    client.post("/api/profiles", json={"name": "one"}, headers=keyed("k"))
    position = head(client)
    assert_error(client.post("/api/profiles", json={"name": "two"}, headers=keyed("k")), 422, "idempotency_key_reused")
    profile = client.get("/api/profiles", params={"min_position": position}).json()["profiles"][0]
    answer = client.put(f"/api/profiles/{profile['id']}", json={"description": "x"}, headers=keyed("k"))
    assert_error(answer, 422, "idempotency_key_reused")
    assert head(client) == position



def test_a_retry_that_changes_its_precondition_its_reason_or_its_preference_is_another_request(client):
    made = create(client, "calm")
    url = f"/api/profiles/{made['id']}"
    stale = client.put(url, json={"layer": 3}, headers={**keyed("fix"), "If-Match": '"9"'})
    assert_error(stale, 412, "stale_version")
    fixed = client.put(url, json={"layer": 3}, headers={**keyed("fix"), "If-Match": f'"{made["version"]}"'})
    assert_error(fixed, 422, "idempotency_key_reused")  # was the stale 412 replayed, nothing run
    assert client.put(url, json={"layer": 3}, headers={**keyed("fix"), "If-Match": '"9"'}).headers[
        "Idempotent-Replayed"] == "true"  # the same request again: its answer
    first = client.post("/api/profiles", json={"name": "why"}, headers={**keyed("reason"), "X-Reason": "first"})
    assert first.status_code == 201
    for changed in ({"X-Reason": "second"}, {"X-Reason": "first", "Prefer": "respond-async"}, {}):
        assert_error(client.post("/api/profiles", json={"name": "why"}, headers={**keyed("reason"), **changed}),
                     422, "idempotency_key_reused")  # was the first answer, the first reason kept unsaid

def test_keys_belong_to_their_actor(client):
    first = client.post("/api/profiles", json={"name": "a"}, headers=keyed("shared", **{"X-Actor": "alice"}))
    second = client.post("/api/profiles", json={"name": "b"}, headers=keyed("shared", **{"X-Actor": "bob"}))
    assert first.status_code == second.status_code == 201 and first.json()["id"] != second.json()["id"]


def test_every_kind_of_command_is_idempotent(client):
    profile = create(client, "target")
    commands: list[tuple[str, str, dict | None]] = [
        ("PUT", f"/api/profiles/{profile['id']}", {"steering": {"3": 2.0}}),
        ("POST", f"/api/profiles/{profile['id']}/activate", None),
        ("POST", "/api/profiles/deactivate", None),
        ("POST", f"/api/profiles/{profile['id']}/executions", {"seed": 3}),
        ("DELETE", f"/api/profiles/{profile['id']}", None),
    ]
    for number, (method, url, body) in enumerate(commands):
        first = client.request(method, url, json=body, headers=keyed(f"command-{number}"))
        assert first.status_code < 300, (method, url, first.text)
        position = head(client)
        again = client.request(method, url, json=body, headers=keyed(f"command-{number}"))
        assert (again.status_code, again.content) == (first.status_code, first.content), (method, url)
        assert head(client) == position


def test_a_retry_is_the_same_request_however_its_json_is_spaced_or_its_keys_ordered(client):
    key, json_type = "create-spaced", {"Content-Type": "application/json"}
    headers = keyed(key) | json_type
    first = client.post("/api/profiles", content=b'{"name":"spaced","steering":{"3":0.5}}', headers=headers)
    for written in (b'{ "steering": { "3": 0.5 }, "name": "spaced" }', b'{"name": "spaced",\n "steering": {"3": 0.5}}'):
        again = client.post("/api/profiles", content=written, headers=headers)  # as another serialiser writes it
        assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true", again.text
        assert again.json() == first.json()
    other = client.post("/api/profiles", content=b'{"name":"spaced","steering":{"3":0.6}}', headers=headers)
    assert_error(other, 422, "idempotency_key_reused")


def test_a_retried_upload_is_the_same_request_whatever_boundary_the_client_draws(client):
    document = json.dumps({"name": "uploaded", "steering": {"1": 0.5}}).encode()
    key = {"Idempotency-Key": "upload-1"}
    first = client.post("/api/profiles/import", files={"file": ("p.json", document)}, headers=key)
    again = client.post("/api/profiles/import", files={"file": ("p.json", document)}, headers=key)  # a new boundary
    assert first.status_code == again.status_code == 201 and again.json() == first.json(), again.text
    other = client.post("/api/profiles/import", files={"file": ("p.json", document.replace(b"0.5", b"0.6"))},
                        headers=key)
    assert_error(other, 422, "idempotency_key_reused")


def test_a_malformed_key_is_refused(client):
    for key in ("x" * 256, "caf\u00e9".encode("latin-1"), "tab\there"):
        response = client.post("/api/profiles", json={"name": "n"}, headers={"Idempotency-Key": key})
        assert_error(response, 422)


@pytest.mark.postgres
def test_a_retry_on_another_server_of_the_same_database_returns_the_first_answer(postgres_url):
    with make_client(postgres_url) as one, make_client(postgres_url) as two:
        body = {"name": "shared", "steering": {"1": 1.0}}
        first = one.post("/api/profiles", json=body, headers=keyed("across"))
        position = head(one)
        again = two.post("/api/profiles", json=body, headers=keyed("across"))
        assert again.status_code == 201 and again.json() == first.json()
        assert head(two) == position


@pytest.mark.postgres
def test_a_committed_command_whose_answer_was_lost_is_not_run_again(postgres_url, monkeypatch):
    """As when the database stopped after the commit: the claim is in the log, the kept answer is not."""
    with make_client(postgres_url) as client:
        body = {"name": "lost"}
        assert client.post("/api/profiles", json=body, headers=keyed("lost-answer")).status_code == 201
        position = head(client)
        ledger = client.app.state.runtime.ledger
        with ledger.recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"DELETE FROM {Answers.TABLE}")
        answer = client.post("/api/profiles", json=body, headers=keyed("lost-answer"))
        assert_error(answer, 409, "idempotency_key_in_use")
        assert answer.headers["Retry-After"] == "1"  # its answer may still be on its way: retry in a moment
        monkeypatch.setattr(idempotency_api, "STILL_RUNNING", timedelta(0))  # past the time an answer takes
        later = client.post("/api/profiles", json=body, headers=keyed("lost-answer"))
        assert_error(later, 409, "idempotency_key_in_use")
        assert "Retry-After" not in later.headers  # retrying would not help
        assert head(client) == position


@pytest.mark.postgres
def test_concurrent_requests_with_one_key_record_one_command(postgres_url):
    with make_client(postgres_url) as client:
        answers: list[int] = []
        created_ids: set[str] = set()
        start = threading.Barrier(8)

        def send() -> None:
            start.wait()
            response = client.post("/api/profiles", json={"name": "race"}, headers=keyed("race-key"))
            answers.append(response.status_code)
            if response.status_code == 201:
                created_ids.add(response.json()["id"])

        threads = [threading.Thread(target=send) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # the losers get the winner's answer (or, while it is not kept yet, 409 idempotency_key_in_use)
        assert set(answers) <= {201, 409} and answers.count(201) >= 1, answers
        assert len(created_ids) == 1
        created = [e for e in client.get("/api/events", params={"min_position": head(client)}).json()["events"]
                   if e["type"] == "Profile.Created"]
        assert len(created) == 1


@pytest.mark.postgres
def test_a_new_tokens_secret_is_never_kept_for_a_replay(postgres_url):
    with make_client(postgres_url) as client:
        first = client.post("/api/tokens", json={"name": "ci", "role": "reader"}, headers=keyed("token-1"))
        assert first.status_code == 201
        again = client.post("/api/tokens", json={"name": "ci", "role": "reader"}, headers=keyed("token-1"))
        assert_error(again, 409, "idempotency_key_in_use")
        assert len(client.get("/api/tokens").json()["tokens"]) == 1
        with client.app.state.runtime.ledger.recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT body FROM {Answers.TABLE}")
            assert all(first.json()["token"].encode() not in bytes(row["body"]) for row in cursor.fetchall())


def test_a_refused_keyed_request_records_nothing_and_leaves_the_key_free(client):
    assert_error(client.post("/api/profiles", json={"name": ""}, headers=keyed("retry-me")), 422)
    other = client.post("/api/profiles", json={"name": "unkeyed"})  # the next request carries no key
    assert other.status_code == 201 and "Idempotent-Replayed" not in other.headers
    fixed = client.post("/api/profiles", json={"name": "fixed"}, headers=keyed("retry-me"))
    assert fixed.status_code == 201 and fixed.json()["name"] == "fixed"


def test_a_retry_of_a_command_that_changed_nothing_gets_that_answer_not_a_run_against_what_changed_since(client):
    profile = create(client, "steady", description="a")
    url = f"/api/profiles/{profile['id']}"
    off = client.post("/api/profiles/deactivate", headers=keyed("off-1"))  # nothing is active: nothing to change
    assert off.status_code == 200 and off.json()["deactivated"] is False
    same = client.put(url, json={"description": "a"}, headers=keyed("edit-1"))
    assert same.status_code == 200 and same.json()["changed"] is False
    assert client.post(f"{url}/activate").status_code == 200  # meanwhile, other clients change things
    assert client.put(url, json={"description": "b"}).status_code == 200

    again = client.post("/api/profiles/deactivate", headers=keyed("off-1"))
    assert again.json() == off.json() and again.headers["Idempotent-Replayed"] == "true"
    retried = client.put(url, json={"description": "a"}, headers=keyed("edit-1"))
    assert retried.json() == same.json() and retried.headers["Idempotent-Replayed"] == "true"
    assert client.get("/api/profiles/active").json()["id"] == profile["id"]
    assert client.get(url).json()["description"] == "b"


def test_a_retry_of_a_command_refused_for_the_state_it_found_gets_the_refusal_again(client):
    holder = create(client, "taken")
    refused = client.post("/api/profiles", json={"name": "taken"}, headers=keyed("create-taken"))
    assert_error(refused, 409, "profile_name_taken")
    assert client.delete(f"/api/profiles/{holder['id']}").status_code == 200

    again = client.post("/api/profiles", json={"name": "taken"}, headers=keyed("create-taken"))
    assert again.status_code == 409 and again.json() == refused.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert client.post("/api/profiles", json={"name": "taken"}, headers=keyed("create-taken-2")).status_code == 201


def test_concurrent_twins_of_one_keyed_update_all_get_the_answer_of_the_one_that_ran(postgres_url):
    with make_client(postgres_url) as client:
        url = f"/api/profiles/{create(client, 'twins')['id']}"
        for attempt in range(5):
            answers: list[tuple[int, dict]] = []
            start = threading.Barrier(8)

            def send() -> None:
                start.wait()
                response = client.put(url, json={"description": f"d{attempt}"}, headers=keyed(f"twin-{attempt}"))
                answers.append((response.status_code, response.json()))

            threads = [threading.Thread(target=send) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            changed = [body for status, body in answers if status == 200]
            assert all(status in (200, 409) for status, _ in answers), answers
            assert changed and all(body == changed[0] and body["changed"] is True for body in changed), answers


@pytest.mark.postgres
def test_a_kept_answer_is_replayed_however_few_digits_the_database_prints_its_time_with(postgres_url):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(f'ALTER DATABASE "{name}" SET extra_float_digits = 0')  # 15 significant digits
    with make_client(postgres_url) as client:
        first = client.post("/api/profiles", json={"name": "digits"}, headers=keyed("digits"))
        again = client.post("/api/profiles", json={"name": "digits"}, headers=keyed("digits"))
        assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true", again.text
        assert again.json() == first.json()

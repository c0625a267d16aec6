"""``GET /api/ledger/verify``: the tamper-evident chain, checked over HTTP."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.api.conftest import assert_error, create
from tests.application.test_tamper_evidence import tamper
from tests.faults.test_database_owner import Owner
from ledger.tokens import TokenService

pytestmark = pytest.mark.postgres


def test_an_untouched_log_verifies(pg_client):
    made = create(pg_client, "p")
    report = pg_client.get("/api/ledger/verify").json()
    assert report["ok"] is True and report["problem"] is None and report["position"] is None
    assert report["checked"] == report["head_position"] == made["position"]
    assert isinstance(report["head_link"], str) and len(report["head_link"]) == 64


def test_a_changed_byte_is_reported_with_its_position(pg_client, postgres_url):
    profile = create(pg_client, "p")
    for strength in (2.0, 3.0):
        pg_client.put(f"/api/profiles/{profile['id']}", json={"steering": {"1": strength}})
    tamper(
        postgres_url,
        "UPDATE EVENTS SET state = overlay(state placing '\\x5a'::bytea from 3 for 1) WHERE notification_id = 3",
    )
    report = pg_client.get("/api/ledger/verify").json()
    assert report["ok"] is False
    assert report["problem"] == "altered" and report["position"] == 3 and report["detail"]


def test_verify_needs_a_token_when_auth_is_on(client_factory):
    with client_factory(auth=True) as client:
        assert_error(client.get("/api/ledger/verify"), 401, "unauthenticated")
        _, token = TokenService(client.app.state.runtime.ledger).issue("auditor", "reader")
        response = client.get("/api/ledger/verify", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and response.json()["ok"] is True


def test_a_second_verify_walks_only_what_is_new_and_full_walks_everything(pg_client):
    first = create(pg_client, "p")
    report = pg_client.get("/api/ledger/verify").json()
    assert report["ok"] is True and report["checked"] == first["position"]
    second = create(pg_client, "q")
    report = pg_client.get("/api/ledger/verify").json()
    assert report["ok"] is True and report["since"] == first["position"]
    assert report["checked"] == second["position"] - first["position"]
    assert report["head_position"] == second["position"]
    full = pg_client.get("/api/ledger/verify", params={"full": "true"}).json()
    assert full["ok"] is True and full["since"] is None and full["checked"] == second["position"]
    assert full["head_link"] == report["head_link"]


def test_an_incremental_verify_reports_a_row_forged_after_the_last_one(pg_client, postgres_url):
    create(pg_client, "p")
    verified = pg_client.get("/api/ledger/verify").json()
    owner = Owner(postgres_url)
    owner.run(f"INSERT INTO {owner.events} (originator_id, originator_version, topic, state) "
              f"SELECT gen_random_uuid(), 1, topic, state FROM {owner.events} ORDER BY notification_id LIMIT 1",
              triggers=True)  # a copy of a genuine row under another id; the chain trigger links it
    (forged,) = owner.run(f"SELECT max(notification_id) FROM {owner.events}")[0]
    report = pg_client.get("/api/ledger/verify").json()
    assert (report["ok"], report["problem"], report["position"]) == (False, "forged", forged)
    assert report["since"] == verified["head_position"]


def test_an_incremental_verify_reports_a_chain_recomputed_under_the_verified_head(pg_client, postgres_url):
    profile = create(pg_client, "p")
    pg_client.put(f"/api/profiles/{profile['id']}", json={"steering": {"1": 0.75}})
    verified = pg_client.get("/api/ledger/verify").json()
    owner = Owner(postgres_url)
    owner.run(f"DELETE FROM {owner.events} WHERE notification_id = 1")
    owner.rechain()
    report = pg_client.get("/api/ledger/verify").json()
    assert (report["ok"], report["problem"], report["position"]) == (False, "diverged", verified["head_position"])


def test_a_cut_tail_keeps_failing_every_later_walk_incremental_or_full(pg_client, postgres_url):
    profile = create(pg_client, "p")
    pg_client.put(f"/api/profiles/{profile['id']}", json={"steering": {"1": 0.75}})
    head = pg_client.get("/api/ledger/verify").json()["head_position"]
    owner = Owner(postgres_url)
    owner.run(f"DELETE FROM {owner.events} WHERE notification_id = {head}")  # the owner cuts the tail
    owner.run(f"DELETE FROM {owner.chain} WHERE notification_id = {head}")
    for walk in ({}, {}, {"full": "true"}, {}):
        report = pg_client.get("/api/ledger/verify", params=walk).json()
        assert (report["ok"], report["position"]) == (False, head), (walk, report)
        assert report["problem"] in ("removed", "truncated")


def test_a_full_verify_while_another_walk_runs_is_answered_429_with_retry_after(pg_client):
    create(pg_client, "p")
    verifier = pg_client.app.state.runtime.ledger.log_verifier
    started, release = threading.Event(), threading.Event()
    walk = verifier.recorder.verify_chain

    def slow_walk(*args, **kwargs):  # a full walk over a long log: it takes a while
        if args[0].start is not None:  # the server's own walks of what is new: as quick as ever
            return walk(*args, **kwargs)
        started.set()
        release.wait(30)
        return walk(*args, **kwargs)

    verifier.recorder.verify_chain = slow_walk
    try:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(pg_client.get, "/api/ledger/verify", params={"full": "true"})
            assert started.wait(30)
            busy = pg_client.get("/api/ledger/verify", params={"full": "true"})
            body = assert_error(busy, 429, "too_many_requests")
            assert busy.headers["Retry-After"] == "2" and "running" in body["detail"]
            waiting = pool.submit(pg_client.get, "/api/ledger/verify")  # incremental: waits its turn
            release.set()
            assert running.result(30).json()["ok"] is True
            assert waiting.result(30).json()["ok"] is True
    finally:
        verifier.recorder.verify_chain = walk


def test_a_full_walk_needs_the_admin_role_and_readers_get_the_incremental_one(client_factory):
    with client_factory(auth=True) as client:
        ledger = client.app.state.runtime.ledger
        _, reader = TokenService(ledger).issue("auditor", "reader")
        _, admin = TokenService(ledger).issue("root", "admin")
        as_reader = {"Authorization": f"Bearer {reader}"}
        assert_error(client.get("/api/ledger/verify", params={"full": "true"}, headers=as_reader), 403, "forbidden")
        assert client.get("/api/ledger/verify", headers=as_reader).json()["ok"] is True
        full = client.get("/api/ledger/verify", params={"full": "true"},
                          headers={"Authorization": f"Bearer {admin}"}).json()
        assert full["ok"] is True and full["since"] is None


def test_thirty_concurrent_verifies_walk_each_event_once_between_them(pg_client):
    for index in range(20):
        made = create(pg_client, f"p{index}")
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda _: pg_client.get("/api/ledger/verify"), range(30)))
    assert {answer.status_code for answer in answers} <= {200, 429}
    reports = [answer.json() for answer in answers if answer.status_code == 200]
    assert reports and all(report["ok"] for report in reports)
    # each event walked once between them (and the server's own walks, each second): never once per request
    assert sum(report["checked"] for report in reports) <= made["position"]
    for answer in answers:
        if answer.status_code == 429:
            assert answer.headers["Retry-After"]


@pytest.mark.parametrize("full", ["true", "false"])
def test_verifying_while_others_write_never_reports_a_problem(pg_client, full):
    """Walks read the events, the chain and the snapshots as of one moment: writes committed meanwhile are
    neither a removed row, an inserted one, nor a snapshot past the end of its stream."""
    profile = create(pg_client, "p")
    stop = threading.Event()

    def write() -> None:
        strength = 1.0
        while not stop.is_set():
            strength += 1
            pg_client.put(f"/api/profiles/{profile['id']}", json={"steering": {"1": strength}})

    writers = [threading.Thread(target=write) for _ in range(2)]
    for writer in writers:
        writer.start()
    try:
        reports = [pg_client.get("/api/ledger/verify", params={"full": full}).json() for _ in range(40)]
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert [report for report in reports if not report["ok"]] == []

"""The database stops taking writes under a running server (a failover left it on a standby, its owner set it
read-only): commands answer 503 ``database_unavailable`` saying so, never a 500; queries go on; a retry succeeds
once it takes writes again."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from tests.waiting import wait_until

pytestmark = pytest.mark.postgres


def set_read_only(url: str, read_only: bool) -> None:
    """Make the database read-only for every new session (or writable again), and end the sessions it has: the
    server's pool opens new ones, as after a failover."""
    name = url.rpartition("/")[2]
    with psycopg.connect(url, autocommit=True, options="-c default_transaction_read_only=off") as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if read_only else "off"}')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                     "AND pid <> pg_backend_pid()", [name])


def test_a_database_that_stops_taking_writes_answers_commands_503_saying_so_and_queries_go_on(
    postgres_url, credentials, ledger_processes
):
    server = ledger_processes(postgres_url, "serve")
    with httpx.Client(base_url=server.base_url, headers=credentials.editor, timeout=60) as http:
        assert http.post("/api/profiles", json={"name": "calm", "steering": {"1": 1.0}}).status_code == 201
        set_read_only(postgres_url, True)
        answers: list[httpx.Response] = []

        def refused_as_read_only() -> bool:
            answers.append(http.post("/api/profiles", json={"name": "other"}))
            return "takes no writes" in answers[-1].text

        wait_until(refused_as_read_only, timeout=30, interval=0.2)  # (the first may meet the connections cut)
        assert {(answer.status_code, answer.json()["error"]) for answer in answers} == {
            (503, "database_unavailable")}, [answer.text for answer in answers]  # was 500, internal_error
        assert answers[-1].json()["detail"] == ("the database takes no writes right now (it is read-only); "
                                                "retry once it takes them")
        assert http.get("/api/profiles/calm").status_code == 200
        set_read_only(postgres_url, False)
        wait_until(lambda: http.post("/api/profiles", json={"name": "other"}).status_code == 201, timeout=30,
                   interval=0.2)
        assert http.get("/api/profiles/other").status_code == 200
    assert "Traceback" not in server.output()

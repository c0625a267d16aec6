"""A server answers only to the host names it was told of: a page of another site that points a name of its own at
the server's address (DNS rebinding) gets nothing, not even in open mode, where no token would stop it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import assert_error, free_port
from tests.faults.conftest import LedgerProcess, launch, wait_until_healthy

PROFILE = {"name": "calm", "steering": {"1": 0.5}}


@pytest.fixture
def serve(tmp_path: Path, sqlite_url: str) -> Iterator[Callable[..., LedgerProcess]]:
    started: list[LedgerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> LedgerProcess:
        port = free_port()
        server = launch(sqlite_url, ["serve", "--port", str(port), "--no-model", *args],
                        tmp_path / f"serve-{len(started)}.log", env=env)
        server.base_url = f"http://127.0.0.1:{port}"
        started.append(server)
        wait_until_healthy(server)
        return server

    yield start
    for server in started:
        server.stop()


def addressed_to(server: LedgerProcess, name: str) -> dict[str, str]:
    """The headers a browser sends when a page served under ``name`` calls the server by that name."""
    port = server.base_url.rsplit(":", 1)[1]
    return {"Host": f"{name}:{port}", "Origin": f"http://{name}:{port}"}


def test_an_open_server_answers_to_localhost_and_ip_addresses_only(serve):
    server = serve("--no-auth")
    for name in ("rebound.example", "127.0.0.1.nip.io"):
        read = httpx.get(f"{server.base_url}/api/profiles", headers=addressed_to(server, name))
        assert_error(read, 400, "unknown_host")
        assert "LEDGER_ALLOWED_HOSTS" in read.json()["detail"]
        write = httpx.post(f"{server.base_url}/api/profiles", json=PROFILE, headers=addressed_to(server, name))
        assert_error(write, 400, "unknown_host")
        assert httpx.get(f"{server.base_url}/", headers=addressed_to(server, name)).status_code == 400
    for name in ("localhost", "127.0.0.1", "[::1]", "app.localhost"):
        assert httpx.get(f"{server.base_url}/api/profiles", headers=addressed_to(server, name)).status_code == 200
    created = httpx.post(f"{server.base_url}/api/profiles", json=PROFILE, headers=addressed_to(server, "localhost"))
    assert created.status_code == 201, created.text
    assert [profile["name"] for profile in httpx.get(f"{server.base_url}/api/profiles").json()["profiles"]] == ["calm"]


def test_the_names_an_operator_allows_are_answered(serve):
    server = serve("--no-auth", env={"LEDGER_ALLOWED_HOSTS": "ledger.internal, Other.Example"})
    for name in ("ledger.internal", "other.example", "localhost"):
        assert httpx.get(f"{server.base_url}/api/profiles", headers=addressed_to(server, name)).status_code == 200
    assert_error(httpx.get(f"{server.base_url}/api/profiles", headers=addressed_to(server, "rebound.example")),
                 400, "unknown_host")


def test_a_server_that_asks_for_tokens_answers_to_any_name_unless_told_otherwise(serve):
    server = serve()
    response = httpx.get(f"{server.base_url}/api/profiles", headers=addressed_to(server, "ledger.behind-a-proxy"))
    assert_error(response, 401)
    assert httpx.get(f"{server.base_url}/health", headers=addressed_to(server, "anything.example")).status_code == 200


@pytest.mark.parametrize("mode", ["--auth", "--no-auth"])
def test_a_host_header_whose_port_is_not_a_port_is_a_400_not_a_500(serve, mode):
    """Anything that reads a request's address fails on such a Host: refused first, with the error shape, and
    nothing written to the server's log about it."""
    server = serve(mode)
    for host in ("localhost:evil", "localhost:99999", "localhost:-1", "127.0.0.1:1:2", "[::1"):
        for path in ("/api/profiles", "/nonexistent", "/", "/v1/models"):
            answer = httpx.get(f"{server.base_url}{path}", headers={"Host": host})
            assert_error(answer, 400, "unknown_host")
    assert "Traceback" not in server.output()

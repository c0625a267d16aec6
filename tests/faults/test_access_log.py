"""What the access log of a running `ledger serve` writes down: never a token's secret, even one sent in a URL."""

from __future__ import annotations

import httpx
import pytest

from tests.waiting import wait_until

pytestmark = pytest.mark.postgres


def test_a_token_sent_in_a_url_is_refused_and_its_secret_is_not_written_to_the_access_log(
    postgres_url, credentials, ledger_processes
):
    server = ledger_processes(postgres_url, "serve")
    token = credentials.editor["Authorization"].removeprefix("Bearer ")
    named, secret = token[:len("pl_") + 33], token[len("pl_") + 33:]  # pl_<id hex>_ and the secret
    for path in ("/api/profiles", f"/api/profiles/{token}"):
        assert httpx.get(f"{server.base_url}{path}", params={"access_token": token}).status_code == 401
    wait_until(lambda: server.output().count(f"{named}[redacted]") == 3, 10, "the requests' log lines")
    assert secret not in server.output()  # (was written whole: anyone who reads the log could use it)

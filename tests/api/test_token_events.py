"""Finding 5 on both stores (SQLite and PostgreSQL), through the real app: readers and editors never receive the
token records (``AccessTokens.*``: ids, names, roles, salts, digests) from ``GET /api/events``; admins do."""

from __future__ import annotations

from tests.api.conftest import make_client
from ledger.tokens import TokenService


def test_token_events_are_for_admins_only(database_url):
    with make_client(database_url, auth=True) as client:
        ledger = client.app.state.runtime.ledger
        tokens = {role: TokenService(ledger).issue(f"{role}-bot", role)[1] for role in ("reader", "editor", "admin")}
        head = int(ledger.recorder.max_notification_id())

        def log(role: str, **params: str) -> list[dict]:
            answer = client.get(
                "/api/events", params={"min_position": head, "limit": 1000, **params},
                headers={"Authorization": f"Bearer {tokens[role]}"},
            )
            assert answer.status_code == 200, answer.text
            return answer.json()["events"]

        assert len(log("admin")) == head and any("salt" in e["data"] for e in log("admin"))
        for role in ("reader", "editor"):
            assert log(role) == []
            assert log(role, type="AccessTokens.Issued") == []
            assert "salt" not in str(log(role, actor="cli"))

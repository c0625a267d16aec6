"""``ledger tokens``, run as the installed executable: expiry (``--expires-in``), unique names, clear refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

LEDGER = str(Path(sys.executable).with_name("ledger"))


@pytest.fixture
def tokens_cli(database_url, tmp_path):
    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [LEDGER, "--database", database_url, "tokens", *args],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    return run


def test_a_token_with_an_expiry_stops_working_after_it(tokens_cli, database_url):
    created = json.loads(tokens_cli("create", "--name", "brief", "--role", "reader", "--expires-in", "8s",
                                    "--json").stdout)
    assert created["expires_at"] and created["name"] == "brief"
    listed = json.loads(tokens_cli("list", "--json").stdout)
    assert [t["expires_at"] for t in listed] == [created["expires_at"]]
    from ledger.application import ProfileLedger
    from ledger.errors import AuthenticationError
    from ledger.settings import Database
    from ledger.tokens import TokenService

    ledger = ProfileLedger(env=Database(database_url).eventsourcing_env())
    try:
        assert TokenService(ledger).authenticate(created["token"]).name == "brief"
        expires_at = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
        time.sleep(max(0.0, (expires_at - datetime.now(timezone.utc)).total_seconds()) + 0.2)
        with pytest.raises(AuthenticationError, match="expired"):
            TokenService(ledger).authenticate(created["token"])
    finally:
        ledger.close()
    assert "EXPIRED" in tokens_cli("list").stdout


def test_token_names_are_unique_and_bad_input_is_refused(tokens_cli):
    tokens_cli("create", "--name", "ci", "--role", "editor")
    taken = tokens_cli("create", "--name", "ＣＩ", "--role", "admin", ok=False)
    assert taken.returncode != 0 and "live token named 'ci'" in taken.stderr
    refused = tokens_cli("create", "--name", "tab\there", "--role", "reader", ok=False)
    assert refused.returncode == 1 and refused.stderr.strip() and "Traceback" not in refused.stderr
    for duration in ("soon", "1y", "0.5d", "999999999w"):  # an option of the wrong form: 2, with the usage (was 1)
        refused = tokens_cli("create", "--name", "x", "--role", "reader", "--expires-in", duration, ok=False)
        assert refused.returncode == 2 and "Usage: ledger tokens create" in refused.stderr, refused.stderr
        assert "Invalid value for '--expires-in'" in refused.stderr and "Traceback" not in refused.stderr


def test_revoke_says_whether_it_revoked_in_text_and_json(tokens_cli):
    created = json.loads(tokens_cli("create", "--name", "gone", "--role", "reader", "--json").stdout)
    assert json.loads(tokens_cli("revoke", created["id"], "--json").stdout) == {"revoked": True}
    assert tokens_cli("revoke", created["id"]).stdout.strip() == "already revoked"

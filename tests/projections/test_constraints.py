"""The database itself refuses two active profiles, whatever writes to it: a profile is active when the one
slot row names it, and a second slot row is refused."""

from __future__ import annotations

import pytest


def _execute(read_model, sql: str, params: tuple = ()) -> None:
    sql = sql.replace("?", "%s") if read_model.dialect.is_postgres else sql
    with read_model.store.datastore.transaction(commit=True) as curs:
        curs.execute(sql, params)


def test_a_second_active_slot_row_is_refused(ledger, project, read_model):
    profile = ledger.create_profile({"name": "one", "steering": {1: 1.0}}).profile.id
    other = ledger.create_profile({"name": "two", "steering": {1: 1.0}}).profile.id
    ledger.activate_profile(profile)
    project()
    with pytest.raises(Exception, match="(?i)check|constraint"):
        _execute(
            read_model,
            "INSERT INTO active_profile (slot, profile_id, version, activated_at, actor, position) "
            "VALUES (2, ?, 1, '2024-01-01T00:00:00+00:00', 'x', 1)",
            (str(other),),
        )
    assert [row.id for row in read_model.list_profiles().items if row.is_active] == [profile]

"""The database itself refuses two active profiles, whatever writes to it."""

from __future__ import annotations

import pytest


def _execute(read_model, sql: str, params: tuple = ()) -> None:
    sql = sql.replace("?", "%s") if read_model.dialect.is_postgres else sql
    with read_model.store.datastore.transaction(commit=True) as curs:
        curs.execute(sql, params)


def test_a_second_active_profile_row_is_refused(ledger, project, read_model):
    first = ledger.create_profile({"name": "one", "steering": {1: 1.0}}).profile.id
    second = ledger.create_profile({"name": "two", "steering": {1: 1.0}}).profile.id
    ledger.activate_profile(first)
    project()
    true = "TRUE" if read_model.dialect.is_postgres else "1"
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        _execute(read_model, f"UPDATE profiles SET is_active = {true} WHERE id = ?", (str(second),))
    assert [row.id for row in read_model.list_profiles().items if row.is_active] == [first]


def test_a_second_active_slot_row_is_refused(ledger, project, read_model):
    profile = ledger.create_profile({"name": "one", "steering": {1: 1.0}}).profile.id
    ledger.activate_profile(profile)
    project()
    with pytest.raises(Exception, match="(?i)check|constraint"):
        _execute(
            read_model,
            "INSERT INTO active_profile (slot, profile_id, version, activated_at, actor, position) "
            "VALUES (2, ?, 1, '2024-01-01T00:00:00+00:00', 'x', 1)",
            (str(profile),),
        )

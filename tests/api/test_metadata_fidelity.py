"""Metadata is free JSON: every read and every export gives back the numbers and types written (``1e20`` stays a
float, ``-0.0`` keeps its sign, ``true`` is not ``1``), on PostgreSQL as on SQLite; an export imports anywhere; and a
change of type alone is a change."""

from __future__ import annotations

import json
from typing import Any

from tests.api.conftest import create

TRICKY = {
    "big": 1e20, "huge": 1.5e300, "two": 2.0, "negative_zero": -0.0, "tiny": 5e-324, "integer": 10**18,
    "flag": True, "zero": 0, "nested": {"items": [1.0, 1, True, None, "1", {"deep": 0.0}]},
}


def as_written(value: Any) -> str:
    """The value as JSON, where ``1e20`` and ``100000000000000000000`` differ (``==`` would not tell them apart)."""
    return json.dumps(value, sort_keys=True)


def test_every_read_and_export_gives_back_the_metadata_as_written(client):
    made = create(client, "tricky", metadata=TRICKY)
    profile = f"/api/profiles/{made['id']}"
    exported = client.get(f"{profile}/export").json()
    reads = {
        "create": made["metadata"],
        "get": client.get(profile).json()["metadata"],
        "list": client.get("/api/profiles").json()["profiles"][0]["metadata"],
        "versions": client.get(f"{profile}/versions").json()["versions"][0]["metadata"],
        "version": client.get(f"{profile}/versions/1").json()["metadata"],
        "export": exported["profile"]["metadata"],
    }
    assert {name: as_written(read) for name, read in reads.items()} == dict.fromkeys(reads, as_written(TRICKY))

    imported = client.post("/api/profiles/import", params={"rename": "true"}, json=exported)
    assert imported.status_code == 201, imported.text
    assert as_written(client.get(f"/api/profiles/{imported.json()['id']}").json()["metadata"]) == as_written(TRICKY)


def test_a_change_of_type_alone_is_a_change_and_a_revert_restores_the_types(client):
    made = create(client, "typed", metadata={"a": True, "b": 0.0})
    profile = f"/api/profiles/{made['id']}"
    retyped = client.put(profile, json={"metadata": {"a": 1, "b": 0}}).json()
    assert retyped["changed"] is True and retyped["version"] == 2
    diff = client.get(f"{profile}/diff", params={"from": 1, "to": 2}).json()
    assert [change["field"] for change in diff["changes"]] == ["metadata"]
    reverted = client.post(f"{profile}/revert", json={"version": 1}).json()
    assert reverted["changed"] is True and reverted["version"] == 3
    assert as_written(client.get(profile).json()["metadata"]) == as_written({"a": True, "b": 0.0})

"""No sequence of commands the API accepts can wedge a read model: random commands with extreme integers, large
values and any Unicode go through the real app on PostgreSQL, and after each sequence every read model has
applied the whole log, nothing is parked, and no command was answered with a 5xx."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.api.conftest import make_client

pytestmark = pytest.mark.postgres

EXTREMES = [0, 1, -1, 2**31 - 1, 2**31, -(2**31), 2**53, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30]
extremes = st.one_of(st.sampled_from(EXTREMES), st.integers(min_value=-(2**70), max_value=2**70))


def mostly(valid: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Values the domain accepts, three times in four; anything (out of range, wrong type) otherwise."""
    return st.one_of(valid, valid, valid, wild)


texts = st.one_of(st.text(max_size=40), st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=3000))
names = mostly(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=60)
               .filter(str.strip), texts)
numbers = st.one_of(extremes, st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1e308, -1e308, 5e-324]))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), mostly(st.integers(-(2**63), 2**63 - 1), numbers), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=8,
)
metadata = st.dictionaries(st.text(max_size=10), json_values, max_size=4)
layers = mostly(st.integers(0, 2**31 - 1), extremes)
steering = st.dictionaries(
    mostly(st.integers(0, 2**31 - 1).map(str), st.one_of(extremes.map(str), st.text(max_size=5))),
    mostly(st.floats(-10, 10), numbers),
    max_size=4,
)


def body(**fields: Any) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON body whose fields are each present or left out."""
    return st.fixed_dictionaries({}, optional=fields)


create = st.tuples(st.just("create"), st.fixed_dictionaries({"name": names}, optional={
    "layer": layers, "steering": steering, "description": texts, "tags": st.lists(texts, max_size=3),
    "metadata": metadata, "model_id": texts,
}))
update = st.tuples(st.just("update"), body(
    layer=layers, steering=steering, description=texts, metadata=metadata, name=names, bump_version=st.booleans()
))
execute = st.tuples(st.just("execute"), body(
    seed=mostly(st.integers(-(2**63), 2**63 - 1), extremes), entity_count=mostly(st.integers(0, 2**63 - 1), extremes),
    duration_ms=numbers, run_id=texts, metadata=metadata, error_message=texts,
    status=st.sampled_from(["success", "failed", "partial"]),
))
imported = st.tuples(st.just("import"), st.fixed_dictionaries(
    {"name": names, "steering": steering}, optional={"layer": layers, "metadata": metadata}
))
other = st.sampled_from([("activate", {}), ("deactivate", {}), ("delete", {})])
command = st.one_of(create, create, update, update, execute, execute, imported, other)
commands = st.lists(st.tuples(command, st.integers(0, 2**16)), min_size=1, max_size=6)  # (command, which profile)


@pytest.fixture(scope="module")
def shared_client(postgres_server):
    """One app on one database for every example (the log grows across them; the invariant holds throughout)."""
    import uuid

    dbname = f"ledger_wedge_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(dbname)
    try:
        with make_client(url) as client:
            client.profiles = []  # type: ignore[attr-defined]  # ids created so far, across examples
            yield client
    finally:
        postgres_server.drop_database(dbname)


def run(client: Any, command: str, payload: dict[str, Any], profiles: list[str], pick: int) -> int:
    target = profiles[pick % len(profiles)] if profiles else "00000000-0000-0000-0000-000000000000"
    if command == "create":
        response = client.post("/api/profiles", json=payload)
    elif command == "update":
        response = client.put(f"/api/profiles/{target}", json=payload)
    elif command == "execute":
        response = client.post(f"/api/profiles/{target}/executions", json=payload)
    elif command == "import":
        response = client.post("/api/profiles/import", params={"rename": "true"}, json=payload)
    elif command == "activate":
        response = client.post(f"/api/profiles/{target}/activate", json={})
    elif command == "deactivate":
        response = client.post("/api/profiles/deactivate", json={})
    else:
        response = client.delete(f"/api/profiles/{target}")
    assert response.status_code < 500, (command, payload, response.status_code, response.text[:500])
    if command in ("create", "import") and response.status_code == 201:
        profiles.append(response.json()["id"])
    return response.status_code


@given(commands)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_accepted_commands_never_wedge_a_read_model(shared_client, sequence):
    client = shared_client
    for (command, payload), pick in sequence:
        event(f"{command} {run(client, command, payload, client.profiles, pick)}")
    head = int(client.app.state.runtime.ledger.recorder.max_notification_id() or 0)
    listing = client.get("/api/profiles", params={"min_position": head, "limit": 1})
    assert listing.status_code == 200, f"the read models did not reach position {head}: {listing.text}"
    ready = client.get("/ready").json()
    assert ready["status"] == "ready", ready
    assert all(p["position"] >= head and p["parked"] == 0 for p in ready["projections"]), ready

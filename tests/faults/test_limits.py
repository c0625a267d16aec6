"""Inputs past the limits are refused with the error shape, and refusing them writes nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from ledger.values import DESCRIPTION_MAX, IDENTIFIER_MAX, LABEL_MAX, METADATA_DEPTH_MAX, NAME_MAX, STEERING_MAX
from ledger.api.exchange import IMPORT_BODY_FACTOR
from ledger.tokens import TokenService
from tests.api.conftest import assert_error, make_client

pytestmark = pytest.mark.postgres

BODY_MAX = 256 * 1024


@pytest.fixture
def limited(postgres_url: str) -> Iterator[tuple[TestClient[Litestar], dict[str, str]]]:
    """The app with authentication on, a 256 KiB body limit, an admin token and one profile."""
    with make_client(postgres_url, auth=True, max_body_size=BODY_MAX) as client:
        _, token = TokenService(client.app.state.runtime.ledger).issue("limits", "admin")
        headers = {"Authorization": f"Bearer {token}"}
        made = client.post("/api/profiles", json={"name": "existing", "steering": {"1": 1.0}}, headers=headers)
        assert made.status_code == 201
        client.profile_id = made.json()["id"]  # type: ignore[attr-defined]
        yield client, headers


def head(client: TestClient[Litestar]) -> int:
    return int(client.app.state.runtime.ledger.recorder.max_notification_id() or 0)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


def refused_and_nothing_written(client, method: str, url: str, status: int, headers: dict[str, str], **kwargs: Any):
    before = head(client)
    body = assert_error(client.request(method, url, headers=headers, **kwargs), status)
    assert head(client) == before, f"{method} {url} wrote although it was refused"
    return body


def test_a_body_over_the_configured_size_is_a_413(limited):
    client, headers = limited
    padding = "x" * (BODY_MAX + 1)
    body = refused_and_nothing_written(
        client, "POST", "/api/profiles", 413, headers, json={"name": "big", "description": padding}
    )
    assert body["error"] == "payload_too_large"
    refused_and_nothing_written(
        client, "PUT", f"/api/profiles/{client.profile_id}", 413, headers, json={"description": padding}
    )
    refused_and_nothing_written(
        client, "POST", "/api/profiles/import", 413, headers,
        files={"file": ("big.json", b"x" * (IMPORT_BODY_FACTOR * BODY_MAX + 1), "application/json")},
    )  # an import may be larger than other bodies, by a fixed factor of the configured limit


def test_too_many_features_is_a_422(postgres_url):
    with make_client(postgres_url, auth=False) as client:  # the default 8 MiB body fits STEERING_MAX + 1 features
        steering = {str(i): 0.5 for i in range(STEERING_MAX + 1)}
        body = refused_and_nothing_written(
            client, "POST", "/api/profiles", 422, {}, json={"name": "wide", "steering": steering}
        )
        assert body["field"] == "steering"


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"name": "n" * (NAME_MAX + 1)}, "name"),
        ({"description": "d" * (DESCRIPTION_MAX + 1)}, "description"),
        ({"model_id": "m" * (IDENTIFIER_MAX + 1)}, "model_id"),
        ({"sae_id": "s" * (IDENTIFIER_MAX + 1)}, "sae_id"),
        ({"tags": ["t" * (LABEL_MAX + 1)]}, "tags[0]"),
        ({"products": ["p" * (LABEL_MAX + 1)]}, "products[0]"),
        ({"reason": "r" * 1001}, "reason"),
        ({"tags": ["ok", "line\nbreak"]}, "tags[1]"),  # read otherwise than stored, as a name may not
        ({"products": ["zero\u200bwidth"]}, "products[0]"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_over_long_or_unreadable_strings_are_a_422(limited, fields, field):
    client, headers = limited
    create = {"name": "long", "steering": {"1": 1.0}, **fields}
    body = refused_and_nothing_written(client, "POST", "/api/profiles", 422, headers, json=create)
    assert body.get("field") == field, body
    update = {k: v for k, v in fields.items()}
    refused_and_nothing_written(client, "PUT", f"/api/profiles/{client.profile_id}", 422, headers, json=update)


@pytest.mark.parametrize("depth", [METADATA_DEPTH_MAX + 1, 1_000, 20_000])
def test_deep_json_in_metadata_is_a_422(limited, depth):
    client, headers = limited
    profile = client.profile_id
    for method, url, body in (
        ("POST", "/api/profiles", {"name": "deep", "metadata": nested(depth)}),
        ("PUT", f"/api/profiles/{profile}", {"metadata": nested(depth)}),
        ("POST", f"/api/profiles/{profile}/executions", {"metadata": nested(depth)}),
        ("POST", "/api/profiles/import", {"format": "x", "name": "deep", "metadata": nested(depth)}),
    ):
        raw = json.dumps(body) if depth < 900 else _deep_json(body, depth)
        refused_and_nothing_written(
            client, method, url, 422, {**headers, "Content-Type": "application/json"}, content=raw
        )


def _deep_json(body: dict[str, Any], depth: int) -> str:
    """json.dumps cannot write very deep documents (recursion); build the text directly."""
    prefix = "".join('{"k":' for _ in range(depth))
    deep = prefix + '"leaf"' + "}" * depth
    rest = {k: v for k, v in body.items() if k != "metadata"}
    fields = ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in rest.items())
    return "{" + (fields + "," if fields else "") + '"metadata":' + deep + "}"


def test_a_body_full_of_distinct_tags_is_refused_at_the_cap_in_time_linear_in_its_length(postgres_url):
    """Each tag is checked against those before it in constant time: 180,000 distinct tags (about 1.6 MiB, inside
    the default body limit) are refused at once, where a check against a list took minutes of a server's CPU."""
    many = [f"t{i}" for i in range(180_000)]
    with make_client(postgres_url, auth=False) as client:
        for method, url, body in (
            ("POST", "/api/profiles", {"name": "tagged", "tags": many}),
            ("POST", "/api/profiles", {"name": "made", "products": many}),
            ("POST", "/api/profiles/import", {"name": "tagged", "tags": many}),
        ):
            answers: list[Any] = []
            worker = threading.Thread(target=lambda: answers.append(client.request(method, url, json=body)))
            worker.start()
            worker.join(timeout=120)  # a guard against a hang, not a speed target: it takes well under a second
            assert answers, f"{method} {url} with 180,000 tags was still running after two minutes"
            field = "products" if "products" in body else "tags"
            assert assert_error(answers[0], 422)["field"] == field

"""The OpenAPI document is valid OpenAPI 3 and the API answers as it documents."""

from __future__ import annotations

import uuid
from typing import Any

from tests.api.conftest import create, fresh

SKIP = {("get", "/api/events/stream")}  # an endless stream: see test_events.py


def _validate_openapi(document: dict[str, Any]) -> None:
    try:
        from openapi_spec_validator import validate
    except ImportError:  # structural check when the validator is not installed
        assert document["openapi"].startswith("3.")
        assert document["info"]["title"] and document["info"]["version"]
        for path, item in document["paths"].items():
            assert path.startswith("/")
            for operation in item.values():
                if isinstance(operation, dict) and "responses" in operation:
                    assert operation["responses"], path
        return
    validate(document)


def _check_body(document: dict[str, Any], schema: dict[str, Any], body: Any) -> None:
    try:
        import jsonschema
    except ImportError:  # the status and header checks still run
        return
    root = {"components": document.get("components", {}), **schema}
    jsonschema.Draft202012Validator(root).validate(body)


def _call(client, method: str, path: str, values: dict[str, str], body: Any) -> Any:
    url = path
    for name, value in values.items():
        url = url.replace("{" + name + "}", value)
    if method in ("post", "put") and body is not None:
        return client.request(method.upper(), url, json=body)
    return client.request(method.upper(), url)


def test_openapi_document_is_valid_and_every_route_answers_as_documented(pg_client):
    client = pg_client
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    _validate_openapi(document)
    schemas = document["components"]["schemas"]
    for name in ("CreateProfile", "UpdateProfile", "ProfileRead", "ProfileChange", "ErrorBody", "ProfileList"):
        assert name in schemas, name
    positions = [parameter for item in document["paths"].values() for operation in item.values()
                 for parameter in operation.get("parameters", [])
                 if parameter["name"] in ("min_position", "X-Min-Position", "after")]
    assert positions and all(parameter["schema"].get("minimum") == 0 for parameter in positions), positions

    profile = create(client, "documented", steering={"1": 1.0}, model_id="m")
    client.put(f"/api/profiles/{profile['id']}", json={"steering": {"1": 2.0}})
    execution = client.post(f"/api/profiles/{profile['id']}/executions", json={"run_id": "run-doc"}).json()
    client.get("/api/profiles", params=fresh(client, execution["position"]))
    real = {
        "profile_id": profile["id"],
        "execution_id": execution["id"],
        "run_id": "run-doc",
        "version": "1",
        "name": "documented",
    }
    missing = {**{k: str(uuid.uuid4()) for k in ("profile_id", "execution_id")}, "run_id": "nope", "version": "9",
               "name": "nobody"}
    bodies = {
        ("post", "/api/profiles"): {"name": "documented two"},
        ("put", "/api/profiles/{profile_id}"): {"description": "documented"},
        ("post", "/api/profiles/{profile_id}/revert"): {"version": 1},
        ("post", "/api/profiles/{profile_id}/executions"): {"seed": 1},
        ("post", "/api/profiles/import"): {"name": "imported doc"},
        ("post", "/api/profiles/{profile_id}/activate"): {},
    }
    order = {"delete": 1}  # deletes last: the others need the profile
    operations = [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "delete") and (method, path) not in SKIP
    ]
    operations.sort(key=lambda entry: order.get(entry[0], 0))
    checked = 0
    for values in (real, missing):
        for method, path, operation in operations:
            if method == "delete" and values is real:
                client.post("/api/profiles/deactivate")
            answer = _call(client, method, path, values, bodies.get((method, path)))
            documented = operation["responses"]
            status = str(answer.status_code)
            assert status in documented, f"{method.upper()} {path} answered {status}: {answer.text[:200]}"
            content = documented[status].get("content", {})
            if "application/json" in content and answer.headers.get("content-type", "").startswith("application/json"):
                _check_body(document, content["application/json"]["schema"], answer.json())
            for header in documented[status].get("headers", {}):
                assert header in answer.headers, f"{method.upper()} {path}: no {header} header"
            checked += 1
        # garbage in every parameter: still a documented answer
        for method, path, operation in operations:
            if "{" in path:
                answer = _call(client, method, path, {k: "%25bad" for k in real}, {"bogus": 1})
                assert str(answer.status_code) in operation["responses"], f"{method.upper()} {path}: {answer.text}"
    assert checked >= 2 * 20

"""Authentication and roles: reader < editor < admin, bearer tokens, 401/403 in the one error shape.

Every mutating route is in ``MUTATING_ROUTES`` and is shown to answer 401 without a token, 403 with a role too
low (writing nothing either way) and success with the role it needs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from ledger.access import ROLES
from ledger.api.auth import UNKNOWN_ID_RELOAD_INTERVAL, required_role
from ledger.tokens import TokenService
from tests.api.conftest import assert_error, make_client

pytestmark = pytest.mark.postgres

Client = TestClient[Litestar]


@dataclass
class Tokens:
    reader: str
    editor: str
    admin: str

    def header(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}


@pytest.fixture
def secured(postgres_url: str) -> Iterator[tuple[Client, Tokens]]:
    """The app with authentication on, and one token per role (named after the role)."""
    with make_client(postgres_url, auth=True) as client:
        ledger = client.app.state.runtime.ledger
        tokens = Tokens(*(TokenService(ledger).issue(f"{role}-bot", role)[1] for role in ROLES))
        yield client, tokens


def head(client: Client) -> int:
    return int(client.app.state.runtime.ledger.recorder.max_notification_id() or 0)


def as_admin(client: Client, tokens: Tokens, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    response = client.request(method, url, headers=tokens.header("admin"), **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def a_profile(client: Client, tokens: Tokens, name: str = "target", versions: int = 1) -> dict[str, Any]:
    profile = as_admin(client, tokens, "POST", "/api/profiles", json={"name": name, "steering": {"1": 0.5}})
    for version in range(2, versions + 1):
        profile = as_admin(client, tokens, "PUT", f"/api/profiles/{profile['id']}", json={"steering": {"1": version}})
    return profile


# -- the table of mutating routes: (method, url, role it needs, body) after a setup ----------------
@dataclass
class Route:
    method: str
    url: str
    role: str
    setup: Callable[[Client, Tokens], dict[str, Any]] = lambda client, tokens: {}
    body: Callable[[dict[str, Any]], Any] = lambda given: None
    params: dict[str, str] | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.url}"


def _profile(client: Client, tokens: Tokens) -> dict[str, Any]:
    return {"id": a_profile(client, tokens, versions=2)["id"]}


def _exported(client: Client, tokens: Tokens) -> dict[str, Any]:
    profile = a_profile(client, tokens)
    url = f"/api/profiles/{profile['id']}/export"
    return {"document": as_admin(client, tokens, "GET", url, params={"min_position": profile["position"]})}


def _spare_token(client: Client, tokens: Tokens) -> dict[str, Any]:
    return {"id": as_admin(client, tokens, "POST", "/api/tokens", json={"name": "spare", "role": "reader"})["id"]}


def _deleted(client: Client, tokens: Tokens) -> dict[str, Any]:
    profile = a_profile(client, tokens)
    as_admin(client, tokens, "DELETE", f"/api/profiles/{profile['id']}")
    return {"id": profile["id"]}


def _active(client: Client, tokens: Tokens) -> dict[str, Any]:
    profile = a_profile(client, tokens)
    as_admin(client, tokens, "POST", f"/api/profiles/{profile['id']}/activate")
    return {}


MUTATING_ROUTES = [
    Route("POST", "/api/profiles", "editor", body=lambda _: {"name": "new", "steering": {"2": 1.0}}),
    Route("PUT", "/api/profiles/{id}", "editor", _profile, body=lambda _: {"description": "changed"}),
    Route("POST", "/api/profiles/{id}/activate", "editor", _profile),
    Route("POST", "/api/profiles/deactivate", "editor", _active),
    Route("POST", "/api/profiles/{id}/revert", "editor", _profile, body=lambda _: {"version": 1}),
    Route("POST", "/api/profiles/{id}/executions", "editor", _profile, body=lambda _: {"run_id": "r1", "seed": 1}),
    Route("DELETE", "/api/profiles/{id}", "admin", _profile),
    Route("POST", "/api/profiles/{id}/restore", "admin", _deleted),
    Route("POST", "/api/profiles/import", "admin", _exported, body=lambda given: given["document"],
          params={"rename": "true"}),
    Route("POST", "/api/tokens", "admin", body=lambda _: {"name": "new-bot", "role": "reader"}),
    Route("DELETE", "/api/tokens/{id}", "admin", _spare_token),
    Route("POST", "/api/ledger/rebuild", "admin"),
]


def below(role: str) -> str:
    return ROLES[ROLES.index(role) - 1]


@pytest.mark.parametrize("route", MUTATING_ROUTES, ids=str)
def test_a_mutating_route_needs_a_token_with_its_role(secured, route: Route):
    client, tokens = secured
    given = route.setup(client, tokens)
    url = route.url.format(**given)
    body = route.body(given)

    def call(headers: dict[str, str]) -> Any:
        return client.request(route.method, url, json=body, params=route.params, headers=headers)

    before = head(client)
    refused = assert_error(call({}), 401, "unauthenticated")
    assert "Authorization" in refused["detail"]
    assert call({}).headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(call({"Authorization": "Bearer pl_not-a-token"}), 401, "unauthenticated")
    forbidden = assert_error(call(tokens.header(below(route.role))), 403, "forbidden")
    assert route.role in forbidden["detail"]
    assert head(client) == before, "a refused request wrote nothing"

    response = call(tokens.header(route.role))
    assert response.status_code < 300, response.text


CONSOLE_SIGN_IN = {("POST", "/login"), ("POST", "/logout")}  # set only the browser's cookie (tests/console)


def mutating_routes(app: Litestar) -> list[tuple[str, str, str]]:
    """(method, path, role) of every route of the app that may change something, however it was added."""
    found = []
    for route in app.routes:
        for method, (handler, _) in getattr(route, "route_handler_map", {}).items():
            if method not in ("GET", "HEAD", "OPTIONS") and (method, route.path_format) not in CONSOLE_SIGN_IN:
                role = required_role(handler, method)
                path = route.path_format
                for name in route.path_parameters:
                    path = path.replace("{" + name + "}", str(uuid.uuid4()))
                found.append((method, path, role))
    return found


def test_every_mutating_route_of_the_app_refuses_no_token_and_too_low_a_role(secured):
    """Routes other controllers add (their role declared, or editor by default) are held to the same rule:
    nothing that writes is open, or open to a reader."""
    client, tokens = secured
    routes = mutating_routes(client.app)
    assert len(routes) >= len(MUTATING_ROUTES)
    before = head(client)
    for method, path, role in routes:
        assert role in ("editor", "admin"), f"{method} {path} needs only {role!r}"
        assert_error(client.request(method, path, json={}), 401, "unauthenticated")
        assert_error(client.request(method, path, json={}, headers=tokens.header(below(role))), 403, "forbidden")
    assert head(client) == before


def test_a_reader_may_query(secured):
    client, tokens = secured
    profile = a_profile(client, tokens)
    reader = tokens.header("reader")
    for url in (
        "/api/profiles",
        f"/api/profiles/{profile['id']}",
        f"/api/profiles/{profile['id']}/versions",
        f"/api/profiles/{profile['id']}/export",
        f"/api/profiles/{profile['id']}/executions",
        "/api/events",
        "/api/ledger/verify",
    ):
        response = client.get(url, headers=reader, params={"min_position": profile["position"]})
        assert response.status_code == 200, (url, response.text)


def test_only_an_admin_may_see_the_tokens(secured):
    client, tokens = secured
    assert_error(client.get("/api/tokens", headers=tokens.header("editor")), 403, "forbidden")
    listed = client.get("/api/tokens", headers=tokens.header("admin")).json()["tokens"]
    assert sorted(t["name"] for t in listed) == ["admin-bot", "editor-bot", "reader-bot"]
    assert all("token" not in t and set(t) == {"id", "name", "role", "issued_at", "expires_at", "revoked"} for t in listed)


def test_a_new_token_is_shown_once_and_works_at_once(secured):
    client, tokens = secured
    issued = client.post("/api/tokens", json={"name": "ci", "role": "editor"}, headers=tokens.header("admin"))
    assert issued.status_code == 201 and issued.headers["Cache-Control"] == "no-store"
    body = issued.json()
    assert body["token"].startswith("pl_") and body["role"] == "editor" and not body["revoked"]
    made = client.post("/api/profiles", json={"name": "by-ci"}, headers={"Authorization": f"Bearer {body['token']}"})
    assert made.status_code == 201, made.text


def test_a_token_issued_through_another_server_works_there_at_once(secured, postgres_url):
    client, tokens = secured
    with make_client(postgres_url, auth=True) as other:
        assert other.get("/api/profiles", headers=tokens.header("reader")).status_code == 200  # its copy is loaded
        for attempt in range(10):
            issued = as_admin(client, tokens, "POST", "/api/tokens", json={"name": f"ci-{attempt}", "role": "reader"})
            used = other.get("/api/profiles", headers={"Authorization": f"Bearer {issued['token']}"})
            assert used.status_code == 200, (attempt, used.text)
        made_up = {"Authorization": f"Bearer pl_{uuid.uuid4().hex}_x"}  # reloaded for, and still refused
        assert_error(other.get("/api/profiles", headers=made_up), 401, "unauthenticated")


def test_made_up_token_ids_reload_the_tokens_a_few_times_a_second_at_most(secured, postgres_url):
    """A token id the server does not know makes it reload the tokens (one issued elsewhere a moment ago works at
    once), but such reloads begin at most every tenth of a second: a stream of made-up ids, one after another,
    costs the database a few reads a second, not one a request."""
    client, _ = secured
    cache = client.app.state.runtime.tokens
    loads = []
    load = cache._load
    cache._load = lambda: (loads.append(time.monotonic()), load())[1]
    started = time.monotonic()
    for _ in range(30):
        made_up = {"Authorization": f"Bearer pl_{uuid.uuid4().hex}_x"}
        assert_error(client.get("/api/profiles", headers=made_up), 401, "unauthenticated")
    elapsed = time.monotonic() - started
    assert len(loads) <= elapsed / UNKNOWN_ID_RELOAD_INTERVAL + 2, (len(loads), elapsed)
    assert all(later - earlier >= UNKNOWN_ID_RELOAD_INTERVAL * 0.9 for earlier, later in zip(loads, loads[1:]))


def test_the_recorded_actor_is_the_token_not_the_x_actor_header(secured):
    client, tokens = secured
    made = client.post(
        "/api/profiles",
        json={"name": "claimed"},
        headers={**tokens.header("editor"), "X-Actor": "somebody-else", "X-Reason": "testing"},
    )
    assert made.status_code == 201, made.text
    events = client.get(
        "/api/events", params={"min_position": made.json()["position"]}, headers=tokens.header("reader")
    ).json()["events"]
    mine = [e for e in events if e["profile_id"] == made.json()["id"]]
    assert mine and {e["actor"] for e in mine} == {"editor-bot"}
    assert {e["reason"] for e in mine} == {"testing"}


def test_a_token_revoked_here_is_refused_at_once(secured):
    client, tokens = secured
    issued = as_admin(client, tokens, "POST", "/api/tokens", json={"name": "leaked", "role": "reader"})
    leaked = {"Authorization": f"Bearer {issued['token']}"}
    assert client.get("/api/profiles", headers=leaked).status_code == 200
    revoked = client.delete(f"/api/tokens/{issued['id']}", headers=tokens.header("admin"))
    assert revoked.json() == {"id": issued["id"], "revoked": True}
    assert_error(client.get("/api/profiles", headers=leaked), 401, "unauthenticated")
    again = client.delete(f"/api/tokens/{issued['id']}", headers=tokens.header("admin"))
    assert again.json()["revoked"] is False
    listed = as_admin(client, tokens, "GET", "/api/tokens")["tokens"]
    assert [t["revoked"] for t in listed if t["id"] == issued["id"]] == [True]


def test_a_token_revoked_by_another_process_is_refused_within_the_cache_bound(secured):
    client, tokens = secured
    cache = client.app.state.runtime.tokens
    assert client.get("/api/profiles", headers=tokens.header("reader")).status_code == 200
    service = TokenService(client.app.state.runtime.ledger)
    token_id = next(t.token_id for t in service.records() if t.name == "reader-bot")
    service.revoke(token_id)  # as the CLI would: this process's cache is not told
    revoked_at = time.monotonic()
    while client.get("/api/profiles", headers=tokens.header("reader")).status_code == 200:  # (the bound is the
        # cache's age plus room for a loaded machine: 2.2 s were seen with 1 s of room; never seen, it loops forever)
        assert time.monotonic() - revoked_at < cache.max_age + 10.0, "the revocation was not seen in time"
    assert_error(client.get("/api/profiles", headers=tokens.header("reader")), 401, "unauthenticated")


def test_unknown_token_ids_and_bad_headers_are_refused(secured):
    client, tokens = secured
    for header in ("Bearer", "Basic dXNlcjpwYXNz", "Bearer pl_0123_secret", "Bearer pl_" + "0" * 32 + "_guess", "token"):
        assert_error(client.get("/api/profiles", headers={"Authorization": header}), 401, "unauthenticated")
    good = tokens.header("reader")["Authorization"]
    prefix, token_id, secret = good.removeprefix("Bearer ").split("_", 2)
    for spelling in (f"{{{token_id}}}", f"urn:uuid:{token_id}", str(uuid.UUID(token_id)), token_id.upper()):
        respelt = {"Authorization": f"Bearer {prefix}_{spelling}_{secret}"}  # the same id written otherwise
        assert_error(client.get("/api/profiles", headers=respelt), 401, "unauthenticated")
    twice = [("Authorization", good), ("Authorization", "Bearer pl_" + "0" * 32 + "_guess")]
    assert_error(client.get("/api/profiles", headers=httpx.Headers(twice)), 401, "unauthenticated")
    assert client.get("/api/profiles", headers={"Authorization": good}).status_code == 200


def test_operations_and_the_schema_need_no_token(secured):
    client, _ = secured
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code in (200, 503)
    assert client.get("/metrics").status_code == 200
    assert client.get("/schema/openapi.json").status_code == 200
    assert client.get("/schema").status_code == 200


def test_the_openapi_document_declares_the_bearer_scheme_and_the_refusals(secured):
    client, _ = secured
    doc = client.get("/schema/openapi.json").json()
    assert doc["components"]["securitySchemes"]["BearerToken"] == {
        **doc["components"]["securitySchemes"]["BearerToken"], "type": "http", "scheme": "bearer",
    }
    assert doc["security"] == [{"BearerToken": []}]
    create = doc["paths"]["/api/profiles"]["post"]
    assert {"401", "403"} <= create["responses"].keys() and "editor" in create["description"]
    assert "admin" in doc["paths"]["/api/profiles/{profile_id}"]["delete"]["description"]
    assert doc["paths"]["/health"]["get"]["security"] == []
    for path, item in doc["paths"].items():  # each API's refusals in its own shape
        for operation in item.values():
            statuses = {"400", "401", "403", "503"} if path.startswith("/v1/") else {"401", "403"}
            for status in statuses & operation.get("responses", {}).keys():
                documented = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                expected = "OpenAIErrorBody" if path.startswith("/v1/") else "ErrorBody"
                assert documented.endswith(f"/{expected}"), (path, status, documented)
    refused = client.get("/v1/models").json()["error"]  # as documented: OpenAI's shape
    assert set(refused) >= {"message", "type", "code"}


def test_open_mode_honours_x_actor(pg_client):
    made = pg_client.post("/api/profiles", json={"name": "open"}, headers={"X-Actor": "alice"})
    assert made.status_code == 201
    events = pg_client.get("/api/events", params={"min_position": made.json()["position"]}).json()["events"]
    assert {e["actor"] for e in events if e["profile_id"] == made.json()["id"]} == {"alice"}
    assert "security" not in pg_client.get("/schema/openapi.json").json()


@pytest.mark.parametrize("value, auth", [(None, True), ("", True), ("on", True), ("off", False), ("False", False), ("0", False), ("no", False)])
def test_ledger_auth_switches_authentication(value, auth):
    from ledger.settings import Settings

    environ = {} if value is None else {"LEDGER_AUTH": value}
    assert Settings.from_env(environ).auth is auth


def test_the_token_cache_reloads_when_stale_or_told_to():
    from ledger.api.auth import TokenCache

    now, loads = [0.0], []
    cache = TokenCache(lambda: loads.append(now[0]), max_age=1.0, clock=lambda: now[0])
    assert cache.stale
    cache.refresh()
    assert not cache.stale and loads == [0.0]
    now[0] = 0.9
    assert not cache.stale
    now[0] = 1.0
    assert cache.stale
    cache.refresh()
    cache.invalidate()
    assert cache.stale and loads == [0.0, 1.0]


def test_a_reload_begun_before_an_invalidation_does_not_count_as_fresh():
    from ledger.api.auth import TokenCache

    cache: TokenCache

    def load_racing_a_revocation() -> None:
        cache.invalidate()  # a revocation lands while the tokens are being read

    cache = TokenCache(load_racing_a_revocation, max_age=60.0)
    cache.refresh()
    assert cache.stale

"""Fixtures for the API tests: the real app (ledger, read model, projection thread) over a test client."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from ledger.api.app import create_app
from ledger.api.errors import openai_path
from ledger.api.server import LedgerServer, build_server
from ledger.settings import Database, Settings

ERROR_KEYS = {"error", "detail"}

logging.getLogger("httpx").setLevel(logging.WARNING)


def make_client(url: str, *, inline_projections: bool = True, **options: Any) -> TestClient[Litestar]:
    """The app in open mode unless ``auth=True`` is given (tests/api/test_auth.py covers authentication)."""
    settings = Settings(database=Database(url), inline_projections=inline_projections)
    return TestClient(create_app(settings, **{"auth": False, **options}), base_url="http://testserver.localhost")


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient[Litestar]]:
    """The app on SQLite and on PostgreSQL."""
    with make_client(database_url) as test_client:
        yield test_client


@pytest.fixture
def pg_client(postgres_url: str) -> Iterator[TestClient[Litestar]]:
    with make_client(postgres_url) as test_client:
        yield test_client


@pytest.fixture
def client_factory(postgres_url: str) -> Callable[..., TestClient[Litestar]]:
    """Build a client with custom options (the caller enters it)."""
    return lambda **options: make_client(postgres_url, **options)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is an error with the one shape (OpenAI's under /v1), the given status and (optionally) code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert "Traceback" not in response.text
    if openai_path(response.request.url.path):  # OpenAI's shape, which its clients read
        error = body["error"]
        assert {"message", "type", "param", "code"} <= error.keys() and error["message"], body
        assert code is None or error["code"] == code, body
        return body
    assert ERROR_KEYS <= body.keys(), body
    assert isinstance(body["error"], str) and isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["error"] == code, body
    return body


def etag(profile: dict[str, Any], version: int, revision: int | None = None) -> str:
    """The ETag a profile (a body with its id) has at ``version`` (and stream version ``revision``)."""
    return f'"{version}.{revision or version}.{uuid.UUID(profile["id"]).hex}"'


def create(client: TestClient[Litestar], name: str = "alpha", **fields: Any) -> dict[str, Any]:
    body = {"name": name, "steering": {"1": 0.5}, **fields}
    response = client.post("/api/profiles", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def fresh(client: TestClient[Litestar], position: int) -> dict[str, str]:
    """Query parameters that make a read see everything up to ``position``."""
    return {"min_position": str(position)}


def forged(cursor: str, key: list[Any]) -> str:
    """A cursor the service issued, with its position replaced by ``key`` (what a client could make by hand)."""
    document = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw = json.dumps({**document, "k": key}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningServer:
    def __init__(self, server: LedgerServer, thread: threading.Thread, base_url: str, app: Any = None) -> None:
        self.server, self.thread, self.base_url, self.app = server, thread, base_url, app

    def stop(self, timeout: float = 20.0) -> None:
        self.server.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the server did not shut down"


def start_server(url: str, **options: Any) -> RunningServer:
    port = free_port()
    app = create_app(Settings(database=Database(url)), **{"auth": False, **options})
    server = build_server(app=app, settings=Settings(database=Database(url)), host="127.0.0.1", port=port, log_level="warning")
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the server failed to start"
        assert time.monotonic() < deadline, "the server did not start in time"
        time.sleep(0.02)
    return RunningServer(server, thread, f"http://127.0.0.1:{port}", app)


@pytest.fixture
def live_server(postgres_url: str) -> Iterator[RunningServer]:
    """The app served by uvicorn on a free loopback port (PostgreSQL)."""
    running = start_server(postgres_url)
    try:
        yield running
    finally:
        running.stop()

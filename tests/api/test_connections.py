"""Connections are bounded (issue 10, finding 7): a connection that never sends a request, sends its headers a
byte at a time, or stalls in its body is closed after a deadline, and connections past the cap are closed at once,
so idle clients cannot use up the server's file descriptors. Raw sockets against the real uvicorn server."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from ledger.api.app import create_app
from ledger.api.server import ConnectionLimits, build_server
from ledger.errors import ValidationError
from ledger.settings import Database, Settings
from tests.api.conftest import RunningServer, free_port

LIMITS = ConnectionLimits(max_connections=40, header_timeout=1.0, body_timeout=1.0, keep_alive=1.0)


def serve(url: str, limits: ConnectionLimits) -> RunningServer:
    port = free_port()
    settings = Settings(database=Database(url))
    app = create_app(settings, auth=False)
    server = build_server(settings, "127.0.0.1", port, app=app, limits=limits, log_level="warning")
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    return RunningServer(server, thread, f"http://127.0.0.1:{port}")


@pytest.fixture
def guarded(sqlite_url: str) -> Iterator[RunningServer]:
    running = serve(sqlite_url, LIMITS)
    try:
        yield running
    finally:
        running.stop()


def connect(running: RunningServer) -> socket.socket:
    host, port = running.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (None: still open after ``seconds``)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while True:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
    except (TimeoutError, socket.timeout):
        return None
    except ConnectionResetError:
        return time.monotonic() - started


def test_a_connection_that_sends_nothing_is_closed_after_the_header_deadline(guarded):
    with connect(guarded) as sock:
        assert (closed_within(sock, 5) or 99) < 3


def test_headers_sent_a_byte_at_a_time_are_cut_off(guarded):
    with connect(guarded) as sock:
        started = time.monotonic()
        request = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 200
        closed = False
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
            if time.monotonic() - started > 6:
                break
        assert closed or closed_within(sock, 3) is not None
        assert time.monotonic() - started < 6


def test_a_body_that_stalls_is_cut_off(guarded):
    with connect(guarded) as sock:
        sock.sendall(b"POST /api/profiles HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"name\": ")
        assert (closed_within(sock, 5) or 99) < 3


def test_a_keep_alive_connection_serves_requests_and_then_idles_out(guarded):
    with connect(guarded) as sock:
        for _ in range(3):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(0.5)  # within the keep-alive and header deadlines
        assert (closed_within(sock, 5) or 99) < 3


def closed_now(socks: list[socket.socket], wait: float = 0.3) -> list[socket.socket]:
    """Those of ``socks`` the server has closed (looked at all at once)."""
    time.sleep(wait)
    readable, _, _ = select.select(socks, [], [], 0)
    closed = []
    for sock in readable:
        try:
            if sock.recv(65536, socket.MSG_PEEK) == b"":
                closed.append(sock)
        except ConnectionResetError:
            closed.append(sock)
    return closed


def test_at_the_cap_the_longest_idle_connection_makes_room_and_a_new_client_is_served(sqlite_url):
    """Finding 7 at a small scale: idle connections past the cap (40) cannot lock a new client out."""
    running = serve(sqlite_url, ConnectionLimits(max_connections=40, header_timeout=30, body_timeout=30))
    held = []
    try:
        for _ in range(60):
            held.append(connect(running))
            time.sleep(0.005)
        closed = closed_now(held)
        assert len(closed) >= 15 and set(closed) <= set(held[:25])  # the oldest idle ones made room
        started = time.monotonic()
        assert httpx.get(f"{running.base_url}/health", timeout=5).status_code == 200
        assert time.monotonic() - started < 0.5  # at once: no waiting for a deadline to free a slot
        assert len(running.server.server_state.connections) <= 41
    finally:
        for sock in held:
            sock.close()
        running.stop()


def test_busy_connections_are_never_closed_to_make_room(sqlite_url):
    running = serve(sqlite_url, ConnectionLimits(max_connections=3, header_timeout=5, body_timeout=5))
    try:
        busy = []
        for _ in range(3):  # each sends its headers and part of its body: busy with a request, not idle
            sock = connect(running)
            sock.sendall(b"POST /api/profiles HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{")
            busy.append(sock)
        time.sleep(0.2)
        newcomer = connect(running)
        assert closed_within(newcomer, 1) is not None  # refused: nobody idle to make room
        assert all(closed_within(sock, 0.05) is None for sock in busy)
        for sock in busy + [newcomer]:
            sock.close()
    finally:
        running.stop()


def test_limits_come_from_the_environment():
    limits = ConnectionLimits.from_env(
        {"LEDGER_MAX_CONNECTIONS": "500", "LEDGER_HEADER_TIMEOUT": "2.5", "LEDGER_MAX_STREAMS": "7"}
    )
    assert (limits.max_connections, limits.header_timeout, limits.max_streams) == (500, 2.5, 7)
    assert limits.resolved().max_connections <= 500
    with pytest.raises(ValidationError, match="LEDGER_BODY_TIMEOUT"):
        ConnectionLimits.from_env({"LEDGER_BODY_TIMEOUT": "soon"})


def test_headers_past_the_size_cap_are_answered_431_and_the_connection_closed(guarded):
    with connect(guarded) as sock:  # within the cap: answered
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    with connect(guarded) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
        answer = b""
        try:
            for _ in range(1000):  # 1 MB at most, in the pieces a client sends: refused long before
                sock.sendall(b"a" * 1000)
                if select.select([sock], [], [], 0.001)[0]:  # the answer is in: read it before a reset can drop it
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert answer.endswith(b'{"error":"request_headers_too_large",'
                               b'"detail":"the request line and headers are too large"}')
    with connect(guarded) as sock:  # the whole block in one piece
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n"
                     + b"".join(b"X-%d: %s\r\n" % (n, b"a" * 100) for n in range(1000)) + b"\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")
    with connect(guarded) as sock:  # behind an answer still being sent: an event stream
        sock.sendall(b"GET /api/events/stream HTTP/1.1\r\nHost: localhost\r\n\r\nGET /health HTTP/1.1\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for n in range(2000):  # 200 kB of header lines, at most
                sock.sendall(b"X-%d: %s\r\n" % (n, b"a" * 100))
        assert b"HTTP/1.1 431 " in read_until_closed(sock)
    assert httpx.get(f"{guarded.base_url}/health").status_code == 200


def read_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_head_is_answered_as_get_without_the_body(guarded):
    with httpx.Client(base_url=guarded.base_url, timeout=10) as http:
        for path in ("/health", "/ready", "/api/profiles", "/api/events/stream"):
            head = http.head(path)
            assert head.status_code == 200 and head.content == b"", (path, head.status_code)
            if path != "/api/events/stream":  # a stream has no length
                assert head.headers["content-length"] == str(len(http.get(path).content)), path
        assert http.head("/api/profiles/nobody").status_code == 404
        assert http.get("/health").status_code == 200  # the connection serves on

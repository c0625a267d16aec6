"""Serving the API with uvicorn (``ledger serve --host --port`` calls :func:`serve`).

Connections are bounded (:class:`ConnectionLimits`): uvicorn closes a keep-alive connection idle between requests
after ``timeout_keep_alive``, but not one that never sends a request, sends its headers a byte at a time, or stalls
in its body, and it accepts any number of them (each a file descriptor). :func:`guarded_protocol` adds what it
lacks to its httptools protocol: a deadline for a request's headers (from the connection's start or the previous
response), one for its body, a cap on the size of a request's headers (past it: 431, and the connection is closed;
httptools would buffer any size), and a cap on open connections: a connection past it closes the one that has waited
longest without sending a request (so idle connections cannot lock a new client out), or, when every other
connection is busy with a request, is itself closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import resource
import socket
import threading
from dataclasses import dataclass, fields, replace
from types import FrameType
from typing import Any

import uvicorn
from litestar import Litestar
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ledger.api.app import create_app
from ledger.api.bodies import well_formed_host
from ledger.api.observability import access_logged
from ledger.api.runtime import Runtime
from ledger.api.steering_runtime import load_engine
from ledger.errors import ValidationError
from ledger.settings import Settings

log = logging.getLogger("ledger.api")

GRACEFUL_SHUTDOWN_SECONDS = 10
GENERATION_GRACE_MAX = GRACEFUL_SHUTDOWN_SECONDS - 2
"""At shutdown, running generations may finish within ``Settings.generation_grace`` (at most this); then they are
cut short (recorded as ``partial``) and answered within uvicorn's grace, after which it cancels what still runs."""
FD_RESERVE = 256
"""File descriptors kept free of client connections: the database pool, the model's files, logs."""


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client connection may hold. Environment: ``LEDGER_MAX_CONNECTIONS``, ``LEDGER_HEADER_TIMEOUT``,
    ``LEDGER_BODY_TIMEOUT``, ``LEDGER_KEEP_ALIVE``, ``LEDGER_MAX_STREAMS``."""

    max_connections: int | None = None
    """Open client connections at most; default: 10,000 or what the file-descriptor limit leaves. Past it, the
    connection that has waited longest for its request's headers is closed to make room (or the new one, when
    every connection is busy with a request)."""
    header_timeout: float = 10.0
    """Seconds from a connection's start (or its previous response) until its request's headers are in. Each
    connection gets between 0.75× and 1× of it, at random, so connections opened together are not all closed
    together (and their clients do not all come back at once)."""
    body_timeout: float = 30.0
    """Seconds from a request's headers until its whole body is in."""
    max_header_bytes: int = 65_536
    """Bytes a request's line and headers may take; past it the answer is 431 and the connection is closed."""
    keep_alive: float = 5.0
    """Seconds a connection may sit idle after a response (uvicorn's ``timeout_keep_alive``)."""
    max_streams: int = 100
    """Event streams (``/api/events/stream``) served at once."""

    @classmethod
    def from_env(cls, environ: Any = os.environ) -> ConnectionLimits:
        """The limits the environment sets (``LEDGER_`` and a field's name in capitals); the defaults for the rest."""
        given: dict[str, Any] = {}
        for field in fields(cls):
            name = f"LEDGER_{field.name.upper()}"
            raw = environ.get(name, "")
            if not raw.strip():
                continue
            try:  # a whole number, or seconds where the default is a number of seconds
                value = given[field.name] = (float if isinstance(field.default, float) else int)(raw)
            except ValueError:
                value = 0
            if not (math.isfinite(value) and value > 0):  # the operator's setting: a refusal (exit 1), before
                raise ValidationError(f"{name} must be a positive number (got {raw!r})", field=name)  # ... listening
        return cls(**given)

    def resolved(self) -> ConnectionLimits:
        """With ``max_connections`` fitted to the file descriptors this process may open (the soft limit is raised
        to the hard one first)."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
                soft = wanted
        room = max(soft - FD_RESERVE, 16)
        cap = min(self.max_connections or 10_000, room)
        return replace(self, max_connections=cap)


_TOO_LARGE = b'{"error":"request_headers_too_large","detail":"the request line and headers are too large"}'
HEADERS_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                     b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TOO_LARGE), _TOO_LARGE))


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a header deadline, a body deadline and a cap on open connections."""

    waiting: dict[GuardedHttpToolsProtocol, None] = {}  # connections awaiting a request's headers, oldest first
    last_warning = [0.0]

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _phase: str | None = None  # "headers", "body" or None (a request is being answered)
        _header_bytes = 0  # of the request being read: its line and headers parsed so far
        _held_bytes = 0  # received while they were not whole yet (httptools holds a header until it is)
        _reading_headers = _too_large = False

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = self._held_bytes = 0
            self._reading_headers = True

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if self._header_bytes > limits.max_header_bytes:
                self._too_large = True
                raise ValueError("headers too large")  # stops the parser; uvicorn then calls send_400_response

        def send_400_response(self, msg: str) -> None:
            if not self._too_large:
                super().send_400_response(msg)
                return
            self._expect(None, None)
            self.transport.write(HEADERS_TOO_LARGE)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._reading_headers and not self.transport.is_closing():
                self._held_bytes += len(data)
                if self._held_bytes > limits.max_header_bytes:  # one header that never ends
                    self._too_large = True
                    self.send_400_response("")

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.access_log = False  # the app's outermost layer logs each request once it ended (access_logged)
            if limits.max_connections is not None and len(self.connections) > limits.max_connections:
                idlest = next((other for other in waiting if not other.transport.is_closing()), None)
                if idlest is None:  # every other connection is busy with a request: refuse this one
                    if self.loop.time() - last_warning[0] > 10:
                        last_warning[0] = self.loop.time()
                        log.warning("connections refused: %d are open (the limit)", limits.max_connections)
                    transport.abort()
                    return
                idlest._expect(None, None)
                idlest.transport.abort()  # make room: the one that has waited longest without sending a request
            self._expect("headers", limits.header_timeout * random.uniform(0.75, 1.0))

        def connection_lost(self, exc: Exception | None) -> None:
            self._expect(None, None)
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            self._reading_headers = False
            super().on_headers_complete()
            self._expect("body", limits.body_timeout)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._expect(None, None)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self._phase is None:
                self._expect("headers", limits.header_timeout * random.uniform(0.75, 1.0))

        def _expect(self, phase: str | None, seconds: float | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            waiting.pop(self, None)
            self._phase = phase
            if phase == "headers" and (self.cycle is None or self.cycle.response_complete):
                waiting[self] = None  # idle: the newest at the end
            if phase is not None and seconds is not None:
                self._deadline = self.loop.call_later(seconds, self._deadline_passed)

        def _deadline_passed(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self._phase == "body" or (
                self._phase == "headers" and (self.cycle is None or self.cycle.response_complete)
            ):
                self.transport.close()

    return GuardedHttpToolsProtocol


class LedgerServer(uvicorn.Server):
    """A uvicorn server that tells open event streams to end as soon as shutdown begins.

    (uvicorn waits for open responses before running the app's shutdown, so the streams must learn of it
    from the server.)
    """

    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self.runtime: Runtime | None = getattr(app.state, "runtime", None)
        self.shutdown_begun = self.runtime.shutdown if self.runtime is not None else threading.Event()
        if self.runtime is not None and self.runtime.settings.generation_grace > GENERATION_GRACE_MAX:
            log.warning("LEDGER_GENERATION_GRACE=%s is past the most, %s s (the server's own grace is %s s); using %s",
                        self.runtime.settings.generation_grace, GENERATION_GRACE_MAX, GRACEFUL_SHUTDOWN_SECONDS,
                        GENERATION_GRACE_MAX)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if sockets is not None and self.started:  # uvicorn says where it listens only on sockets it bound itself
            self._log_started_message(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._begin_shutdown()
        super().handle_exit(sig, frame)

    def stop(self) -> None:
        """Begin a graceful shutdown (from any thread)."""
        self._begin_shutdown()
        self.should_exit = True

    def _begin_shutdown(self) -> None:
        if self.runtime is not None and not self.shutdown_begun.is_set():
            self.runtime.begin_shutdown(min(self.runtime.settings.generation_grace, GENERATION_GRACE_MAX))
        self.shutdown_begun.set()


def head_as_get(app: ASGIApp) -> ASGIApp:
    """HEAD answered as GET is, without the body (RFC 9110: what answers GET answers HEAD; load balancers probe
    with it): the app sees a GET, and the answer ends at its first body message (uvicorn writes no body for a
    HEAD); an event stream then finds its client gone."""

    async def answered(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await app(scope, receive, send)
            return
        ended = False

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if ended:
                return
            if message["type"] == "http.response.body":
                ended, message = True, {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await app({**scope, "method": "GET"}, receive, headers_only)

    return answered


def build_server(
    settings: Settings | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    app: Litestar | None = None,
    limits: ConnectionLimits | None = None,
    **uvicorn_options: Any,
) -> LedgerServer:
    app = app or create_app(settings)
    limits = (limits or ConnectionLimits()).resolved()
    runtime: Runtime | None = getattr(app.state, "runtime", None)
    if runtime is not None:
        runtime.options.sse_max_streams = limits.max_streams
    options = {"log_level": "info", "http": guarded_protocol(limits), "timeout_keep_alive": limits.keep_alive}
    config = uvicorn.Config(
        access_logged(well_formed_host(head_as_get(app))), host=host, port=port,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **{**options, **uvicorn_options}
    )
    return LedgerServer(config, app)


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """The server's sockets, bound before anything slow (the model) or lasting (a new database) is made: an address
    taken or not this machine's is one refusal at once (uvicorn said it only once the model was loaded, after
    logging that it listened, and exited 3). Every address ``host`` names, as asyncio's ``create_server`` (which
    uvicorn binds with) takes them: ``localhost`` is 127.0.0.1 and ::1, and an IPv6 socket is IPv6 only."""
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(
                socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)):
            bound.append(listening := socket.socket(family, kind, proto))
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listening.bind(address)
    except OSError as error:
        for listening in bound:
            listening.close()
        raise ValidationError(f"cannot listen on {host}:{port}: {error.strerror or error}", field="port") from None
    return bound


def serve_app(app: Litestar, host: str = "127.0.0.1", port: int = 8000, *, access_log: bool = True,
              limits: ConnectionLimits | None = None, bound: list[socket.socket] | None = None) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, as ``ledger serve`` does: one process, uvicorn on uvloop and httptools
    (uvicorn's ``auto`` picks them when installed; ``uvicorn[standard]`` installs them). The benchmarks' baseline
    app is served through here too, so both run under the same server settings.

    ``access_log=False`` drops uvicorn's line per request (about a tenth of the cost of a cached read).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    limits = limits or ConnectionLimits.from_env()
    bound = bound or listening_sockets(host, port)
    build_server(None, host, port, app=app, access_log=access_log, limits=limits).run(sockets=bound)


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    run_projections: bool = True,
    access_log: bool = True,
    bound: list[socket.socket] | None = None,
) -> None:
    """Run the API until SIGINT/SIGTERM (on ``bound``, :func:`listening_sockets`, if given)."""
    limits = ConnectionLimits.from_env()
    bound = bound or listening_sockets(host, port)
    # loaded before it listens: a model or SAE it cannot use stops it in one line (a SteeringError), not a traceback
    app = create_app(settings, run_projections=run_projections, engine=load_engine(settings))
    shown = f"[{host}]" if ":" in host else host
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.info(
        "ledger API listening on http://%s:%d (database %s; OpenAPI at /schema)", shown, port, settings.database.display()
    )
    serve_app(app, host, port, access_log=access_log, limits=limits, bound=bound)

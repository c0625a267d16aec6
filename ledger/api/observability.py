"""Request context and metrics: an ASGI middleware and the Prometheus exposition (prometheus_client).

The middleware gives every request a correlation id (``X-Request-ID`` / ``X-Correlation-ID``, generated when
missing, echoed on the response) and counts requests and their latency by route template and status.
Each app has its own ``CollectorRegistry``, so several apps in one process (tests) never share counts.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from litestar._asgi.utils import wrap_in_exception_handler
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from ledger.access import TOKEN_PREFIX
from ledger.api.auth import SAFE_METHODS
from projections.shares import reader

CORRELATION_HEADERS = (b"x-request-id", b"x-correlation-id")
DEPARTED = "ledger.departed"
"""The scope key of a ``threading.Event`` set when the client went away (``ledger.api.chat.watch_for_departure``):
its request is counted as 499 whatever its response began with."""
ANSWERED = "ledger.answered"
"""The scope key of the status a request ended with when its response had begun otherwise (a stream that ended
in an error event): the one the request metrics count."""
ACCESS_LOG = logging.getLogger("uvicorn.access")
"""uvicorn's access log, in its format, but written by :func:`access_logged` (uvicorn's own line is switched off in
``ledger.api.server``)."""
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # a UUID, a hex trace id, a W3C traceparent, "req-42"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Gauge = tuple[str, str, dict[str, str], float]
"""A sample read at scrape time: (name, help, labels, value)."""


class Metrics:
    """This app's metrics in its own registry, rendered in the Prometheus text format (0.0.4)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "ledger_http_requests", "HTTP requests answered, by method, route and status.",
            ("method", "route", "status"), registry=self.registry,
        )
        self._latency = Histogram(
            "ledger_http_request_duration_seconds", "HTTP request latency, by method and route.",
            ("method", "route"), buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.saves = Counter(
            "ledger_saves", "Saves made by this process (a command's events, recorded together).",
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self.streams_open = 0
        self._engine = _EngineCollector()
        self.registry.register(self._engine)

    def try_open_stream(self, limit: int) -> bool:
        """Count one more event stream, unless ``limit`` are open already."""
        with self._lock:
            if self.streams_open >= limit:
                return False
            self.streams_open += 1
            return True

    def stream_closed(self) -> None:
        with self._lock:
            self.streams_open -= 1

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.labels(method, route, str(status)).inc()
        self._latency.labels(method, route).observe(seconds)

    def follow_engine(self, stats: Callable[[], Any] | None) -> None:
        """Expose the generation scheduler's state (``SteeringEngine.stats``), or stop exposing it (None)."""
        self._engine.stats = stats

    def render(self, gauges: Iterable[Gauge] = ()) -> str:
        """The exposition text; ``gauges`` adds samples read at scrape time."""
        extra = CollectorRegistry(auto_describe=False)
        extra.register(_Gauges(list(gauges)))
        return (generate_latest(self.registry) + generate_latest(extra)).decode()


class _Gauges(Collector):
    def __init__(self, gauges: list[Gauge]) -> None:
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for name, help_text, labels, value in self.gauges:
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(name, help_text, labels=list(labels))
            family.add_metric([labels[key] for key in labels], value)
        yield from families.values()


class _EngineCollector(Collector):
    """The continuous-batching scheduler, read at scrape time (nothing when no model is loaded)."""

    def __init__(self) -> None:
        self.stats: Callable[[], Any] | None = None

    def collect(self) -> Iterator[Metric]:
        read = self.stats
        if read is None:
            return
        stats = read()
        gauges = (
            ("ledger_generation_queue_depth", "Generation requests waiting for a row.", stats.queued),
            ("ledger_generation_running_batch_size", "Generation requests in the running batch.", stats.running),
            ("ledger_generation_max_batch_size", "The most requests the batch runs at once.", stats.max_batch),
            ("ledger_generation_max_queue", "The most requests that may wait.", stats.max_queue),
            ("ledger_generation_prefill_tokens_per_second", "Prompt tokens run per second (last 10 s).",
             stats.prefill_tokens_per_s),
            ("ledger_generation_decode_tokens_per_second", "Tokens generated per second (last 10 s).",
             stats.decode_tokens_per_s),
        )
        for name, help_text, value in gauges:
            yield GaugeMetricFamily(name, help_text, value=value)
        counters = (
            ("ledger_generation_steps", "Forward steps run by the scheduler.", stats.steps),
            ("ledger_generation_prefill_tokens", "Prompt tokens run.", stats.prefill_tokens),
            ("ledger_generation_decode_tokens", "Tokens generated.", stats.decode_tokens),
            ("ledger_generation_requests_refused", "Requests refused because the queue was full.", stats.refused),
            ("ledger_generation_requests_cancelled", "Requests given up by their caller.", stats.cancelled),
            ("ledger_generation_requests_finished", "Requests finished.", stats.finished),
            ("ledger_generation_requests_failed", "Requests ended by an error in a forward step.", stats.failed),
        )
        for name, help_text, value in counters:
            yield CounterMetricFamily(name, help_text, value=value)
        yield HistogramMetricFamily(
            "ledger_generation_time_to_first_token_seconds",
            "From a request's submission to its first generated token.",
            buckets=[*((repr(float(b)), c) for b, c in stats.ttft_buckets), ("+Inf", stats.ttft_count)],
            sum_value=stats.ttft_sum_s,
        )


def correlation_id_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    found = dict(headers)
    for name in CORRELATION_HEADERS:
        raw = found.get(name)
        if raw:
            value = raw.decode("latin-1").strip()
            if _SAFE_ID.match(value):
                return value
    return uuid.uuid4().hex


def request_context_middleware(metrics: Metrics) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware factory: correlation id in and out, request metrics."""

    def middleware(app: ASGIApp) -> ASGIApp:
        # what a layer inside raises (a route's own middleware: the console's sign-in and CSRF checks) is answered
        # here, as the app would answer it outside, so the status counted is the one sent (it was counted 500)
        answering = wrap_in_exception_handler(app)

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            correlation_id = correlation_id_of(scope.get("headers", ()))
            scope["ledger.correlation_id"] = correlation_id  # type: ignore[typeddict-unknown-key]
            # whose share of the connections a read's queries take (the guard names a token's holder); a
            # command's are not counted: writes have bounds of their own, and take no costly query
            reader.set(f"address {(scope.get('client') or ('?',))[0]}" if scope.get("method") in SAFE_METHODS else None)
            started = time.perf_counter()
            status = 500

            async def send_wrapper(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    headers = list(message.get("headers", ()))
                    headers.append((b"x-request-id", correlation_id.encode("latin-1")))
                    message = {**message, "headers": headers}  # type: ignore[typeddict-item]
                await send(message)

            try:
                await answering(scope, receive, send_wrapper)
            finally:
                route = scope.get("path_template") or "unmatched"
                metrics.observe_request(scope.get("method", "GET"), str(route), ended_with(scope, status),
                                        time.perf_counter() - started)

        return wrapped

    return middleware


def ended_with(scope: Any, status: int) -> int:
    """The status a request whose response began with ``status`` ended with: 499 when its client went away first,
    the error a stream ended in."""
    departed = scope.get(DEPARTED)
    return 499 if departed is not None and departed.is_set() else scope.get(ANSWERED, status)


_TOKEN_SECRET = re.compile(rf"({re.escape(TOKEN_PREFIX)}[0-9a-fA-F]{{32}}_)[A-Za-z0-9_-]+")  # (URL-safe base64)


def without_secrets(path: str) -> str:
    """A request's path and query as logged: the secret of a token sent where none belongs (``?access_token=``,
    refused) is not written down; its id is."""
    return _TOKEN_SECRET.sub(r"\1[redacted]", path) if TOKEN_PREFIX in path else path


def access_logged(app: ASGIApp) -> ASGIApp:
    """uvicorn's line per request (``ledger serve --access-log``, the default), written when the request ended (uvicorn
    writes it when the response begins, and never for a client that left before it), with the status it ended
    with, as the metrics count it. The served app's outermost layer: a request refused before the app is logged too."""

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (ACCESS_LOG.isEnabledFor(logging.INFO) and ACCESS_LOG.hasHandlers()):
            await app(scope, receive, send)
            return
        status = 500

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, noting)
        finally:
            ACCESS_LOG.info('%s - "%s %s HTTP/%s" %d', get_client_addr(scope), scope["method"],
                            without_secrets(get_path_with_query_string(scope)), scope["http_version"],
                            ended_with(scope, status))

    return logged


def correlation_id(scope: Any) -> str:
    """The correlation id the middleware gave this request."""
    return scope.get("ledger.correlation_id") or uuid.uuid4().hex

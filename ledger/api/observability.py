"""Request context and metrics: an ASGI middleware and a small hand-rolled Prometheus exposition.

The middleware gives every request a correlation id (``X-Request-ID`` / ``X-Correlation-ID``, generated when
missing, echoed on the response) and counts requests and their latency by route template and status.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

CORRELATION_HEADERS = (b"x-request-id", b"x-correlation-id")
CORRELATION_ID_MAX = 200
_SAFE_ID = re.compile(r"^[\x21-\x7e]{1,200}$")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters and histograms, thread-safe, rendered in the Prometheus text format (0.0.4)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str], list[float]] = {}
        self._latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self._latency_count: dict[tuple[str, str], int] = defaultdict(int)
        self.events_appended = 0
        self.last_appended_position = 0
        self.streams_open = 0

    def stream_opened(self) -> None:
        with self._lock:
            self.streams_open += 1

    def stream_closed(self) -> None:
        with self._lock:
            self.streams_open -= 1

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, str(status))] += 1
            key = (method, route)
            buckets = self._latency.setdefault(key, [0.0] * len(LATENCY_BUCKETS))
            for index, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    buckets[index] += 1
            self._latency_sum[key] += seconds
            self._latency_count[key] += 1

    def observe_append(self, position: int) -> None:
        """Called after every save in this process."""
        with self._lock:
            self.events_appended += 1
            self.last_appended_position = max(self.last_appended_position, position)

    def render(self, gauges: Iterable[tuple[str, str, dict[str, str], float]] = ()) -> str:
        """The exposition text; ``gauges`` adds (name, help, labels, value) samples read at scrape time."""
        lines: list[str] = []
        with self._lock:
            lines += [
                "# HELP ledger_http_requests_total HTTP requests answered, by method, route and status.",
                "# TYPE ledger_http_requests_total counter",
            ]
            for (method, route, status), count in sorted(self._requests.items()):
                labels = _labels({"method": method, "route": route, "status": status})
                lines.append(f"ledger_http_requests_total{labels} {count}")
            lines += [
                "# HELP ledger_http_request_duration_seconds HTTP request latency, by method and route.",
                "# TYPE ledger_http_request_duration_seconds histogram",
            ]
            for (method, route), buckets in sorted(self._latency.items()):
                base = {"method": method, "route": route}
                for bound, count in zip(LATENCY_BUCKETS, buckets):
                    lines.append(
                        f"ledger_http_request_duration_seconds_bucket{_labels({**base, 'le': _num(bound)})} {_num(count)}"
                    )
                total = self._latency_count[(method, route)]
                lines.append(f"ledger_http_request_duration_seconds_bucket{_labels({**base, 'le': '+Inf'})} {total}")
                lines.append(
                    f"ledger_http_request_duration_seconds_sum{_labels(base)} {_num(self._latency_sum[(method, route)])}"
                )
                lines.append(f"ledger_http_request_duration_seconds_count{_labels(base)} {total}")
            lines += [
                "# HELP ledger_events_appended_total Saves (commands that recorded events) made by this process.",
                "# TYPE ledger_events_appended_total counter",
                f"ledger_events_appended_total {self.events_appended}",
            ]
        declared: set[str] = set()
        for name, help_text, labels, value in gauges:
            if name not in declared:
                declared.add(name)
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines.append(f"{name}{_labels(labels)} {_num(value)}")
        return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return repr(value) if isinstance(value, float) else str(value)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (
        f'{key}="{str(value).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), "")}"'
        for key, value in labels.items()
    )
    return "{" + ",".join(escaped) + "}"


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
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            correlation_id = correlation_id_of(scope.get("headers", ()))
            scope["ledger.correlation_id"] = correlation_id  # type: ignore[typeddict-unknown-key]
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
                await app(scope, receive, send_wrapper)
            finally:
                route = scope.get("path_template") or "unmatched"
                metrics.observe_request(scope.get("method", "GET"), str(route), status, time.perf_counter() - started)

        return wrapped

    return middleware


def correlation_id(scope: Any) -> str:
    """The correlation id the middleware gave this request."""
    return scope.get("ledger.correlation_id") or uuid.uuid4().hex

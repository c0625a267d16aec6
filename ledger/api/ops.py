"""Operations: ``/health`` (the process is up), ``/ready`` (database, writes and projections), ``/metrics``."""

from __future__ import annotations

import threading
import time

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from ledger.api.auth import PUBLIC
from ledger.api.observability import Gauge
from ledger.api.runtime import Runtime
from ledger.api.schemas import Health, ProjectionStatus, Readiness
from ledger.outages import pool_exhausted, waited_for_a_connection
from ledger.write_path import probe_writes

PROMETHEUS_TEXT = "text/plain; version=0.0.4"  # Litestar adds "; charset=utf-8" to every text/ type
CATCH_UP_SECONDS = 1.0  # how long /ready gives lagging read models to reach the head it read
WRITE_STALL_SECONDS = 5.0  # a save waiting longer than this means writes are not committing
OUT_OF_SPACE_HELD_SECONDS = 10.0  # not ready this long after a write failed for want of space


def _progress(runtime: Runtime) -> tuple[int, dict[str, int], dict[str, int]]:
    """The log's head, the position each read model has applied (both of one moment: an event appended meanwhile
    is neither a lag nor a read model past the head), and how many events each parked."""
    reads = runtime.read_model
    positions, head = reads.positions_and_head()
    return int(head), dict(positions), reads.store.parked_counts()


def _catches_up(runtime: Runtime, position: int) -> bool:
    """Every read model applies ``position`` within :data:`CATCH_UP_SECONDS` (under write load, one applied by the
    projection runner rather than by its command lags for a moment: no reason to take the server out)."""
    applied = threading.Event()
    withdraw = runtime.progress.when_reached(position, applied.set)
    if applied.wait(CATCH_UP_SECONDS):
        return True
    withdraw()
    return applied.is_set()  # (applied as the wait ended)


def _write_problem(runtime: Runtime) -> str | None:
    """Why writes cannot commit now, or None: the log found tampered with, a save of this process waiting too
    long, or (PostgreSQL) the events table's lock not obtainable within a short timeout (another process holds
    it)."""
    tampered = getattr(runtime.ledger.events, "tampered", None)
    if tampered is not None:
        return f"the log was tampered with: this server records nothing until the database is restored ({tampered})"
    full = runtime.out_of_space_at
    if full is not None and time.monotonic() - full < OUT_OF_SPACE_HELD_SECONDS:  # (the probe writes nothing)
        return "the database has no room to write (its disk is full): commands fail until space is freed"
    recorder = runtime.ledger.recorder
    group_commit = getattr(recorder, "group_commit", None)  # PostgreSQL's
    if group_commit is not None and (waited := group_commit.pending_seconds()) > WRITE_STALL_SECONDS:
        return f"writes are not committing: a save has waited {waited:.0f} s"
    return probe_writes(recorder)


class OpsController(Controller):
    path = "/"
    tags = ["operations"]
    opt = PUBLIC

    @get("/health", summary="The process is up")
    async def health(self) -> Health:
        return Health(status="ok")

    @get(
        "/ready",
        summary="The database answers, writes commit and the projections have caught up (503 otherwise)",
        sync_to_thread=True,
        responses={503: ResponseSpec(Readiness, description="Not ready: the database or a projection lags")},
    )
    def ready(self, runtime: NamedDependency[Runtime]) -> Response[Readiness]:
        runner_alive = runtime.runner.is_alive() if runtime.runner is not None else None
        try:
            head, positions, parked = _progress(runtime)
            write_problem = _write_problem(runtime)
        except Exception as error:  # noqa: BLE001 - any failure to reach the database means "not ready"
            busy = waited_for_a_connection(error) and pool_exhausted(runtime.ledger.recorder.datastore)
            body = Readiness(
                status="not_ready",
                database=busy,
                log_position=None,
                projections=[],
                runner_alive=runner_alive,
                detail="busy: every database connection of this server is in use" if busy
                else f"database unreachable: {type(error).__name__}",
            )
            return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE)
        projections = [
            ProjectionStatus(name=name, position=position, lag=max(head - position, 0), parked=parked.get(name, 0))
            for name, position in sorted(positions.items())
        ]
        lagging = [p.name for p in projections if p.lag > runtime.options.ready_max_lag]
        if lagging and _catches_up(runtime, head):  # events appended a moment ago, applied by now: no lag
            lagging = []
        problems = [write_problem] if write_problem is not None else []
        if lagging:
            problems.append(f"projections behind the log: {', '.join(lagging)}")
        ahead = [name for name, position in positions.items() if position > head]
        if ahead:  # the log lost events the read models had seen (cut short, or restored from an older backup)
            problems.append(f"read models past the log's end (position {head}): {', '.join(sorted(ahead))}")
        if runner_alive is False:
            problems.append("the projection runner has stopped")
        # Parked events do not make the server unready (every read model is still up to date with the rest of
        # the log, and taking every server out of service for one event is what parking avoids): they are named.
        notes = [f"{p.name} parked {p.parked} event(s) it cannot apply (see `ledger projections`)" for p in projections if p.parked]
        body = Readiness(
            status="not_ready" if problems else "ready",
            database=True,
            log_position=head,
            projections=projections,
            runner_alive=runner_alive,
            detail="; ".join(problems + notes) or None,
        )
        return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE if problems else HTTP_200_OK)

    @get(
        "/metrics",
        summary="Prometheus metrics (text exposition format 0.0.4)",
        sync_to_thread=True,
        media_type=PROMETHEUS_TEXT,
    )
    def metrics(self, runtime: NamedDependency[Runtime]) -> Response[str]:
        try:
            head, positions, parked = _progress(runtime)
        except Exception:  # noqa: BLE001
            gauges: list[Gauge] = [("ledger_database_up", "1 when the database answers.", {}, 0)]
        else:
            gauges = [("ledger_database_up", "1 when the database answers.", {}, 1),
                      ("ledger_log_position", "The last position recorded in the event log.", {}, head)]
            for name, position in sorted(positions.items()):
                labels = {"projection": name}
                gauges += [
                    ("ledger_projection_position", "The log position a read model has applied.", labels, position),
                    ("ledger_projection_lag", "How many positions a read model is behind the log.", labels,
                     max(head - position, 0)),
                    ("ledger_projection_parked_events", "Events a read model could not apply and set aside.", labels,
                     parked.get(name, 0)),
                ]
        gauges.append(("ledger_sse_streams_open", "Event streams being served now.", {}, runtime.metrics.streams_open))
        return Response(runtime.metrics.render(gauges), media_type=PROMETHEUS_TEXT)

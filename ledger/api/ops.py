"""Operations: ``/health`` (the process is up), ``/ready`` (database and projections), ``/metrics``."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from ledger.api.auth import PUBLIC
from ledger.api.deps import Services
from ledger.api.schemas import Health, ProjectionStatus, Readiness

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def _progress(services: Services) -> tuple[int, dict[str, int]]:
    reads = services.read_model
    return int(reads.log_position()), dict(reads.positions())


class OpsController(Controller):
    path = "/"
    tags = ["operations"]
    include_in_schema = True
    opt = PUBLIC

    @get("/health", summary="The process is up")
    async def health(self) -> Health:
        return Health(status="ok")

    @get(
        "/ready",
        summary="The database answers and the projections have caught up (503 otherwise)",
        sync_to_thread=True,
        responses={503: ResponseSpec(Readiness, description="Not ready: the database or a projection lags")},
    )
    def ready(self, services: NamedDependency[Services]) -> Response[Readiness]:
        runner_alive = services.runner.is_alive() if services.runner is not None else None
        try:
            head, positions = _progress(services)
        except Exception as error:  # noqa: BLE001 - any failure to reach the database means "not ready"
            body = Readiness(
                status="not_ready",
                database=False,
                log_position=None,
                projections=[],
                runner_alive=runner_alive,
                detail=f"database unreachable: {type(error).__name__}",
            )
            return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE)
        projections = [
            ProjectionStatus(name=name, position=position, lag=max(head - position, 0))
            for name, position in sorted(positions.items())
        ]
        lagging = [p.name for p in projections if p.lag > services.options.ready_max_lag]
        problems = []
        if lagging:
            problems.append(f"projections behind the log: {', '.join(lagging)}")
        if runner_alive is False:
            problems.append("the projection runner has stopped")
        body = Readiness(
            status="not_ready" if problems else "ready",
            database=True,
            log_position=head,
            projections=projections,
            runner_alive=runner_alive,
            detail="; ".join(problems) or None,
        )
        return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE if problems else HTTP_200_OK)

    @get(
        "/metrics",
        summary="Prometheus metrics (text exposition format 0.0.4)",
        sync_to_thread=True,
        media_type=PROMETHEUS_TEXT,
    )
    def metrics(self, services: NamedDependency[Services]) -> Response[str]:
        gauges: list[tuple[str, str, dict[str, str], float]] = []
        try:
            head, positions = _progress(services)
        except Exception:  # noqa: BLE001
            gauges.append(("ledger_database_up", "1 when the database answers.", {}, 0))
        else:
            gauges.append(("ledger_database_up", "1 when the database answers.", {}, 1))
            gauges.append(("ledger_log_position", "The last position recorded in the event log.", {}, head))
            for name, position in sorted(positions.items()):
                labels = {"projection": name}
                gauges.append(("ledger_projection_position", "The log position a read model has applied.", labels, position))
                gauges.append(
                    ("ledger_projection_lag", "How many positions a read model is behind the log.", labels, max(head - position, 0))
                )
        gauges.append(("ledger_sse_streams_open", "Event streams being served now.", {}, services.metrics.streams_open))
        return Response(services.metrics.render(gauges), media_type=PROMETHEUS_TEXT)

"""Serving the API with uvicorn (``ledger serve --host --port`` calls :func:`serve`)."""

from __future__ import annotations

import logging
import threading
from types import FrameType
from typing import Any

import uvicorn
from litestar import Litestar

from ledger.api.app import create_app
from ledger.api.deps import Services
from ledger.settings import Settings

log = logging.getLogger("ledger.api")

GRACEFUL_SHUTDOWN_SECONDS = 10


class LedgerServer(uvicorn.Server):
    """A uvicorn server that tells open event streams to end as soon as shutdown begins.

    (uvicorn waits for open responses before running the app's shutdown, so the streams must learn of it
    from the server.)
    """

    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self.services: Services | None = getattr(app.state, "services", None)
        self.shutdown_begun = self.services.shutdown if self.services is not None else threading.Event()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.shutdown_begun.set()
        super().handle_exit(sig, frame)

    def stop(self) -> None:
        """Begin a graceful shutdown (from any thread)."""
        self.shutdown_begun.set()
        self.should_exit = True


def build_server(
    settings: Settings | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    app: Litestar | None = None,
    **uvicorn_options: Any,
) -> LedgerServer:
    app = app or create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **{"log_level": "info", **uvicorn_options},
    )
    return LedgerServer(config, app)


def serve_app(
    app: Litestar, host: str = "127.0.0.1", port: int = 8000, *, access_log: bool = True, **uvicorn_options: Any
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, as ``ledger serve`` does: one process, uvicorn on uvloop and httptools
    (uvicorn's ``auto`` picks them when installed; ``uvicorn[standard]`` installs them). The benchmarks' baseline
    app is served through here too, so both run under the same server settings.

    ``access_log=False`` drops uvicorn's line per request (about a tenth of the cost of a cached read).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    build_server(None, host, port, app=app, access_log=access_log, **uvicorn_options).run()


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    run_projections: bool = True,
    access_log: bool = True,
    **uvicorn_options: Any,
) -> None:
    """Run the API until SIGINT/SIGTERM."""
    app = create_app(settings, run_projections=run_projections)
    shown = f"[{host}]" if ":" in host else host
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.info(
        "ledger API listening on http://%s:%d (database %s; OpenAPI at /schema)", shown, port, settings.database.display()
    )
    serve_app(app, host, port, access_log=access_log, **uvicorn_options)

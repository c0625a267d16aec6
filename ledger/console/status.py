"""``/status``: the model and SAE, the active profile and the version in force, how far each read model and the
steering hook have applied the log, and the generation scheduler's state when a model is loaded."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.response import Template

from ledger.console.profiles import runtime_of
from ledger.console.rendering import page


class StatusPage(Controller):
    path = "/status"

    @get("/", name="console:status", sync_to_thread=True)
    def status(self, request: Request[Any, Any, Any]) -> Template:
        runtime = runtime_of(request)
        reads = runtime.read_model
        generation = runtime.generation
        engine = generation.engine if generation is not None else None
        return page(
            request,
            "status.html.j2",
            engine=engine,
            sae=getattr(engine, "sae", None),
            hook=generation.projector.status() if generation is not None and generation.projector else None,
            scheduler=msgspec.to_builtins(engine.stats()) if engine is not None else None,
            active=reads.active_profile(),
            positions=sorted(reads.positions().items()),
            head=reads.log_position(),
            database=runtime.database.display(),
        )

"""What the console holds between two requests of one browser: the runs a form submitted, to be streamed once, and
the results of runs made without JavaScript, shown at an address of their own (post, redirect, get: reloading that
page shows the result again, and runs nothing again)."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from ledger.console.rendering import page
from ledger.console.session import viewer_of
from ledger.errors import NotFoundError

HELD_MAX = 64
HELD_TTL = 300.0


class HeldRunNotFoundError(NotFoundError):
    """A playground stream or a run's result was asked for that this server does not hold (already streamed, or
    expired)."""

    code = "playground_run_not_found"


class Held:
    """Things kept for the viewer who submitted them, for :data:`HELD_TTL` seconds, :data:`HELD_MAX` at most; past
    that, the oldest of whoever holds the most goes (one viewer's flood pushes out its own, not others')."""

    def __init__(self) -> None:
        self._held: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, held: Any) -> str:
        """Keep ``held`` (with its ``viewer`` and its ``created`` time) under a new key."""
        key = secrets.token_urlsafe(16)
        with self._lock:
            self._held[key] = held
            while len(self._held) > HELD_MAX:
                counts = Counter(kept.viewer for kept in self._held.values())
                most = max(counts, key=counts.__getitem__)
                del self._held[next(kept_key for kept_key, kept in self._held.items() if kept.viewer == most)]
        return key

    def take(self, key: str, viewer: str | None, *, keep: bool = False, said: str = "") -> Any:
        """What ``viewer`` left under ``key``: once (or, with ``keep``, as often as asked until it expires)."""
        with self._lock:
            held = self._held.get(key)
            if held is not None and held.viewer == viewer and not keep:  # (another viewer's guess takes nothing)
                del self._held[key]
        if held is None or held.viewer != viewer or time.monotonic() - held.created > HELD_TTL:
            raise HeldRunNotFoundError(said or "this playground run has already been shown or has expired; run it "
                                       "again")
        return held


@dataclass(frozen=True)
class ShownResult:
    template: str
    context: dict[str, Any]
    viewer: str | None
    created: float


RESULTS = Held()


def shown_at_its_own_address(request: Request[Any, Any, Any], template: str, **context: Any) -> Redirect:
    """A run's result page, for a browser without JavaScript: kept, and the browser sent to it (303)."""
    viewer = viewer_of(request)
    key = RESULTS.add(ShownResult(template, context, viewer.name if viewer else None, time.monotonic()))
    return Redirect(f"/results/{key}", status_code=HTTP_303_SEE_OTHER)


class ResultPages(Controller):
    path = "/results"

    @get("/{key:str}", name="console:result")
    async def result(self, request: Request[Any, Any, Any], key: FromPath[str]) -> Template:
        viewer = viewer_of(request)
        shown = RESULTS.take(key, viewer.name if viewer else None, keep=True, said="this result has expired (a "
                             "result is kept five minutes): what ran is recorded among the executions")
        return page(request, shown.template, **shown.context)

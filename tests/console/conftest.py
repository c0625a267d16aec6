"""Fixtures for the console's browser tests: a real ``ledger serve`` process (with the tiny model the steering
tests use) and headless Chromium driven by Playwright. Everything skips when Chromium is not installed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ledger.application import ProfileLedger
from ledger.settings import Database
from ledger.tokens import TokenService
from tests.api.conftest import free_port
from tests.faults.conftest import LedgerProcess, launch, wait_until_healthy
from tests.steering.conftest import sae_dir, tiny_model_dir  # noqa: F401 - fixtures

CHROMIUM = os.environ.get("LEDGER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}


def chromium_path() -> str | None:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (scripts/test.sh installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests write a screenshot of every page (``LEDGER_CONSOLE_SCREENSHOTS`` to keep them)."""
    chosen = os.environ.get("LEDGER_CONSOLE_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("console-screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def serve(tmp_path: Path, tiny_model_dir: Path, sae_dir: Path) -> Iterator[Callable[..., LedgerProcess]]:
    """``serve(url, auth=False)``: ``ledger serve`` on a free port with the tiny model; stopped after the test."""
    started: list[LedgerProcess] = []

    def start(url: str, *, auth: bool = False) -> LedgerProcess:
        port = free_port()
        args = [
            "serve", "--port", str(port), "--no-access-log", "--auth" if auth else "--no-auth",
            "--model", str(tiny_model_dir), "--sae", str(sae_dir),
        ]
        process = launch(url, args, tmp_path / f"serve-{len(started)}.log", env={"LEDGER_DEVICE": "cpu"})
        process.base_url = f"http://127.0.0.1:{port}"
        started.append(process)
        wait_until_healthy(process)
        return process

    try:
        yield start
    finally:
        for process in reversed(started):
            process.stop()


def issue_tokens(url: str, *roles: str) -> dict[str, str]:
    """A token per role, issued before the server starts."""
    ledger = ProfileLedger(env=Database(url).eventsourcing_env())
    try:
        return {role: TokenService(ledger).issue(f"{role}-person", role)[1] for role in roles}
    finally:
        ledger.close()

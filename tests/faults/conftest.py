"""Fixtures for the fault tests: real `ledger` processes (API servers, a projection worker) on real PostgreSQL."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ledger.application import ProfileLedger
from ledger.settings import Database
from ledger.tokens import TokenService
from tests.api.conftest import free_port

logging.getLogger("httpx").setLevel(logging.WARNING)

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
SERVE_OPTIONS = ("--no-model",)  # the ledger only: loading a language model is not what these tests are about


@dataclass
class LedgerProcess:
    """A ``python -m ledger …`` subprocess; its output goes to ``log_path``."""

    process: subprocess.Popen[bytes]
    log_path: Path
    base_url: str | None = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch(url: str, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> LedgerProcess:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger", "--database", url, *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    return LedgerProcess(process, log_path)


def wait_until_healthy(server: LedgerProcess) -> None:
    assert server.base_url is not None
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert server.process.poll() is None, f"the server exited:\n{server.output()}"
        try:
            if httpx.get(f"{server.base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the server did not start in time:\n{server.output()}"
        time.sleep(0.05)


@pytest.fixture
def ledger_processes(tmp_path: Path) -> Iterator[Callable[..., LedgerProcess]]:
    """Start ``ledger`` subprocesses: ``start(url, "serve", ...)`` (no model) waits until it answers /health;
    ``start(url, "project")`` starts a projection worker. All are stopped (SIGTERM) after the test."""
    started: list[LedgerProcess] = []

    def start(url: str, command: str, *args: str) -> LedgerProcess:
        name = f"{command}-{len(started)}"
        if command == "serve":
            port = free_port()
            proc = launch(url, ["serve", "--port", str(port), *SERVE_OPTIONS, *args], tmp_path / f"{name}.log")
            proc.base_url = f"http://127.0.0.1:{port}"
            started.append(proc)
            wait_until_healthy(proc)
        else:
            proc = launch(url, [command, *args], tmp_path / f"{name}.log")
            started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in reversed(started):
            proc.stop()


@dataclass
class Credentials:
    editor: dict[str, str]
    admin: dict[str, str]


@pytest.fixture
def credentials(postgres_url: str) -> Credentials:
    """An editor and an admin token, issued before any server starts."""
    ledger = ProfileLedger(env=Database(postgres_url).eventsourcing_env(pool_size=1))
    try:
        headers = {
            role: {"Authorization": f"Bearer {TokenService(ledger).issue(f'{role}-load', role)[1]}"}
            for role in ("editor", "admin")
        }
    finally:
        ledger.close()
    return Credentials(**headers)

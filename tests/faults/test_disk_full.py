"""The embedded default's disk fills up: commands answer 503 saying so, `/ready` takes the server out of service,
the CLI says what to do, and once space is freed a retry succeeds."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import start_server

PAD = "y" * 60_000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A filesystem of 8 MiB of its own (a tmpfs), for a database that can fill it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Take every byte left on ``disk`` with a file of its own."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65_536)
                out.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_said_as_such_takes_the_server_out_of_service_and_a_retry_succeeds_once_space_is_freed(
        small_disk):
    url = f"sqlite:///{small_disk}/ledger.sqlite"
    running = start_server(url)
    try:
        with httpx.Client(base_url=running.base_url, timeout=30) as http:
            assert http.post("/api/profiles", json={"name": "f"}).status_code == 201
            filler = fill(small_disk)
            for _ in range(100):
                answer = http.post("/api/profiles/f/executions", json={"metadata": {"pad": PAD}})
                if answer.status_code != 201:
                    break
            assert answer.status_code == 503 and answer.json()["error"] == "database_unavailable", answer.text
            assert "its disk is full" in answer.json()["detail"]  # before: "cannot be reached"
            ready = http.get("/ready")
            assert ready.status_code == 503 and "no room to write" in ready.json()["detail"]  # before: 200, ready
            cli = subprocess.run([sys.executable, "-m", "ledger", "--database", url, "create", "g", "--json"],
                                 capture_output=True, text=True, timeout=120)
            assert cli.returncode == 75 and "has no room to write" in cli.stderr, (cli.returncode, cli.stderr)
            filler.unlink()
            retried = http.post("/api/profiles/f/executions", json={"metadata": {"pad": PAD}})
            assert retried.status_code == 201, retried.text
            deadline = time.monotonic() + 30
            while http.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, http.get("/ready").text
                time.sleep(0.5)
    finally:
        running.stop()

"""The read-your-writes workload: commands through one server, each read back at once, with no position and no
extra header, from every server. Shared by the in-process test and the fault test with real processes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

ROUNDS = 50  # 4 commands each: create, update, activate, record an execution → 200 commands


@dataclass
class Misses:
    reads: int = 0
    missed: list[str] = field(default_factory=list)

    def check(self, what: str, seen: bool) -> None:
        self.reads += 1
        if not seen:
            self.missed.append(what)


def _json(response: httpx.Response) -> Any:
    return response.json() if response.status_code == 200 else None


def run_commands_and_read_back(writer: httpx.Client, readers: Sequence[httpx.Client], rounds: int = ROUNDS,
                               tag: str = "ryw") -> tuple[int, Misses]:
    """``rounds`` × (create, update, activate, record-execution) through ``writer``; after each, every reader
    must already show it. Returns the number of commands and what was missed."""
    misses = Misses()
    commands = 0

    def command(response: httpx.Response, expected: int) -> dict[str, Any]:
        nonlocal commands
        assert response.status_code == expected, response.text
        assert "X-Ledger-Read-Side" not in response.headers, "the command was answered before the read side had it"
        commands += 1
        return response.json()  # type: ignore[no-any-return]

    def everywhere(what: str, seen: Callable[[httpx.Client], bool]) -> None:
        for number, reader in enumerate(readers):
            misses.check(f"{what} on server {number}", seen(reader))

    for round_number in range(rounds):
        name = f"{tag}-{round_number}"
        created = command(writer.post("/api/profiles", json={"name": name, "steering": {"1": 1.0}}), 201)
        pid = created["id"]
        everywhere(f"create {name}", lambda r: (_json(r.get(f"/api/profiles/{pid}")) or {}).get("version") == 1)
        everywhere(f"list {name}", lambda r: pid in [p["id"] for p in r.get("/api/profiles", params={"search": name})
                                                     .json()["profiles"]])

        command(writer.put(f"/api/profiles/{pid}", json={"description": f"round {round_number}"}), 200)
        everywhere(f"update {name}", lambda r: (_json(r.get(f"/api/profiles/{pid}")) or {}).get("description")
                   == f"round {round_number}")

        command(writer.post(f"/api/profiles/{pid}/activate"), 200)
        everywhere(f"activate {name}", lambda r: (_json(r.get("/api/profiles/active")) or {}).get("id") == pid)

        execution = command(writer.post(f"/api/profiles/{pid}/executions", json={"seed": round_number}), 201)
        eid = execution["id"]
        everywhere(f"execution of {name}", lambda r: r.get(f"/api/executions/{eid}").status_code == 200)
    return commands, misses

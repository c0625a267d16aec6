"""Two ``ledger serve`` processes and one ``ledger project`` worker on one database: every command answered by
one server is already visible on both, to plain HTTP clients that pass no position and no header."""

from __future__ import annotations

import httpx

from tests.read_your_writes import run_commands_and_read_back


def test_two_servers_and_a_worker_show_every_answered_command_at_once(database_url, ledger_processes):
    servers = [ledger_processes(database_url, "serve", "--no-projections", "--no-auth") for _ in range(2)]
    ledger_processes(database_url, "project")
    with httpx.Client(base_url=servers[0].base_url, timeout=30) as writer, \
            httpx.Client(base_url=servers[1].base_url, timeout=30) as other:
        commands, misses = run_commands_and_read_back(writer, [writer, other])
    assert commands == 200
    assert misses.reads == 500 and misses.missed == []

"""The concurrent-writers workload over HTTP and the invariants it must leave behind.

Writers hammer one "hot" profile with updates, activators activate profiles of their own, and a watcher polls
the read side all along. Every write carries a unique marker as its ``reason``, so the log can be searched for
exactly the writes that were acknowledged (2xx) and for none of those that failed.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx

from ledger.application import ProfileLedger
from ledger.settings import Database

REQUEST_TIMEOUT = 60.0


@dataclass
class Attempt:
    marker: str
    kind: str  # "update" | "activate"
    profile_id: str
    status: int
    body: dict[str, Any]


@dataclass
class Observations:
    attempts: list[Attempt] = field(default_factory=list)
    polls: int = 0
    most_active_seen: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)

    def acknowledged(self, kind: str) -> list[Attempt]:
        return [a for a in self.attempts if a.kind == kind and 200 <= a.status < 300]

    def failed(self, kind: str) -> list[Attempt]:
        return [a for a in self.attempts if a.kind == kind and not 200 <= a.status < 300]


def seed_profiles(ledger: ProfileLedger, count: int) -> tuple[str, list[str]]:
    """The hot profile and ``count`` others, recorded directly."""
    hot = ledger.create_profile({"name": "hot", "steering": {1: 1.0}}).profile
    others = [ledger.create_profile({"name": f"other-{i}", "steering": {i: 0.5}}).profile for i in range(count)]
    assert hot is not None
    return str(hot.id), [str(p.id) for p in others if p is not None]


def run_workload(
    base_urls: list[str],
    headers: dict[str, str],
    hot_id: str,
    other_ids: list[str],
    *,
    writers: int,
    updates_each: int,
    activations_each: int,
) -> Observations:
    """Run every writer and activator in its own thread (clients spread over ``base_urls``), with a watcher
    polling the read side of each server until they are done."""
    seen = Observations()
    urls = itertools.cycle(base_urls)
    start = threading.Barrier(writers + len(other_ids))
    done = threading.Event()

    def client(base_url: str) -> httpx.Client:
        return httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT)

    def write(number: int, base_url: str) -> None:
        with client(base_url) as http:
            start.wait()
            for k in range(updates_each):
                marker = f"update-{number}-{k}"
                body = {"steering": {"1": number + k / 100 + 2.0}, "reason": marker}
                response = http.put(f"/api/profiles/{hot_id}", json=body)
                seen.add(Attempt(marker, "update", hot_id, response.status_code, response.json()))

    def activate(number: int, profile_id: str, base_url: str) -> None:
        with client(base_url) as http:
            start.wait()
            for k in range(activations_each):
                marker = f"activate-{number}-{k}"
                response = http.post(f"/api/profiles/{profile_id}/activate", json={"reason": marker})
                seen.add(Attempt(marker, "activate", profile_id, response.status_code, response.json()))

    def watch(base_url: str) -> None:
        with client(base_url) as http:
            while not done.is_set():
                listing = http.get("/api/profiles", params={"limit": 500})
                if listing.status_code != 200:
                    seen.errors.append(f"listing answered {listing.status_code}: {listing.text[:200]}")
                    continue
                active = sum(1 for row in listing.json()["profiles"] if row["is_active"])
                with seen.lock:
                    seen.polls += 1
                    seen.most_active_seen = max(seen.most_active_seen, active)

    threads = [threading.Thread(target=write, args=(n, next(urls))) for n in range(writers)]
    threads += [threading.Thread(target=activate, args=(n, pid, next(urls))) for n, pid in enumerate(other_ids)]
    watchers = [threading.Thread(target=watch, args=(url,)) for url in base_urls]
    for thread in watchers + threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT * (updates_each + activations_each))
    done.set()
    for thread in watchers:
        thread.join(REQUEST_TIMEOUT)
    assert not any(t.is_alive() for t in threads + watchers), "a client thread did not finish"
    return seen


def reasons_in_log(ledger: ProfileLedger, profile_ids: list[str]) -> Counter[tuple[str, str]]:
    """How often each reason appears on the events of each of these profiles: ``{(profile_id, reason): n}``.

    (An activation is recorded on the profile it activates and, as its deactivation, on the one it replaces.)
    """
    counts: Counter[tuple[str, str]] = Counter()
    for profile_id in profile_ids:
        for event in ledger.repository.event_store.get(UUID(profile_id)):
            if event.reason:
                counts[profile_id, event.reason] += 1
    return counts


def assert_log_matches(url: str, seen: Observations, hot_id: str, other_ids: list[str]) -> ProfileLedger:
    """Every acknowledged write is in the log exactly once, no failed one is, and the hot profile's versions
    have no gaps. Returns an open ledger on the database (the caller closes it)."""
    ledger = ProfileLedger(env=Database(url).eventsourcing_env(pool_size=1))
    in_log = reasons_in_log(ledger, [hot_id, *other_ids])
    everywhere = Counter[str]()
    for (_, reason), count in in_log.items():
        everywhere[reason] += count
    for attempt in seen.acknowledged("update"):
        assert in_log[hot_id, attempt.marker] == 1, (attempt, in_log[hot_id, attempt.marker])
    for attempt in seen.acknowledged("activate"):
        assert in_log[attempt.profile_id, attempt.marker] == (1 if attempt.body["changed"] else 0), attempt
    for attempt in seen.failed("update") + seen.failed("activate"):
        assert everywhere[attempt.marker] == 0, attempt
        assert {"error", "detail"} <= attempt.body.keys(), attempt
    acked_versions = sorted(a.body["version"] for a in seen.acknowledged("update"))
    assert acked_versions == list(range(2, 2 + len(acked_versions))), "each acknowledged update made one version"
    history = [record.version for record in ledger.profile_history(UUID(hot_id))]
    assert history == list(range(1, len(history) + 1)) and history[-1] == 1 + len(acked_versions)
    return ledger



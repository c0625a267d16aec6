"""The active profile, when it follows its latest version, steers every request, so a change that the loaded engine
could not apply is refused (seed 000 §5). These races once let an activation and such a change both succeed, leaving
an active profile that failed every generation: over a real server, with plain HTTP clients."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from ledger.errors import ProfileIncompatibleError
from tests.api.conftest import assert_error, start_server

UNHOOKABLE = 99


def unless_unhookable(profile):
    if profile.layer == UNHOOKABLE:
        raise ProfileIncompatibleError(f"layer {UNHOOKABLE} cannot be hooked")
    return []


def test_an_activation_overtaken_by_a_change_of_its_profile_looks_again_and_refuses_what_cannot_be_applied(
    database_url,
):
    checked, overtaken = threading.Event(), threading.Event()

    def check(profile):
        if not checked.is_set():  # the activation has looked at the profile: let the change commit now
            checked.set()
            overtaken.wait(10)
        return unless_unhookable(profile)

    running = start_server(database_url, compatibility_check=check)
    try:
        with httpx.Client(base_url=running.base_url, timeout=30) as http, ThreadPoolExecutor(1) as pool:
            assert http.post("/api/profiles", json={"name": "raced", "steering": {"1": 1.0}}).status_code == 201
            activation = pool.submit(lambda: httpx.post(f"{running.base_url}/api/profiles/raced/activate", timeout=30))
            assert checked.wait(10)
            assert http.put("/api/profiles/raced", json={"layer": UNHOOKABLE}).status_code == 200  # not active yet
            overtaken.set()
            assert_error(activation.result(), 422, "profile_incompatible")
            assert_error(http.get("/api/profiles/active"), 404)
    finally:
        running.stop()


def test_an_activation_and_a_change_it_cannot_apply_never_both_succeed(database_url):
    running = start_server(database_url, compatibility_check=unless_unhookable)
    try:
        with ThreadPoolExecutor(2) as pool:
            for round in range(30):
                name = f"raced-{round}"
                made = httpx.post(f"{running.base_url}/api/profiles", json={"name": name, "steering": {"1": 1.0}})
                assert made.status_code == 201, made.text
                url = f"{running.base_url}/api/profiles/{name}"
                activation = pool.submit(lambda: httpx.post(f"{url}/activate", timeout=30))
                change = pool.submit(lambda: httpx.put(url, json={"layer": UNHOOKABLE}, timeout=30))
                answers = activation.result().status_code, change.result().status_code
                assert answers in ((200, 422), (422, 200)), (round, answers)
                active = httpx.get(f"{running.base_url}/api/profiles/active")
                assert active.status_code == 404 or active.json()["layer"] != UNHOOKABLE, (round, active.text)
                httpx.post(f"{running.base_url}/api/profiles/deactivate")
    finally:
        running.stop()

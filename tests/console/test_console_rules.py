"""The console's commands keep the API's rules: a profile made there records what the server has loaded, and
an edit or revert that the active profile could not steer with is refused, as through the API."""

from __future__ import annotations

import html
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from ledger.console.results import HELD_MAX as PENDING_MAX
from ledger.tokens import TokenService
from steering.engine import SteeringEngine
from steering.models import load_model
from steering.sae import load_sae
from tests.api.conftest import make_client, start_server
from tests.steering.conftest import D_SAE, long_context_model_dir, sae_dir, tiny_model_dir  # noqa: F401 - fixtures
from tests.waiting import wait_until

HTML = {"Accept": "text/html"}


@pytest.fixture
def console(sqlite_url, tiny_model_dir, sae_dir) -> Iterator[TestClient[Litestar]]:
    engine = SteeringEngine(load_model(tiny_model_dir, device="cpu"), load_sae(sae_dir), model_id="tiny",
                            sae_id="tiny-sae")
    with make_client(sqlite_url, engine=engine) as client:
        yield client


def send(console: TestClient[Litestar], path: str, headers: dict[str, str] | None = None, **form: str):
    token = re.search(r'name="_csrf_token" value="([^"]+)"', console.get("/").text).group(1)
    return console.post(path, data={"_csrf_token": token, **form}, headers={**HTML, **(headers or {})},
                        follow_redirects=False)


def shown(console: TestClient[Litestar], sent: Any) -> Any:
    """The page a run made without JavaScript is shown at, as the browser follows the POST's 303 to it."""
    assert sent.status_code == 303 and sent.headers["Location"].startswith("/results/"), sent.text[:500]
    return console.get(sent.headers["Location"], headers=HTML)


def test_a_profile_made_in_the_console_records_the_loaded_model_as_one_made_through_the_api(console):
    assert send(console, "/profiles", name="from-console", steering="3=1").status_code == 303
    from_api = console.post("/api/profiles", json={"name": "from-api", "steering": {"3": 1.0}}).json()
    made = console.get("/api/profiles/from-console").json()
    target = ("model_id", "sae_id", "layer")
    assert [made[f] for f in target] == [from_api[f] for f in target] == ["tiny", "tiny-sae", 1]


def test_the_console_refuses_an_edit_or_a_revert_the_active_profile_could_not_steer_with(console):
    too_far = {str(D_SAE + 5): 1.0}
    made = console.post("/api/profiles", json={"name": "active", "steering": too_far, "layer": 1}).json()
    url = f"/api/profiles/{made['id']}"
    assert console.put(url, json={"steering": {"3": 1.0}}).status_code == 200  # version 2 can be steered with
    assert console.post(f"{url}/activate").status_code == 200  # following its latest version
    edit = send(console, f"/profiles/{made['id']}/edit", name="active", steering=f"{D_SAE + 5}=1", layer="1",
                bump_version="on")
    revert = send(console, f"/profiles/{made['id']}/revert", version="1")
    for refused in (edit, revert):
        assert refused.status_code == 422 and "profile_incompatible" in refused.text, refused.text[:500]
    assert console.get(url).json()["version"] == 2


def test_the_history_on_a_profiles_page_names_who_edited_a_version_in_place_when_and_why(console):
    made = console.post("/api/profiles", json={"name": "kept", "description": "first"}, headers={"X-Actor": "ann"})
    edited = console.put(f"/api/profiles/{made.json()['id']}", headers={"X-Actor": "bob"}, json={
        "description": "rewritten in place", "bump_version": False, "reason": "silent edit"})
    assert edited.json()["version"] == 1
    history = console.get(f"/profiles/{made.json()['id']}", headers=HTML).text.split('id="v1"', 1)[1].split("</tr>")[0]
    assert "ann" in history and "edit: bob" in history and "edit: silent edit" in history


# another model, another SAE and another layer than the server's ("tiny", "tiny-sae", 1): three warnings
ELSEWHERE = {"model_id": "llama-70b", "sae_id": "other-sae", "layer": 0, "steering": {"12": 2.0}}


def warnings_shown(page: str) -> list[str]:
    """The warnings a console page shows (escaped as text, one item each)."""
    box = re.search(r'<div class="warnings" role="alert">(.*?)</div>', page, re.S)
    return [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", box.group(1), re.S)] if box else []


def test_activating_a_profile_made_for_another_model_shows_the_apis_warnings_on_its_page(console):
    made = console.post("/api/profiles", json={"name": "elsewhere", **ELSEWHERE}).json()
    through_api = console.post(f"/api/profiles/{made['id']}/activate").json()["warnings"]
    assert len(through_api) == 3
    console.post("/api/profiles/deactivate")

    activated = send(console, f"/profiles/{made['id']}/activate", version="1")
    assert activated.status_code == 303
    page = console.get(activated.headers["location"], headers=HTML).text
    assert "Activated: version 1 is in force (pinned)" in page
    assert warnings_shown(page) == through_api
    assert warnings_shown(console.get(f"/profiles/{made['id']}", headers=HTML).text) == []  # only after activating


def test_a_playground_run_with_a_profile_made_for_another_model_shows_the_apis_warnings(console):
    made = console.post("/api/profiles", json={"name": "elsewhere", **ELSEWHERE}).json()
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "seed": 1, "profile": made["id"]}
    through_api = console.post("/v1/chat/completions", json=chat).json()["ledger"]["warnings"]
    assert len(through_api) == 3
    form = {"prompt": "hi", "profile": made["id"], "seed": "1", "temperature": "0", "max_tokens": "2"}
    ran = shown(console, send(console, "/playground", **form))
    assert ran.status_code == 200 and "Recorded as execution" in ran.text, ran.text[:500]
    assert warnings_shown(ran.text) == through_api
    streamed = send(console, "/playground", **form, headers={"HX-Request": "true"})  # the stream's page, with htmx
    assert streamed.status_code == 200 and "sse-connect" in streamed.text
    assert warnings_shown(streamed.text) == through_api


def test_the_playground_offers_and_names_the_version_in_force_of_the_active_profile_pinned_to_an_older_one(console):
    made = console.post("/api/profiles", json={"name": "calmer", "steering": {"1": 1.0}}).json()
    console.put(f"/api/profiles/{made['id']}", json={"steering": {"2": 2.0}})
    console.post(f"/api/profiles/{made['id']}/activate", json={"version": 1})
    page = console.get("/playground", headers=HTML).text
    assert f'<option value="{made["id"]}">calmer (v1, active)</option>' in page  # was "(v2)", which never ran
    assert "Version (empty: the one in force)" in page
    ran = shown(console, send(console, "/playground", prompt="hi", profile=made["id"], seed="1", temperature="0",
                              max_tokens="2"))
    assert "Recorded as execution" in ran.text and "(version 1, seed 1," in ran.text, ran.text[-800:]


def test_reloading_the_result_of_a_run_made_without_javascript_shows_it_again_and_runs_nothing(console):
    made = console.post("/api/profiles", json={"name": "reloaded", "steering": {"1": 1.0}}).json()
    form = {"prompt": "hi", "profile": made["id"], "seed": "3", "temperature": "0", "max_tokens": "2"}
    ran = shown(console, send(console, "/playground", **form))  # before: the POST's own answer, rerun by a reload
    execution = re.search(r'Recorded as execution <a href="/executions/([0-9a-f-]+)"', ran.text).group(1)
    replayed = shown(console, send(console, f"/executions/{execution}/replay"))
    assert "reproduced" in replayed.text.lower(), replayed.text[-800:]
    for page, sent in ((ran, "/playground"), (replayed, "/replay")):
        again = console.get(str(page.url), headers=HTML)  # a reload: the same result, nothing run again
        assert again.status_code == 200 and again.text == page.text, sent
    listed = console.get(f"/api/profiles/{made['id']}/executions").json()["executions"]
    assert len(listed) == 2, listed  # the run and its replay, once each
    assert console.get("/results/not-a-key", headers=HTML).status_code == 404


def test_a_streamed_compare_in_the_playground_records_the_unsteered_side_too_as_the_api_does(console):
    form = {"prompt": "hi", "seed": "1", "temperature": "0", "max_tokens": "4", "compare": "on"}
    streamed = send(console, "/playground", **form, headers={"HX-Request": "true"})  # the page a browser streams
    stream = console.get(re.search(r'sse-connect="([^"]+)"', streamed.text).group(1)).text
    assert "event: unsteered" in stream and "event: steered" in stream
    execution = re.search(r'href="/executions/([0-9a-f-]{36})"', stream).group(1)
    details = console.get(f"/api/executions/{execution}").json()["details"]
    assert 1 <= details["unsteered"]["completion_tokens"] <= 4, details  # before: no unsteered side in the log
    assert details["unsteered"]["finish_reason"] in ("length", "stop") and details["unsteered"]["output_sha256"]


def test_revert_and_deactivate_ask_why_and_the_log_keeps_the_answer_as_for_every_other_change(console):
    made = console.post("/api/profiles", json={"name": "asked", "steering": {"1": 1.0}}).json()
    console.put(f"/api/profiles/{made['id']}", json={"steering": {"1": 2.0}})
    console.post(f"/api/profiles/{made['id']}/activate")
    page = console.get(f"/profiles/{made['id']}", headers=HTML).text
    revert = page.split(f'action="/profiles/{made["id"]}/revert"', 1)[1].split("</form>")[0]
    deactivate = page.split(f'action="/profiles/{made["id"]}/deactivate"', 1)[1].split("</form>")[0]
    assert 'name="reason"' in revert and 'name="reason"' in deactivate  # before: no "Why" on either
    assert send(console, f"/profiles/{made['id']}/deactivate", reason="paused for review").status_code == 303
    assert send(console, f"/profiles/{made['id']}/revert", version="1", reason="2.0 was too strong",
                expected_version="2").status_code == 303
    reasons = {event["type"]: event["reason"] for event in console.get("/api/events").json()["events"]}
    assert reasons["ActiveSlot.Deactivated"] == "paused for review"
    assert reasons["Profile.SpecRevised"] == "2.0 was too strong"


def test_a_stale_pages_deactivate_button_leaves_the_profile_activated_since_in_force(console):
    shown = console.post("/api/profiles", json={"name": "shown"}).json()
    console.post(f"/api/profiles/{shown['id']}/activate")
    page = console.get(f"/profiles/{shown['id']}", headers=HTML).text  # the page shows "shown" active
    assert f'action="/profiles/{shown["id"]}/deactivate"' in page
    other = console.post("/api/profiles", json={"name": "other"}).json()
    console.post(f"/api/profiles/{other['id']}/activate")  # someone else, meanwhile

    refused = send(console, f"/profiles/{shown['id']}/deactivate", reason="done with it")
    assert refused.status_code == 409 and refused.headers["content-type"].startswith("text/html"), refused.text
    assert "not the active profile" in refused.text
    assert console.get("/api/profiles/active").json()["id"] == other["id"]  # before: "other" was turned off
    assert send(console, f"/profiles/{other['id']}/deactivate").status_code == 303
    assert console.get("/api/profiles/active").status_code == 404


def test_a_forms_address_opened_again_leads_to_the_profiles_page_not_a_405(console):
    console.post("/api/profiles", json={"name": "calm sea"})
    for action in ("edit", "revert", "activate", "deactivate", "delete", "restore"):  # a reload, a bookmark
        opened = console.get(f"/profiles/calm%20sea/{action}", headers=HTML, follow_redirects=False)
        assert opened.status_code == 303 and opened.headers["location"] == "/profiles/calm%20sea", action
    for path, page in (("/profiles", "/"), ("/profiles/import", "/"), ("/logout", "/"),
                       (f"/executions/{uuid.UUID(int=7)}/replay", f"/executions/{uuid.UUID(int=7)}")):
        opened = console.get(path, headers=HTML, follow_redirects=False)
        assert opened.status_code == 303 and opened.headers["location"] == page, path  # before: a 405 page


def test_the_export_of_the_largest_profile_imports_again_through_the_console_as_through_the_api(sqlite_url):
    from ledger.values import STEERING_MAX

    steering = {str(index): -1.2345678901234567e-100 for index in range(STEERING_MAX)}  # the longest strengths
    document = json.dumps({"type": "millm_profile", "version": "1.0", "profile": {"name": "wide", "steering": steering}},
                          indent=2).encode()
    assert len(document) > 3 * 1024 * 1024  # past the limit of other bodies, 2 MiB (it was a 413, answered in JSON)
    with make_client(sqlite_url) as console:
        token = re.search(r'name="_csrf_token" value="([^"]+)"', console.get("/").text).group(1)
        headers = {**HTML, "X-CSRFToken": token}  # as htmx sends it
        imported = console.post("/profiles/import", headers=headers, follow_redirects=False,
                                files={"file": ("wide.json", document, "application/json")})
        assert imported.status_code == 303 and imported.headers["location"].startswith("/profiles/"), imported.text
        too_large = console.post("/profiles/import", headers=headers,
                                 files={"file": ("huge.json", b" " * (17 * 1024 * 1024), "application/json")})
        assert too_large.status_code == 413 and too_large.headers["content-type"].startswith("text/html")


def test_a_profile_as_large_as_the_api_takes_is_edited_through_its_page_as_the_page_sends_the_form(console):
    steering = {str(1_000_000 + index): -123.45678901234567 for index in range(64_000)}
    made = console.post("/api/profiles", json={"name": "wide", "steering": steering})
    assert made.status_code == 201 and len(made.request.content) > 1_900_000, made.text  # under 2 MiB
    page = console.get(f"/profiles/{made.json()['id']}", headers=HTML).text
    edit = page[page.index('action="/profiles/'):page.index("</form>", page.index('action="/profiles/'))]
    found = [*re.findall(r'name="(\w+)"[^>]*value="([^"]*)"', edit),  # inputs, then text areas
             *re.findall(r'name="(\w+)"[^>]*>\n?([^<]*)</textarea>', edit)]
    fields = {name: html.unescape(value) for name, value in found}
    fields.pop("_csrf_token")
    assert fields["steering"].count("=") == 64_000  # the whole steering, as the browser sends it back
    saved = send(console, f"/profiles/{made.json()['id']}/edit", **{**fields, "description": "only this changed"})
    assert saved.status_code == 303, saved.text[:300]  # before: 413, the form-encoded steering past the 2 MiB limit
    after = console.get("/api/profiles/wide").json()
    assert after["description"] == "only this changed" and len(after["steering"]) == 64_000


def test_a_form_is_refused_before_it_is_read_when_its_token_is_no_token_or_may_not_and_when_it_has_a_million_fields(
        sqlite_url):
    fields = b"a&" * 1_000_000  # millions of empty fields: seconds and a gigabyte to parse
    form = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    secured = start_server(sqlite_url, auth=True)
    try:
        tokens = TokenService(secured.server.runtime.ledger)
        reader_token, editor_token = (tokens.issue(f"{role}-bot", role)[1] for role in ("reader", "editor"))
        with httpx.Client(base_url=secured.base_url, timeout=60) as http:
            for cookie, code in (("not-a-token", "unauthenticated"), (reader_token, "forbidden")):
                cookies = {"Cookie": f"ledger_console_token={cookie}"}
                refused = http.post("/profiles", content=fields, headers={**form, **cookies})
                assert (refused.status_code, refused.json()["error"]) == (
                    {"unauthenticated": 401, "forbidden": 403}[code], code)  # before: 403 CSRF, once the form was read
            bearer = {"Authorization": f"Bearer {editor_token}"}  # no cookie: no CSRF check, the same bound
            refused = http.post("/profiles", content=fields, headers={**form, **bearer})
            assert refused.status_code == 422 and "at most 1000 fields" in refused.json()["detail"]
    finally:
        secured.stop()
    open_mode = start_server(sqlite_url)
    try:
        with httpx.Client(base_url=open_mode.base_url, timeout=60) as http:
            refused = http.post("/profiles", content=fields, headers=form)
            assert refused.status_code == 422 and "at most 1000 fields" in refused.json()["detail"]
    finally:
        open_mode.stop()


def test_the_pages_read_forms_and_queries_as_the_api_does_and_show_an_external_runs_record(console):
    made = console.post("/api/profiles", json={"name": "read"}).json()
    refused = send(console, "/profiles", name="underscored", steering="3=1_000")
    assert refused.status_code == 422 and "must be a number" in html.unescape(refused.text)  # before: read as 1000
    page = console.get(f"/profiles/{made['id']}", params={"from": "", "to": ""}, headers=HTML)
    assert page.status_code == 200  # an empty value is none, as in every filter (before: 422)
    assert 'maxlength="100"' in page.text  # as long as a name may be (before: 200)
    run = console.post(f"/api/profiles/{made['id']}/executions", json={
        "run_id": "cohort-7", "seed": 42, "entity_count": 1000, "duration_ms": 12.5, "metadata": {"batch": "b1"},
    }).json()
    shown = html.unescape(console.get(f"/executions/{run['id']}", headers=HTML).text)
    for fact in ("cohort-7", "1000", "12.5 ms", "batch", '"b1"'):
        assert fact in shown, fact  # before: kind, seed, status and no digest, nothing that names the run


def test_a_filter_with_a_nul_character_is_refused_naming_the_filter_as_the_api_names_it(console):
    for name in ("search", "tag", "product"):
        refused = console.get("/", params={name: "a\x00b"}, headers=HTML)
        assert refused.status_code == 422
        assert f"{name} must not contain NUL characters" in html.unescape(refused.text)  # before: name_pattern0, tags0


def test_one_viewer_submitting_many_playground_runs_pushes_out_its_own_not_anothers(sqlite_url, tiny_model_dir,
                                                                                     sae_dir):
    engine = SteeringEngine(load_model(tiny_model_dir, device="cpu"), load_sae(sae_dir), model_id="tiny",
                            sae_id="tiny-sae")
    with make_client(sqlite_url, engine=engine, auth=True) as browser:
        tokens = TokenService(browser.app.state.runtime.ledger)
        (_, patient), (_, flooder) = (tokens.issue(name, "editor") for name in ("patient", "flooder"))

        def sign_in(token: str) -> None:
            form = browser.get("/login", headers=HTML).text
            csrf = re.search(r'name="_csrf_token" value="([^"]+)"', form).group(1)
            assert browser.post("/login", data={"_csrf_token": csrf, "token": token}, headers=HTML).status_code == 200

        def submit() -> str:
            form = {"prompt": "hi", "seed": "1", "temperature": "0", "max_tokens": "2"}
            page = send(browser, "/playground", headers={"HX-Request": "true"}, **form)
            return re.search(r'sse-connect="([^"]+)"', page.text).group(1)

        sign_in(patient)
        waiting = submit()  # a slow or backgrounded browser: its stream is not opened yet
        sign_in(flooder)
        for _ in range(PENDING_MAX):
            submit()
        sign_in(patient)
        stream = browser.get(waiting)
        assert stream.status_code == 200 and "event: steered" in stream.text  # before: 404, pushed out by the flood


def test_a_playground_run_whose_browser_leaves_before_its_first_token_leaves_the_queue_and_is_not_recorded(
        long_context_model_dir, sae_dir, sqlite_url):
    engine = SteeringEngine(load_model(long_context_model_dir, device="cpu"), load_sae(sae_dir), model_id="tiny",
                            sae_id="tiny-sae", max_batch=1, max_queue=2)
    running = start_server(sqlite_url, engine=engine)
    try:
        with httpx.Client(base_url=running.base_url, timeout=120) as browser:
            def scheduler() -> dict:
                return browser.get("/api/steering/status").json()["scheduler"]

            hold = {"messages": [{"role": "user", "content": "hold the row"}], "temperature": 0.0, "max_tokens": 4000,
                    "stream": True}
            with browser.stream("POST", "/v1/chat/completions", json=hold) as holding:
                lines = holding.iter_lines()  # (held: an iterator let go closes the connection)
                next(line for line in lines if '"content":"' in line and '"content":""' not in line)
                csrf = re.search(r'name="_csrf_token" value="([^"]+)"', browser.get("/", headers=HTML).text).group(1)
                form = {"_csrf_token": csrf, "prompt": "hi", "seed": "1", "temperature": "0", "max_tokens": "3",
                        "compare": "on"}
                page = browser.post("/playground", data=form, headers={**HTML, "HX-Request": "true"})
                with browser.stream("GET", re.search(r'sse-connect="([^"]+)"', page.text).group(1)) as run:
                    events = run.iter_lines()
                    assert next(events) == ": started"  # both sides wait for the row
                    wait_until(lambda: scheduler()["queued"] == 2, 30, "both sides waiting")
                wait_until(lambda: scheduler()["queued"] == 0, 10, "the run to leave the queue")  # before: it stayed
            wait_until(lambda: scheduler()["running"] == 0, 30, "the held row to be given up")
            time.sleep(0.5)  # (before: the run took the free row here, and its first step was recorded)
            runs = browser.get("/api/events", params={"type": "Execution.Recorded"}).json()["events"]
            assert len(runs) == 1, runs  # the held stream's, cut short; none for the run nobody watched
    finally:
        running.stop()


def test_a_replay_whose_browser_leaves_stops_and_what_it_ran_is_recorded_as_partial_as_through_the_api(
        long_context_model_dir, sae_dir, sqlite_url):
    engine = SteeringEngine(load_model(long_context_model_dir, device="cpu"), load_sae(sae_dir), model_id="tiny",
                            sae_id="tiny-sae")
    running = start_server(sqlite_url, engine=engine)
    try:
        with httpx.Client(base_url=running.base_url, timeout=300) as browser:
            body = {"messages": [{"role": "user", "content": "go on"}], "temperature": 0.0, "max_tokens": 4000,
                    "seed": 5}
            original = browser.post("/v1/chat/completions", json=body).json()["ledger"]["execution_id"]
            page = browser.get(f"/executions/{original}", headers=HTML).text
            csrf = re.search(r'name="_csrf_token" value="([^"]+)"', page).group(1)
            as_htmx_sends_it = {**HTML, "HX-Request": "true", "X-CSRFToken": csrf}  # (the form unread)
            with pytest.raises(httpx.ReadTimeout):  # the browser is closed while the replay runs
                browser.post(f"/executions/{original}/replay", data={"_csrf_token": csrf}, headers=as_htmx_sends_it,
                             timeout=1.0)
            scheduler = wait_until(lambda: (lambda seen: seen if seen["running"] == 0 else None)(
                browser.get("/api/steering/status").json()["scheduler"]), 30, "the replay to stop")
            assert scheduler["cancelled"] == 1  # before: it ran all 4,000 tokens for nobody
            runs = wait_until(lambda: (lambda found: found if len(found) == 2 else None)(browser.get(
                "/api/events", params={"type": "Execution.Recorded"}).json()["events"]), 30, "the replay's record")
            assert runs[-1]["data"]["status"] == "partial" and runs[-1]["data"]["replay_of"] == original
    finally:
        running.stop()


def test_a_playground_run_refused_for_what_was_typed_comes_back_holding_it_and_runs_nothing(console):
    """As the create and edit forms: Back from the error page gave the playground's defaults, not the prompt."""
    console.post("/api/profiles", json={"name": "calm", "steering": {"1": 1.0}})
    recorded = console.get("/api/events").json()["events"]
    for typed, field in (
            ({"prompt": "my long prompt\r\nof two lines", "temperature": "warm", "seed": "3"},
             "temperature must be a number (got &#39;warm&#39;)"),  # was "Expected `float | null`, got `str`"
            ({"prompt": "another prompt", "max_tokens": "0", "seed": "4"}, "max_tokens"),
            ({"prompt": " ", "seed": "5"}, "prompt"),
            ({"prompt": "a version", "profile": "calm", "profile_version": "99", "seed": "6"}, "version 99")):
        refused = send(console, "/playground", **typed)
        assert refused.status_code in (422, 404), refused.text  # before: the error page, without the form
        problem = re.search(r'<form method="post" action="/playground".*?<p class="problem"[^>]*>(.*?)</p>',
                            refused.text, re.S)
        assert problem and field in problem.group(1), refused.text
        prompt = re.search(r'<textarea id="prompt" name="prompt"[^>]*>(.*?)</textarea>', refused.text, re.S).group(1)
        seed = re.search(r'<input id="seed" name="seed"[^>]* value="([^"]*)"', refused.text).group(1)
        assert (html.unescape(prompt), seed) == (typed["prompt"], typed["seed"])
    assert console.get("/api/events").json()["events"] == recorded  # nothing recorded

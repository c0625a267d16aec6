"""A profile's page reads as the API reads: the active profile shows its version in force, a deleted profile its
last name and its whole history, a description typed in a form is stored as the API stores the same text, and an
order the list does not know is refused as the API refuses it. Plain HTTP against the app, as a browser sends it."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.api.conftest import make_client

HTML = {"Accept": "text/html"}


@pytest.fixture
def console(sqlite_url: str) -> Iterator[TestClient[Litestar]]:
    with make_client(sqlite_url) as client:
        yield client


def csrf_token(console: TestClient[Litestar]) -> str:
    return re.search(r'name="_csrf_token" value="([^"]+)"', console.get("/", headers=HTML).text).group(1)


def section(page: str, heading_id: str) -> str:
    """The card whose heading has ``heading_id``, up to its end."""
    start = page.index(f'id="{heading_id}"')
    return page[start:page.index("</section>", start)]


def fact(spec: str, name: str) -> str:
    """What the spec card says under ``name`` (Description, Tags, …)."""
    return html.unescape(re.search(rf"<dt>{name}</dt><dd[^>]*>(.*?)</dd>", spec, re.S).group(1))


def edit_form(console: TestClient[Litestar], profile_id: str) -> dict[str, str]:
    """The edit form's fields as a browser sends them back untouched."""
    return form_fields(console.get(f"/profiles/{profile_id}", headers=HTML).text, f"/profiles/{profile_id}/edit")


def form_fields(page: str, action: str) -> dict[str, str]:
    """The fields of the page's form sent to ``action`` as a browser sends them back untouched: a textarea's line
    breaks (CRLF, LF or a lone CR) as CRLF (the line break right after its opening tag is not part of its value), a
    checkbox when checked."""
    form = page[page.index(f'action="{action}"'):]
    form = form[:form.index("</form>")]
    form = re.sub(r'<input type="checkbox" name="(\w+)">', "", form)  # unchecked: not sent
    form = re.sub(r'<input type="checkbox" name="(\w+)" checked>', r'<input name="\1" value="on">', form)
    fields = {name: html.unescape(value)
              for name, value in re.findall(r'<input[^>]*name="(\w+)"[^>]*value="([^"]*)"', form)}
    for name, value in re.findall(r'<textarea[^>]*name="(\w+)"[^>]*>\n?(.*?)</textarea>', form, re.S):
        fields[name] = html.unescape(value).replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    return fields


def test_the_active_profile_pinned_to_an_earlier_version_shows_that_version_and_names_the_latest(console):
    made = console.post("/api/profiles", json={"name": "calm", "description": "the first words",
                                               "steering": {"1": 1.0}, "tags": ["old"]}).json()
    console.put(f"/api/profiles/{made['id']}", json={"description": "the second words",
                                                     "steering": {"1": 9.0, "2": 1.0}, "tags": ["new"]})
    assert console.post("/api/profiles/calm/activate", json={"version": 1}).status_code == 200
    api = console.get("/api/profiles/calm").json()
    assert (api["version"], api["pinned"], api["latest_version"]) == (1, True, 2)

    page = console.get("/profiles/calm", headers=HTML).text
    assert "Version 1 (in force; latest v2)" in page
    spec = section(page, "spec-heading")
    assert "Spec (version 1, in force; the latest is version 2)" in spec
    assert (fact(spec, "Description"), fact(spec, "Tags")) == ("the first words", "old")
    strengths = re.findall(r'<tr><th scope="row">(\d+)</th><td class="num">([^<]+)</td>', spec)
    assert strengths == [("1", "1.0")]  # version 1's one feature, not version 2's two
    history = section(page, "history-heading")
    assert 'id="v1"' in history and 'id="v2"' in history  # the history still lists every version


def test_a_deleted_profiles_page_shows_its_last_name_and_its_whole_history_a_page_at_a_time(console):
    made = console.post("/api/profiles", json={"name": "big", "steering": {"1": 1.0}}).json()
    url = f"/api/profiles/{made['id']}"
    for version in range(2, 506):
        assert console.put(url, json={"steering": {"1": version / 10}}).status_code == 200
    assert console.put(url, json={"name": "big-final"}).json()["version"] == 506
    assert console.delete(url).status_code == 200

    page = console.get(f"/profiles/{made['id']}", headers=HTML)
    assert page.status_code == 410
    assert re.search(r"<h1>big-final <span", page.text)
    newest = re.findall(r'<tr id="v(\d+)">', page.text)
    assert newest == [str(version) for version in range(506, 481, -1)]  # the newest 25, as a live profile's page
    assert "Newer versions" not in page.text
    shown, pages = list(newest), 1
    while older := re.search(r'<a href="([^"]+)" rel="next">Older versions</a>', page.text):
        page = console.get(html.unescape(older.group(1)), headers=HTML)
        assert page.status_code == 410 and "Newer versions" in page.text
        shown += re.findall(r'<tr id="v(\d+)">', page.text)
        pages += 1
    assert shown == [str(version) for version in range(506, 0, -1)] and pages == 21  # 25 a page, never all at once


def test_paging_the_history_keeps_the_diff_shown_open(console):
    made = console.post("/api/profiles", json={"name": "long", "steering": {"1": 1.0}}).json()
    for version in range(2, 31):
        console.put(f"/api/profiles/{made['id']}", json={"steering": {"1": version / 10}})
    page = console.get(f"/profiles/{made['id']}", params={"from": "1", "to": "3"}, headers=HTML).text
    older = html.unescape(re.search(r'<a href="([^"]+)" rel="next">Older versions</a>', page).group(1))
    assert "from=1" in older and "to=3" in older  # before: the diff closed on the next page of versions
    paged = console.get(older, headers=HTML).text
    assert '<tr id="v5">' in paged and paged.count('class="diff') == page.count('class="diff') > 0


def test_a_description_typed_in_the_console_is_stored_as_the_api_stores_the_same_text(console):
    typed = "  Calm, slow sentences.\r\nNo exclamation marks.  "  # as a browser sends a textarea's two lines
    made = console.post("/profiles", data={"_csrf_token": csrf_token(console), "name": "typed", "steering": "3=1",
                                           "description": typed}, follow_redirects=False)
    assert made.status_code == 303, made.text[:300]
    from_console = console.get(made.headers["location"].replace("/profiles/", "/api/profiles/")).json()
    from_api = console.post("/api/profiles", json={"name": "written", "steering": {"3": 1.0},
                                                   "description": "  Calm, slow sentences.\nNo exclamation marks.  "})
    assert from_console["description"] == from_api.json()["description"] == (
        "  Calm, slow sentences.\nNo exclamation marks.  ")


def test_a_console_edit_keeps_the_line_breaks_of_a_description_written_through_the_api(console):
    made = console.post("/api/profiles", json={"name": "lines", "steering": {"3": 1.0}, "tags": ["a"],
                                               "description": "first line\nsecond line"}).json()
    pid = made["id"]
    only_tags = {**edit_form(console, pid), "tags": "a, b", "bump_version": "on"}
    assert console.post(f"/profiles/{pid}/edit", data=only_tags, headers=HTML).status_code == 200
    changed = [change["field"] for change in console.get(f"/api/profiles/{pid}/diff",
                                                         params={"from": 1, "to": 2}).json()["changes"]]
    assert changed == ["tags"]

    one_more_line = edit_form(console, pid)
    one_more_line.update(description=one_more_line["description"] + "\r\nthird line", bump_version="on")
    assert console.post(f"/profiles/{pid}/edit", data=one_more_line, headers=HTML).status_code == 200
    assert console.get(f"/api/profiles/{pid}").json()["description"] == "first line\nsecond line\nthird line"

    cleared = {**edit_form(console, pid), "description": "  \r\n ", "bump_version": "on"}  # blank: no description
    assert console.post(f"/profiles/{pid}/edit", data=cleared, headers=HTML).status_code == 200
    assert console.get(f"/api/profiles/{pid}").json()["description"] is None


def test_a_console_edit_keeps_a_description_with_lone_carriage_returns_it_did_not_touch(console):
    written = "\nlead\r\nmid\rcr\ttab  trail  \n"  # through the API, as given; a browser sends each break as CRLF
    pid = console.post("/api/profiles", json={"name": "returns", "steering": {"3": 1.0}, "tags": ["a"],
                                              "description": written}).json()["id"]
    untouched = console.post(f"/profiles/{pid}/edit", data={**edit_form(console, pid), "bump_version": "on"},
                             headers=HTML)
    assert untouched.status_code == 200
    assert console.get(f"/api/profiles/{pid}").json()["version"] == 1  # nothing changed: no version
    only_tags = {**edit_form(console, pid), "tags": "a, b", "bump_version": "on"}
    assert console.post(f"/profiles/{pid}/edit", data=only_tags, headers=HTML).status_code == 200
    assert console.get(f"/api/profiles/{pid}").json()["description"] == written


def test_an_order_the_profiles_list_does_not_know_is_a_422_page_as_the_api_answers(console):
    console.post("/api/profiles", json={"name": "calm"})
    assert console.get("/api/profiles", params={"sort": "bogus"}).json()["error"] == "invalid_request"
    shown = console.get("/", params={"sort": "bogus"}, headers=HTML)
    assert shown.status_code == 422 and shown.headers["content-type"].startswith("text/html")
    assert "invalid_request" in shown.text
    for order in ("name", "updated"):
        assert console.get("/", params={"sort": order}, headers=HTML).status_code == 200


def test_a_page_shows_what_the_api_holds_and_a_signed_out_one_is_not_kept_by_the_browser(console):
    made = console.post("/api/profiles", json={
        "name": "wide", "description": "line one\nline  two", "metadata": {"owner": "<alice>"},
        "steering": {str(index): 1.0 + index for index in range(100)}}).json()
    page = console.get(f"/profiles/{made['id']}", headers=HTML)
    assert page.headers["cache-control"] == "no-store"  # before: none; Back after signing out showed it
    spec = section(page.text, "spec-heading")
    assert fact(spec, "Metadata") == '<code>{"owner": "<alice>"}</code>'  # before: not shown at all
    assert 'class="text">line one\nline  two' in spec  # its white space kept, as in the diff's cells
    assert "The 64 strongest of 100 features" in spec  # before: 64 rows, and no word of the other 36

    position = console.get("/api/events").json()["events"][-1]["position"]
    too_long = console.post(f"/profiles/{made['id']}/activate", headers=HTML, data={
        "_csrf_token": csrf_token(console), "reason": "x" * 1001})
    assert too_long.status_code == 422 and "reason must be at most 1000 characters" in too_long.text
    assert console.get("/api/events").json()["events"][-1]["position"] == position  # before: activated, reason cut


def test_the_playground_offers_the_profile_it_was_asked_for_wherever_it_sorts(console):
    for number in range(201):
        console.post("/api/profiles", json={"name": f"a{number:03d}"})
    late = console.post("/api/profiles", json={"name": "zz late"}).json()
    for asked in (late["id"], "zz late", " ZZ Late ", late["id"].upper()):
        page = console.get("/playground", params={"profile": asked}, headers=HTML).text
        assert f'<option value="{late["id"]}" selected>zz late (v1)</option>' in page, asked
        assert page.count(f'<option value="{late["id"]}"') == 1, asked
    first = console.get("/playground", params={"profile": "A000"}, headers=HTML).text  # one already offered
    assert first.count('selected>a000 (v1)</option>') == 1 and first.count(">a000 (v1)</option>") == 1


def test_the_playground_offers_every_profile_however_many_features_the_first_ones_steer(console):
    wide = {str(index): 1.0 for index in range(40_000)}
    for name in ("a wide", "b wide"):
        assert console.post("/api/profiles", json={"name": name, "steering": wide}).status_code == 201
    for name in ("c", "d", "e"):
        console.post("/api/profiles", json={"name": name})
    page = console.get("/playground", headers=HTML).text
    offered = re.findall(r'<option value="[^"]+"[^>]*>([^<]+) \(v1\)</option>', page)
    assert offered == ["a wide", "b wide", "c", "d", "e"]  # before: "a wide" alone (a page of the list is bounded)


def test_a_delete_from_a_page_shown_before_a_change_is_refused_as_a_stale_edit_is(console):
    made = console.post("/api/profiles", json={"name": "kept", "steering": {"1": 1.0}}).json()
    page = console.get(f"/profiles/{made['id']}", headers=HTML).text
    form = page[page.index(f'action="/profiles/{made["id"]}/delete"'):]
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form[:form.index("</form>")]))
    console.put(f"/api/profiles/{made['id']}", json={"steering": {"1": 5.0}})  # another tab's change
    stale = console.post(f"/profiles/{made['id']}/delete", headers=HTML, data={**fields, "reason": "old"})
    assert stale.status_code == 412 and "stale_version" in stale.text  # before: deleted, change unseen
    assert f'<a href="/profiles/{made["id"]}">Back to the profile, as it is now</a>' in stale.text
    assert console.get(f"/api/profiles/{made['id']}").json()["version"] == 2


def test_a_history_page_that_is_no_version_number_is_refused_naming_it(console):
    made = console.post("/api/profiles", json={"name": "paged", "steering": {"1": 1.0}}).json()
    for given in ("abc", "0", "-1", "99999999999999999999"):
        refused = console.get(f"/profiles/{made['id']}", params={"history_from": given}, headers=HTML)
        assert refused.status_code == 422 and "history_from" in html.unescape(refused.text), given


def test_an_activation_from_a_page_shown_before_a_change_is_refused_so_no_unseen_steering_is_put_in_force(console):
    made = console.post("/api/profiles", json={"name": "reviewed", "steering": {"1": 1.0}}).json()

    def activate_form() -> dict[str, str]:
        page = console.get(f"/profiles/{made['id']}", headers=HTML).text
        form = page[page.index(f'action="/profiles/{made["id"]}/activate"'):]
        return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form[:form.index("</form>")]))

    fields = activate_form()
    console.put(f"/api/profiles/{made['id']}", json={"steering": {"1": 150.0}})  # another tab's change
    stale = console.post(f"/profiles/{made['id']}/activate", headers=HTML, data={**fields, "reason": "reviewed"})
    assert stale.status_code == 412 and "stale_version" in stale.text  # before: version 2 in force, never seen
    assert console.get("/api/profiles/active").status_code == 404
    reviewed = console.post(f"/profiles/{made['id']}/activate", headers=HTML, data={**activate_form(), "reason": "ok"})
    assert reviewed.status_code == 200 and console.get("/api/profiles/active").json()["steering"] == {"1": 150.0}


def test_a_form_refused_for_what_was_typed_comes_back_holding_it_with_the_refusal_above_it(console):
    """A browser going Back from an error page got the form empty again (no console page is kept by the browser).
    A create or an edit refused for a value (422) or a name taken (409) now shows its own page again, its form
    holding what was typed and saying why; nothing is recorded. A profile changed since its page was shown (412)
    still gets the error page: the form kept would put back what the change changed."""
    token = csrf_token(console)
    console.post("/api/profiles", json={"name": "taken"})
    typed = {"name": "calm", "steering": "1=1, 2=oops", "description": "two\r\nlines", "tags": "a, \"b, c\"",
             "model_id": "m", "layer": "3", "reason": "first try"}
    refused = console.post("/profiles", data={"_csrf_token": token, **typed}, headers=HTML, follow_redirects=False)
    assert refused.status_code == 422, refused.text  # before: the error page, and Back gave the form empty
    create = section(refused.text, "create-heading")
    assert "feature 2 must be a number" in create and 'role="alert"' in create
    kept = form_fields(refused.text, "/profiles")
    assert {name: kept[name] for name in typed} == typed
    fixed = {**kept, "steering": "1=1, 2=3"}
    taken = console.post("/profiles", data={**fixed, "name": "taken"}, headers=HTML, follow_redirects=False)
    assert taken.status_code == 409 and "profile_name_taken" in section(taken.text, "create-heading")
    assert form_fields(taken.text, "/profiles") == {**fixed, "name": "taken"}
    made = console.post("/profiles", data=fixed, headers=HTML, follow_redirects=False)
    assert made.status_code == 303, made.text
    calm = console.get("/api/profiles/calm").json()
    assert (calm["version"], calm["description"], calm["tags"], calm["layer"]) == (1, "two\nlines", ["a", "b, c"], 3)

    sent = {**edit_form(console, calm["id"]), "steering": "5=x", "description": "edited"}
    refused = console.post(f"/profiles/{calm['id']}/edit", data=sent, headers=HTML, follow_redirects=False)
    assert refused.status_code == 422 and "feature 5 must be a number" in section(refused.text, "edit-heading")
    again = form_fields(refused.text, f"/profiles/{calm['id']}/edit")
    assert again == sent  # the version it was based on too
    console.put(f"/api/profiles/{calm['id']}", json={"description": "changed meanwhile"})
    stale = console.post(f"/profiles/{calm['id']}/edit", data={**again, "steering": "5=1"}, headers=HTML,
                         follow_redirects=False)
    assert stale.status_code == 412 and 'action="/profiles/' not in stale.text  # the error page, no form
    assert console.get("/api/profiles/calm").json()["description"] == "changed meanwhile"
    scripted = console.post("/profiles", data=typed | {"_csrf_token": token})  # a client that asks for no page
    assert scripted.status_code == 422 and scripted.json()["error"] == "invalid_value", scripted.text


def test_the_create_form_says_it_starts_from_the_active_profile_and_can_make_a_profile_with_no_steering(console):
    console.post("/api/profiles", json={"name": "calm", "steering": {"3": 1.0}, "layer": 4})
    assert console.post("/api/profiles/calm/activate").status_code == 200
    create = form_fields(console.get("/", headers=HTML).text, "/profiles")
    assert create.get("from_active") == "on"  # shown, and checked: as the API, an empty steering copies the active
    assert "start from the active profile, calm (version 1)" in section(console.get("/", headers=HTML).text,
                                                                          "create-heading")
    copied = console.post("/profiles", headers=HTML, data={**create, "name": "copied"})
    assert copied.status_code == 200, copied.text
    alone = {key: value for key, value in create.items() if key != "from_active"}  # the box unticked
    empty = console.post("/profiles", headers=HTML, data={**alone, "name": "empty"})
    assert empty.status_code == 200, empty.text
    specs = {name: console.get(f"/api/profiles/{name}").json() for name in ("copied", "empty")}
    assert (specs["copied"]["steering"], specs["copied"]["layer"]) == ({"3": 1.0}, 4)
    assert (specs["empty"]["steering"], specs["empty"]["layer"]) == ({}, None)  # before: calm's, unasked


def test_a_playground_asked_for_a_profile_that_is_not_there_says_so_instead_of_choosing_the_active_one(console):
    made = console.post("/api/profiles", json={"name": "calm", "steering": {"3": 1.0}}).json()
    console.post("/api/profiles", json={"name": "gone"})
    assert console.request("DELETE", "/api/profiles/gone").status_code in (200, 204)
    assert console.post("/api/profiles/calm/activate").status_code == 200
    for asked in ("nope", "gone"):
        answer = console.get("/playground", params={"profile": asked}, headers=HTML)
        assert answer.status_code == 404, asked  # was 200, the active profile chosen, nothing said
        assert f"<code>profile_not_found</code> — no live profile has the id or name &#39;{asked}&#39;" in answer.text
        assert " selected>" not in answer.text.split('id="profile"', 1)[1].split("</select>", 1)[0]
    chosen = console.get("/playground", params={"profile": "calm"}, headers=HTML)
    assert chosen.status_code == 200 and f'<option value="{made["id"]}" selected>' in chosen.text


def test_a_form_whose_security_token_no_longer_matches_says_to_reload_the_page_and_changes_nothing(console):
    made = console.post("/api/profiles", json={"name": "calm", "steering": {"3": 1.0}}).json()
    fields = edit_form(console, made["id"])
    refused = console.post(f"/profiles/{made['id']}/edit", headers=HTML, data={
        **fields, "_csrf_token": "signed-by-a-server-since-restarted", "description": "typed"})
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("text/html")
    assert "nothing was changed; reload the page and send it again" in refused.text  # was only "CSRF token
    assert console.get("/api/profiles/calm").json()["description"] is None           # verification failed"


def test_tags_typed_with_a_quote_never_closed_are_refused_with_the_form_kept(console):
    create = form_fields(console.get("/", headers=HTML).text, "/profiles")
    refused = console.post("/profiles", headers=HTML, data={**create, "name": "quoted", "tags": '"a, b, c'})
    assert refused.status_code == 422  # was 303: stored as the tags '"a', 'b' and 'c'
    assert "is never closed" in refused.text and 'value="&#34;a, b, c"' in refused.text
    assert console.get("/api/profiles/quoted").status_code == 404

"""Acceptance 5: no console page and no file the console serves loads anything from outside the server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from ledger.console.rendering import STATIC, TEMPLATES
from tests.api.conftest import make_client

# A reference that leaves the server: a scheme (http:, https:, ftp:, …) or a protocol-relative //host.
EXTERNAL = re.compile(r"""(?:src|href|action|srcset|poster|data|formaction)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:(?!,)|//)""", re.I)
CSS_EXTERNAL = re.compile(r"""(?:url\(\s*["']?\s*(?:https?:|//)|@import)""", re.I)
ALLOWED_SCHEMES = re.compile(r"""=\s*["']?\s*(?:data:,|#)""")


def served_files() -> list[Path]:
    return sorted(path for root in (TEMPLATES, STATIC) for path in root.rglob("*") if path.is_file())


@pytest.mark.parametrize("path", served_files(), ids=lambda path: path.name)
def test_no_template_or_static_file_points_outside_the_server(path: Path):
    text = path.read_text(errors="replace")
    if path.suffix == ".js":
        # the vendored htmx builds: no fetch of their own from a fixed address
        assert not re.search(r"""["'`]https?://""", text), path
        return
    offending = [match.group(0) for match in EXTERNAL.finditer(text) if not ALLOWED_SCHEMES.search(match.group(0))]
    assert offending == [], path
    assert not CSS_EXTERNAL.search(text), path


@pytest.fixture
def console(sqlite_url: str) -> Iterator[TestClient[Litestar]]:
    with make_client(sqlite_url) as client:
        yield client


def test_no_page_loads_anything_from_another_origin(console: TestClient[Litestar]):
    page = console.get("/")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text).group(1)
    made = console.post("/profiles", data={"_csrf_token": token, "name": "calm", "steering": "3=1"}, follow_redirects=False)
    assert made.status_code == 303, made.text
    profile = made.headers["location"]
    for path in ("/", profile, f"{profile}?from=1&to=1", "/events", "/events/verify", "/playground", "/status", "/login"):
        answer = console.get(path)
        assert answer.status_code == 200, (path, answer.text[:300])
        assert answer.headers["content-type"].startswith("text/html")
        offending = [m.group(0) for m in EXTERNAL.finditer(answer.text) if not ALLOWED_SCHEMES.search(m.group(0))]
        assert offending == [], path


def test_the_timeline_filters_by_a_profile_name_or_id_and_by_actor(console: TestClient[Litestar]):
    page = console.get("/")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text).group(1)
    for name in ("calm", "loud"):
        made = console.post("/profiles", data={"_csrf_token": token, "name": name, "steering": "3=1"}, follow_redirects=False)
        assert made.status_code == 303, made.text
    calm = console.get("/events", params={"profile": "calm", "type": "Profile.Created"}).text
    assert calm.count('class="event') == 1 and ">calm<" in calm
    by_id = console.get("/events", params={"profile": re.search(r"/profiles/([0-9a-f-]{36})", calm).group(1)}).text
    assert ">calm<" in by_id and ">loud<" not in by_id
    assert console.get("/events", params={"profile": "nobody"}, headers={"Accept": "text/html"}).status_code == 404
    assert 'class="event' not in console.get("/events", params={"actor": "someone else"}).text


def test_a_profile_page_is_found_by_name_and_a_stale_edit_is_refused(console: TestClient[Litestar]):
    html = {"Accept": "text/html"}
    token = re.search(r'name="_csrf_token" value="([^"]+)"', console.get("/").text).group(1)
    console.post("/profiles", data={"_csrf_token": token, "name": "Calm Sea", "steering": "3=1"})
    page = console.get("/profiles/calm%20sea", headers=html)
    assert page.status_code == 200 and "Calm Sea" in page.text
    assert console.get("/profiles/Calm%20Sea/export").status_code == 200
    for path in ("/profiles/nobody", "/profiles/nobody/export"):
        shown = console.get(path, headers=html)
        assert shown.status_code == 404 and shown.headers["content-type"].startswith("text/html")
    form = dict(re.findall(r'name="(expected_\w+)" value="(\d+)"', page.text), _csrf_token=token, name="Calm Sea", steering="3=1")
    keep = {**form, "description": "edited in place"}  # no bump_version: the version stays, the ETag moves
    assert console.post("/profiles/calm%20sea/edit", data=keep, headers=html).status_code == 200
    stale = console.post("/profiles/calm%20sea/edit", data={**form, "description": "overwrites"}, headers=html)
    assert stale.status_code == 412 and "edited in place" in console.get("/profiles/calm%20sea").text


@pytest.mark.parametrize("path", ["/executions/12345"])
def test_an_address_that_names_no_id_is_a_clear_422(console: TestClient[Litestar], path: str):
    shown = console.get(path, headers={"Accept": "text/html"})
    assert shown.status_code == 422 and shown.headers["content-type"].startswith("text/html")
    assert "invalid_request" in shown.text
    answer = console.get(path)  # a client that does not ask for a page gets the API's error body
    assert answer.status_code == 422 and answer.json()["error"] == "invalid_request"


def test_a_number_beyond_any_version_or_position_in_an_address_is_a_clear_422(console: TestClient[Litestar]):
    console.post("/api/profiles", json={"name": "calm"})
    for path, params in (("/profiles/calm/export", {"version": 2**63}), ("/profiles/calm/export", {"version": 0}),
                         ("/events", {"before": 2**64}), ("/events", {"before": -1})):
        shown = console.get(path, params=params, headers={"Accept": "text/html"})
        assert shown.status_code == 422 and shown.headers["content-type"].startswith("text/html"), (path, params)


def test_a_page_refuses_a_query_parameter_it_does_not_take_or_one_given_twice_rather_than_ignore_it(
        console: TestClient[Litestar]):
    """As the API refuses them: ``?as_of=`` on a profile's page showed the present as if it were the moment asked,
    and ``/?tag=a&tag=b`` listed the profiles tagged b alone."""
    html = {"Accept": "text/html"}
    console.post("/api/profiles", json={"name": "calm", "tags": ["a"]})
    console.put("/api/profiles/calm", json={"description": "later"})
    for path, params, named in (("/profiles/calm", {"as_of": "2020-01-01T00:00:00Z"}, "as_of"),
                                ("/", [("tag", "a"), ("tag", "b")], "tag"), ("/status", {"verbose": "1"}, "verbose"),
                                ("/events", {"actor": "x", "before": "9", "since": "2020-01-01"}, "since")):
        shown = console.get(path, params=params, headers=html)
        assert shown.status_code == 422 and shown.headers["content-type"].startswith("text/html"), (path, shown.text)
        assert re.search(rf"(unknown query parameter|query parameter) .{{1,6}}{named}", shown.text), shown.text
        assert console.get(path, params=params).json()["field"] == named  # a client that does not ask for a page
    for path, params in (("/profiles/calm", {"from": "1", "to": "2", "history_from": "2"}), ("/", {"tag": "a, b"}),
                         ("/events", {"actor": "x", "before": "9"}), ("/login", {"next": "/", "ended": "1"})):
        assert console.get(path, params=params, headers=html).status_code == 200, (path, params)


def test_an_address_no_route_has_is_a_page_for_a_browser_and_json_for_a_client(console: TestClient[Litestar]):
    html = {"Accept": "text/html"}
    for method, path, status in (("GET", "/profilez", 404), ("DELETE", "/events", 405)):
        shown = console.request(method, path, headers=html)
        assert shown.status_code == status and shown.headers["content-type"].startswith("text/html"), path
        assert "Back to the profiles" in shown.text
        answer = console.request(method, path)
        assert answer.status_code == status and answer.json()["error"] in ("not_found", "method_not_allowed")
    assert console.get("/api/nope", headers=html).json()["error"] == "not_found"  # the API answers JSON always


def test_an_unknown_id_is_a_404_page(console: TestClient[Litestar]):
    shown = console.get("/profiles/00000000-0000-4000-8000-000000000000", headers={"Accept": "text/html"})
    assert shown.status_code == 404 and shown.headers["content-type"].startswith("text/html")


def test_the_live_timeline_refuses_a_position_no_log_has(console: TestClient[Litestar]):
    huge = str(2**64)
    assert console.get("/events/stream", params={"after": huge}).status_code == 422
    refused = console.get("/events/stream", headers={"Last-Event-ID": huge})
    assert refused.status_code == 422 and refused.json()["field"] == "Last-Event-ID"


def test_the_timelines_chain_check_walks_only_what_is_new_as_a_readers_verify_does(console: TestClient[Litestar]):
    console.post("/api/profiles", json={"name": "calm", "steering": {"3": 1.0}})
    first = console.get("/events/verify").text
    assert "chain intact" in first and "since position" not in first  # the first walk of this server
    console.post("/api/profiles", json={"name": "bold", "steering": {"4": 1.0}})
    second = console.get("/events/verify").text
    assert "chain intact" in second and "since position" in second  # not the whole log again


def test_an_open_mode_sign_in_takes_a_name_in_any_script_and_refuses_control_characters(
    console: TestClient[Litestar],
):
    token = re.search(r'name="_csrf_token" value="([^"]+)"', console.get("/login").text).group(1)
    signed = console.post("/login", data={"_csrf_token": token, "name": "☃ Zoë 雪"}, follow_redirects=False)
    assert signed.status_code == 303
    made = console.post("/profiles", data={"_csrf_token": token, "name": "calm", "steering": "3=1"},
                        follow_redirects=False)
    assert made.status_code == 303
    assert console.get("/api/events", params={"type": "Profile.Created"}).json()["events"][0]["actor"] == "☃ Zoë 雪"
    refused = console.post("/login", data={"_csrf_token": token, "name": "a\r\nSet-Cookie: z=1"})
    assert refused.status_code == 422 and "control or invisible" in refused.text


def test_a_number_too_long_for_any_column_in_a_form_is_a_422_page(console: TestClient[Litestar]):
    html = {"Accept": "text/html"}
    token = re.search(r'name="_csrf_token" value="([^"]+)"', console.get("/").text).group(1)
    console.post("/profiles", data={"_csrf_token": token, "name": "calm", "steering": "3=1"})
    for huge in (str(2**64), "9" * 4301):
        for action, form in (("revert", {"version": huge}), ("activate", {"version": huge}),
                             ("edit", {"name": "calm", "steering": "3=1", "layer": huge}),
                             ("edit", {"name": "calm", "steering": "3=1", "expected_version": huge})):
            shown = console.post(f"/profiles/calm/{action}", data={"_csrf_token": token, **form}, headers=html)
            assert shown.status_code == 422, (action, form, shown.text[:200])


def test_saving_the_edit_form_changes_only_what_was_edited(console: TestClient[Litestar]):
    """The edit form shows every strength exactly, and a tag holding a comma or semicolon is kept as it is."""
    import html

    made = console.post("/api/profiles", json={
        "name": "precise", "steering": {"1": 1.23456789, "2": 0.000012345678, "3": 123.4567891},
        "tags": ["a;b", "c,d"], "products": ["p1; p2"], "description": "before",
    }).json()
    shown = console.get("/profiles/precise", headers={"Accept": "text/html"}).text
    edit = shown[shown.index('action="/profiles/' + made["id"] + '/edit"'):]
    form = {name: html.unescape(value) for name, value in re.findall(r'<input[^>]*name="(\w+)"[^>]*value="([^"]*)"', edit)}
    form["steering"] = html.unescape(re.search(r'<textarea[^>]*name="steering"[^>]*>([^<]*)</textarea>', edit).group(1))
    form.update(description="after", bump_version="on")
    saved = console.post(f"/profiles/{made['id']}/edit", data=form, headers={"Accept": "text/html"})
    assert saved.status_code == 200, saved.text[:300]
    now = console.get(f"/api/profiles/{made['id']}").json()
    assert (now["version"], now["description"]) == (2, "after")
    assert now["steering"] == made["steering"] and now["tags"] == ["a;b", "c,d"] and now["products"] == ["p1; p2"]


def test_a_version_below_one_in_a_form_is_a_422_page(console: TestClient[Litestar]):
    token = re.search(r'name="_csrf_token" value="([^"]+)"', console.get("/").text).group(1)
    console.post("/profiles", data={"_csrf_token": token, "name": "calm", "steering": "3=1"})
    for action in ("revert", "activate"):
        for bad in ("0", "-1"):
            shown = console.post(f"/profiles/calm/{action}", data={"_csrf_token": token, "version": bad},
                                 headers={"Accept": "text/html"})
            assert shown.status_code == 422 and "at least 1" in shown.text, (action, bad)


def test_every_page_forbids_framing_by_another_site_and_loads_only_from_this_server(console: TestClient[Litestar]):
    console.post("/api/profiles", json={"name": "calm", "steering": {"3": 1.0}})
    for path in ("/", "/profiles/calm", "/events", "/playground", "/status", "/login"):
        headers = console.get(path, headers={"Accept": "text/html"}).headers
        policy = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy, path
        assert (headers["X-Frame-Options"], headers["X-Content-Type-Options"]) == ("DENY", "nosniff"), path


def test_an_error_page_forbids_framing_and_loads_only_from_this_server_as_every_page_does(
    console: TestClient[Litestar],
):
    html = {"Accept": "text/html"}
    made = console.post("/api/profiles", json={"name": "calm", "steering": {"3": 1.0}}).json()
    page = console.get("/profiles/calm", headers=html).text
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page).group(1)
    stale = dict(re.findall(r'name="(expected_\w+)" value="(\d+)"', page), _csrf_token=token, name="calm",
                 steering="3=1", description="first")
    assert console.post("/profiles/calm/edit", data=stale, headers=html).status_code == 200
    answers = {
        404: console.get("/profiles/no-such", headers=html),
        422: console.get("/profiles/calm", params={"from": 0}, headers=html),
        403: console.post(f"/profiles/{made['id']}/activate", data={}, headers=html),  # no CSRF token
        412: console.post("/profiles/calm/edit", data={**stale, "description": "second"}, headers=html),
    }
    for status, answer in answers.items():
        assert answer.status_code == status and answer.headers["content-type"].startswith("text/html"), status
        policy = answer.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy, status
        assert (answer.headers.get("X-Frame-Options"), answer.headers.get("X-Content-Type-Options")) == (
            "DENY", "nosniff"), status


def test_the_profiles_page_shows_a_pinned_active_profile_as_it_filters_it_by_its_version_in_force(
    console: TestClient[Litestar],
):
    made = console.post("/api/profiles", json={"name": "calm", "steering": {"1": 1.0}, "tags": ["old"]}).json()
    console.put(f"/api/profiles/{made['id']}", json={"steering": {"1": 9.0, "2": 1.0}, "tags": ["new"]})
    console.post(f"/api/profiles/{made['id']}/activate", json={"version": 1})
    html = {"Accept": "text/html"}
    row = re.search(r'<tr class="is-active">(.*?)</tr>', console.get("/", params={"tag": "old"}, headers=html).text,
                    re.S).group(1)
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
    assert cells[1].startswith("1") and "latest v2" in cells[1] and cells[2] == "1" and cells[3] == "old", cells
    assert "pinned v1" in row
    assert "No profiles match" in console.get("/", params={"tag": "new"}, headers=html).text


def test_every_execution_of_a_profile_is_reached_from_its_page_a_page_at_a_time(console: TestClient[Litestar]):
    made = console.post("/api/profiles", json={"name": "busy", "steering": {"1": 1.0}}).json()
    recorded = {console.post(f"/api/profiles/{made['id']}/executions", json={"seed": n}).json()["id"] for n in range(60)}
    html, seen, url = {"Accept": "text/html"}, [], f"/profiles/{made['id']}"
    while url:
        shown = console.get(url, headers=html)
        assert shown.status_code == 200, shown.text[:300]
        seen += re.findall(r'<a href="/executions/([0-9a-f-]{36})">', shown.text)
        older = re.search(r'<a href="([^"]+)" rel="next">Older executions</a>', shown.text)
        url = older and older.group(1).replace("&amp;", "&")
    assert len(seen) == len(set(seen)) == 60 and set(seen) == recorded


def test_a_diff_and_a_spec_show_values_exactly(console: TestClient[Litestar]):
    made = console.post("/api/profiles", json={"name": "exact", "steering": {"1": 199.99999, "2": 1.23456789},
                                               "tags": ["a", "b"], "metadata": {"k": True, "n": None}}).json()
    console.put(f"/api/profiles/{made['id']}", json={"tags": ["a, b"], "metadata": {"k": False}})
    import html

    page = html.unescape(console.get(f"/profiles/{made['id']}", params={"from": 1, "to": 2},
                                     headers={"Accept": "text/html"}).text)
    assert '["a", "b"]' in page and '["a, b"]' in page  # two tags, then one: not both "a, b"
    assert '{"k": true, "n": null}' in page and '{"k": false}' in page  # JSON, not Python's repr
    assert "199.99999" in page and "1.23456789" in page  # strengths exactly, not rounded to 200 and 1.23457


def test_a_tag_chip_finds_its_profiles_whatever_the_tag_holds(console: TestClient[Litestar]):
    import html

    console.post("/api/profiles", json={"name": "odd", "tags": ["x,y", 'say "hi"; bye', "plain"]})
    console.post("/api/profiles", json={"name": "other", "tags": ["x", "y"]})
    listing = console.get("/", headers={"Accept": "text/html"}).text
    odd_row = re.search(r'<a href="/profiles/[^"]+">odd</a>.*?</tr>', listing, re.S).group(0)
    chips = [html.unescape(href) for href in re.findall(r'<a class="chip" href="(/\?[^"]*tag=[^"]*)"', odd_row)]
    assert len(chips) == 3
    for chip in chips:
        found = console.get(chip, headers={"Accept": "text/html"}).text
        names = re.findall(r'<a href="/profiles/[^"]+">([^<]+)</a>', found)
        assert names == ["odd"], (chip, names)


def test_the_csrf_cookie_is_secure_over_https_as_the_token_cookie_is(sqlite_url: str):
    from litestar.testing import TestClient as Client

    from ledger.api.app import create_app
    from ledger.settings import Database, Settings

    for scheme, secure in (("https", True), ("http", False)):
        app = create_app(Settings(database=Database(sqlite_url)), auth=False)
        with Client(app, base_url=f"{scheme}://testserver.localhost") as client:
            cookies = [value for name, value in client.get("/", headers={"Accept": "text/html"}).headers.multi_items()
                       if name == "set-cookie" and value.startswith("ledger_console_csrf=")]
            assert len(cookies) == 1 and ("; Secure" in cookies[0]) is secure, (scheme, cookies)


def test_an_empty_csrf_cookie_is_replaced_at_the_next_page_so_the_forms_work_again(sqlite_url: str):
    from litestar.testing import TestClient as Client

    from ledger.api.app import create_app
    from ledger.settings import Database, Settings

    app = create_app(Settings(database=Database(sqlite_url)), auth=False)
    with Client(app, base_url="http://testserver.localhost") as client:
        page = client.get("/", headers={"Accept": "text/html", "Cookie": "ledger_console_csrf="})
        cookies = [value for name, value in page.headers.multi_items()
                   if name == "set-cookie" and value.startswith("ledger_console_csrf=")]
        assert len(cookies) == 1 and not cookies[0].startswith("ledger_console_csrf=;"), cookies
        token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text).group(1)
        made = client.post("/profiles", data={"_csrf_token": token, "name": "works"}, follow_redirects=False)
        assert made.status_code == 303, made.text[:300]


def test_the_product_filter_takes_several_as_the_tag_filter_does(console: TestClient[Litestar]):
    import html

    console.post("/api/profiles", json={"name": "one", "products": ["p,1"]})
    console.post("/api/profiles", json={"name": "two", "products": ["p2"]})
    console.post("/api/profiles", json={"name": "three", "products": ["p3"]})

    def listed(path: str, **params: str) -> list[str]:
        found = console.get(path, params=params or None, headers={"Accept": "text/html"}).text
        return re.findall(r'<a href="/profiles/[^"]+">([^<]+)</a>', found)

    assert listed("/", product='"p,1", p3') == ["one", "three"]  # any of them
    listing = console.get("/", headers={"Accept": "text/html"}).text
    chip = html.unescape(re.search(r'<a class="chip" href="(/\?[^"]*product=[^"]*)">p,1</a>', listing).group(1))
    assert listed(chip) == ["one"]

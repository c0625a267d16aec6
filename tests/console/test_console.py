"""The web console in a real browser (headless Chromium) against a real ``ledger serve`` process.

A person manages a profile through the pages only: create, two edits, the diff of versions 1 and 3, a revert,
a pinned activation, a compared generation in the playground and its replay; a second tab on ``/events``
shows each change arrive without being reloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import NARROW, VIEWPORT

pytestmark = pytest.mark.slow

LIVE_TIMEOUT = 15_000  # ms: an event reaches the timeline within the read model's lag plus the stream's poll


def shoot(page: Any, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def wider(page: Any) -> list[str]:
    """The elements that stick out of the window (to say what breaks a narrow layout)."""
    return page.evaluate(
        "() => [...document.querySelectorAll('body *')].filter(e => !e.closest('.scroll') && e.getBoundingClientRect().right > "
        "window.innerWidth + 1).slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + e.outerHTML.slice(0, 80))"
        ".concat([window.innerWidth, document.documentElement.clientWidth, document.body.scrollWidth].map(String))"
    )


def submit(page: Any, form: Any, button: str) -> None:
    """Submit a form by its button and wait for the page it leads to."""
    with page.expect_navigation():
        form.get_by_role("button", name=button).click()


def test_a_profile_is_managed_and_run_through_the_console(browser, serve, database_url, screenshots):
    from playwright.sync_api import expect

    server = serve(database_url)
    base = server.base_url
    context = browser.new_context(viewport=VIEWPORT, base_url=base)
    page, timeline = context.new_page(), context.new_page()
    expect.set_options(timeout=LIVE_TIMEOUT)

    # A name for the actor (open mode), then the live timeline in a second tab.
    page.goto("/login")
    page.get_by_label("Your name").fill("alice")
    submit(page, page.locator("main form"), "Continue")
    timeline.goto("/events")
    timeline.evaluate("window.notReloaded = true")
    events = timeline.locator("#timeline")

    def arrives(event_type: str, count: int = 1) -> None:
        expect(events.locator("li.event", has_text=event_type)).to_have_count(count)

    # Create.
    page.goto("/")
    create = page.locator("form[action='/profiles']")
    create.get_by_label("Name").fill("calm")
    create.get_by_label("Steering").fill("3=4, 7=-2")
    create.get_by_label("Layer").fill("1")
    create.get_by_label("Tags").fill("mood")
    create.get_by_label("Why").fill("first cut")
    submit(page, create, "Create")
    expect(page.get_by_role("heading", level=1)).to_contain_text("calm")
    profile_url = page.url
    arrives("Profile.Created")
    expect(events.locator("li.event", has_text="Profile.Created")).to_contain_text("alice")

    # Edit twice: versions 2 and 3.
    for steering, reason in (("3=5, 9=1.5", "stronger"), ("3=5, 9=1.5, 11=2", "one more feature")):
        edit = page.locator("form[action$='/edit']")
        edit.get_by_label("Steering").fill(steering)
        edit.get_by_label("Why").fill(reason)
        submit(page, edit, "Save")
    expect(page.locator("p.meta")).to_contain_text("Version 3")
    arrives("Profile.SpecRevised", 2)
    expect(page.locator("table.history")).to_contain_text("one more feature")

    # The diff of versions 1 and 3, coloured by kind (swapped in by htmx).
    page.get_by_role("spinbutton", name="From version").fill("1")
    page.get_by_role("spinbutton", name="To version").fill("3")
    page.get_by_role("button", name="Show the differences").click()
    diff = page.locator("#diff table.diff")
    expect(diff.locator("tr.added")).to_contain_text(["feature 9", "feature 11"])
    expect(diff.locator("tr.removed")).to_contain_text("feature 7")
    expect(diff.locator("tr.changed", has_text="feature 3")).to_contain_text("5")
    assert diff.locator("tr.added td").first.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
    shoot(page, screenshots, "profile")
    page.locator("section", has=page.locator("#diff")).screenshot(path=str(screenshots / "console-diff.png"))

    # Revert to version 1: version 4 has version 1's spec.
    with page.expect_navigation():
        page.get_by_role("button", name="Revert to version 1").click()
    expect(page.locator("p.meta")).to_contain_text("Version 4")
    expect(page.locator("table.bars")).to_contain_text("7")
    expect(page.locator("#v4")).to_contain_text("reverted to v1")  # the history says which version came back
    arrives("Profile.SpecRevised", 3)

    # Activate version 2, pinned.
    activate = page.locator("form[action$='/activate']")
    activate.get_by_label("Pin version").fill("2")
    submit(page, activate, "Activate")
    expect(page.get_by_role("heading", level=1)).to_contain_text("pinned v2")
    expect(page.get_by_role("status")).to_contain_text("Activated: version 2 is in force (pinned)")
    expect(page.locator("p.meta")).to_contain_text("Version 2 (in force; latest v4)")  # as the API reads it
    expect(page.locator("table.bars tbody tr")).to_have_count(2)  # version 2's features 3 and 9
    arrives("Profile.Activated")
    page.goto("/")
    expect(page.locator("tr.is-active")).to_contain_text("calm")
    shoot(page, screenshots, "profiles")

    # The playground: steered and unsteered side by side, streamed, recorded as an execution.
    page.goto("/playground")
    page.get_by_label("Prompt").fill("hello sea")
    page.get_by_label("Profile", exact=True).select_option(label="calm (v2, active)")  # the version that runs
    page.get_by_label("Seed (empty: random)").fill("4")
    page.get_by_label("Temperature").fill("0.8")
    page.get_by_label("Max tokens").fill("8")
    page.get_by_label("Compare with unsteered").check()
    page.get_by_role("button", name="Generate").dblclick()  # one run (before: two, each recorded)
    recorded = page.locator("#recorded a")
    expect(recorded).to_be_visible()
    steered_text = page.locator("#steered").inner_text()
    expect(page.locator("#unsteered")).to_be_visible()
    shoot(page, screenshots, "playground")
    page.locator("#run").screenshot(path=str(screenshots / "console-playground.png"))
    arrives("Execution.Recorded")

    # The recorded execution holds exactly the streamed text; replaying it reproduces it.
    with page.expect_navigation():
        recorded.click()
    expect(page.locator("dl.facts")).to_contain_text("seed".capitalize())
    assert page.locator("dd.text").inner_text() == steered_text
    page.get_by_role("button", name="Replay").click()
    expect(page.locator(".replay-result")).to_have_text("reproduced")
    shoot(page, screenshots, "execution")
    arrives("Execution.Recorded", 2)

    # The same replay from the profile's executions table.
    page.goto(profile_url)
    page.locator("table.executions").get_by_role("button", name="Replay").first.click()
    expect(page.locator("table.executions .replay-result").first).to_have_text("reproduced")
    arrives("Execution.Recorded", 3)

    # The timeline was never reloaded, is newest first, and the chain checks out.
    assert timeline.evaluate("window.notReloaded") is True
    positions = [int(p) for p in events.locator("li.event").evaluate_all("els => els.map(e => e.dataset.position)")]
    assert positions == sorted(positions, reverse=True)
    expect(timeline.locator("#verify")).to_contain_text("chain intact")
    shoot(timeline, screenshots, "events")

    # Export, import the document back under a new name, and delete the copy.
    page.goto(profile_url)
    with page.expect_download() as download:
        page.get_by_role("link", name="Export (JSON)").click()
    exported = screenshots.parent / f"{screenshots.name}-calm.json"
    download.value.save_as(exported)
    page.goto("/")
    imported = page.locator("form[action='/profiles/import']")
    imported.get_by_label("Exchange document").set_input_files(str(exported))
    imported.get_by_label("On a name clash").check()
    submit(page, imported, "Import")
    expect(page.get_by_role("heading", level=1)).not_to_have_text("calm")
    expect(page.locator("table.bars")).to_contain_text("9")  # version 2's spec: in force, as the page showed it
    delete = page.locator("form[action$='/delete']")
    delete.get_by_label("Why").fill("a copy")
    copy_url = page.url
    submit(page, delete, "Delete profile")
    arrives("Profile.Deleted")
    expect(page.locator("table.profiles tbody tr")).to_have_count(1)
    page.goto(copy_url)  # a deleted profile keeps its history
    expect(page.get_by_role("heading", level=1)).to_contain_text("deleted")
    expect(page.locator("p.meta")).to_contain_text("a copy")
    restore = page.locator("form[action$='/restore']")
    restore.get_by_label("Why").fill("wanted after all")
    submit(page, restore, "Restore")
    arrives("Profile.Restored")
    expect(page.get_by_role("heading", level=1)).not_to_contain_text("deleted")
    expect(page.locator("table.bars")).to_contain_text("9")  # back as it was

    page.goto("/status")
    expect(page.locator("main")).to_contain_text("Version in force")
    expect(page.locator("main")).to_contain_text("v2 (pinned)")
    expect(page.locator("main")).to_contain_text("ttft buckets")
    expect(page.locator("main")).to_contain_text("≤ 0.01 s: ")  # the histogram read as such, not a Python tuple
    shoot(page, screenshots, "status")

    # Readable without JavaScript, and on a narrow window.
    plain = browser.new_context(viewport=NARROW, base_url=base, java_script_enabled=False)
    try:
        narrow = plain.new_page()
        for path in ("/", profile_url, "/events", "/playground", "/status"):
            narrow.goto(path)
            expect(narrow.get_by_role("heading", level=1)).to_be_visible()
            assert narrow.evaluate("document.documentElement.scrollWidth") <= NARROW["width"] + 1, (path, wider(narrow))
        narrow.goto("/events")
        expect(narrow.locator("#timeline")).to_contain_text("Profile.Created")
        shoot(narrow, screenshots, "events-narrow-no-js")
        # Without JavaScript the playground answers with the finished texts.
        narrow.goto("/playground")
        narrow.get_by_label("Prompt").fill("hello sea")
        narrow.get_by_label("Max tokens").fill("4")
        submit(narrow, narrow.locator("main form"), "Generate")
        expect(narrow.locator("#recorded")).to_contain_text("Recorded as execution")
        expect(narrow.locator("#unsteered")).to_be_attached()
    finally:
        plain.close()
    context.close()


def test_a_save_keeps_what_was_not_edited_a_stale_revert_is_refused_and_two_servers_on_one_host_both_work(
    browser, serve, sqlite_url
):
    """Four things a person meets in the console: saving the edit form keeps a description of several lines as it
    is; a revert from a tab opened before someone else's change is refused (412), as a stale edit is; two servers on
    one host (the browser shares its cookies across their ports) each accept their own forms; and a form refused for
    what was typed comes back holding it, saying why."""
    import httpx
    from playwright.sync_api import expect

    first, second = serve(sqlite_url), serve(sqlite_url)
    description = "Line one.\nLine two.\n  third  "
    with httpx.Client(base_url=first.base_url) as api:
        made = api.post("/api/profiles", json={"name": "lines", "steering": {"1": 1.0}, "tags": ["a"],
                                               "description": description}).json()
        api.put(f"/api/profiles/{made['id']}", json={"steering": {"1": 2.0}})
    context = browser.new_context(viewport=VIEWPORT)
    page, stale = context.new_page(), context.new_page()
    page.goto(f"{first.base_url}/profiles/{made['id']}")
    stale.goto(f"{first.base_url}/profiles/{made['id']}")
    edit = page.locator("form[action$='/edit']")
    edit.get_by_label("Tags").fill("a, b")
    submit(page, edit, "Save")
    with httpx.Client(base_url=first.base_url) as api:
        saved = api.get(f"/api/profiles/{made['id']}").json()
    assert (saved["description"], saved["tags"]) == (description, ["a", "b"])

    with stale.expect_navigation():  # the page shows version 2; version 3 came since
        stale.get_by_role("button", name="Revert to version 1").click()
    expect(stale.locator("main")).to_contain_text("stale_version")
    with httpx.Client(base_url=first.base_url) as api:
        assert api.get(f"/api/profiles/{made['id']}").json()["version"] == 3  # nothing reverted

    for number, server in enumerate((second, first, second)):  # a page of the other server, then its form
        page.goto(f"{server.base_url}/")
        create = page.locator("form[action='/profiles']")
        create.get_by_label("Name").fill(f"made-{number}")
        create.get_by_label("Steering").fill("3=1")
        submit(page, create, "Create")
        expect(page.get_by_role("heading", level=1)).to_contain_text(f"made-{number}")

    page.goto(f"{first.base_url}/")  # a form refused for what was typed comes back holding it (before: empty)
    create = page.locator("form[action='/profiles']")
    create.get_by_label("Name").fill("typed")
    create.get_by_label("Steering").fill("3=1, 4=strong")
    create.get_by_label("Description").fill(description)
    submit(page, create, "Create")
    expect(create.locator("p.problem")).to_contain_text("the strength of feature 4 must be a number")
    expect(create.get_by_label("Description")).to_have_value(description)
    expect(create.get_by_label("Name")).to_have_value("typed")
    create.get_by_label("Steering").fill("3=1, 4=2")
    submit(page, create, "Create")
    expect(page.get_by_role("heading", level=1)).to_contain_text("typed")


def test_a_stale_tabs_deactivate_button_leaves_the_profile_someone_activated_since_in_force(browser, serve,
                                                                                             sqlite_url):
    import httpx
    from playwright.sync_api import expect

    server = serve(sqlite_url)
    with httpx.Client(base_url=server.base_url) as api:
        shown = api.post("/api/profiles", json={"name": "shown"}).json()
        other = api.post("/api/profiles", json={"name": "other"}).json()
        api.post(f"/api/profiles/{shown['id']}/activate")
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{server.base_url}/profiles/{shown['id']}")  # shows "shown" active, with its Deactivate button
    with httpx.Client(base_url=server.base_url) as api:
        api.post(f"/api/profiles/{other['id']}/activate")  # someone else, meanwhile
    with page.expect_navigation():
        page.get_by_role("button", name="Deactivate").click()
    expect(page.locator("main")).to_contain_text("profile_not_active")
    with httpx.Client(base_url=server.base_url) as api:
        assert api.get("/api/profiles/active").json()["id"] == other["id"]  # before: "other" was turned off
    context.close()

"""The console with authentication on: it asks for a token once, shows only what the token's role may do, and
the server refuses what is hidden anyway (a forged POST) and any form without its CSRF token."""

from __future__ import annotations

from typing import Any

import pytest

from tests.console.conftest import VIEWPORT, issue_tokens
from tests.console.test_console import shoot, submit

pytestmark = pytest.mark.slow


def signed_in(browser: Any, base: str, token: str) -> Any:
    context = browser.new_context(viewport=VIEWPORT, base_url=base)
    page = context.new_page()
    page.goto("/")
    assert "/login" in page.url  # asked for a token first
    page.get_by_label("API token").fill(token)
    submit(page, page.locator("main form"), "Sign in")
    return page


def csrf_token(page: Any) -> str:
    return page.locator("input[name=_csrf_token]").first.get_attribute("value")


def test_roles_hide_controls_and_the_server_refuses_forged_and_cross_site_posts(
    browser, serve, sqlite_url, screenshots
):
    from playwright.sync_api import expect

    tokens = issue_tokens(sqlite_url, "reader", "editor", "admin")
    server = serve(sqlite_url, auth=True)
    base = server.base_url

    anonymous = browser.new_context(viewport=VIEWPORT, base_url=base).new_page()
    anonymous.goto("/events")
    expect(anonymous.get_by_label("API token")).to_be_visible()
    shoot(anonymous, screenshots, "login")
    anonymous.get_by_label("API token").fill("not-a-token")
    anonymous.get_by_role("button", name="Sign in").click()
    expect(anonymous.locator("p.problem")).to_contain_text("Malformed token")  # why, as the API says it

    # The editor creates a profile; the session cookie is HttpOnly and SameSite=Strict. The reader's live
    # timeline (the same cookie session, over Server-Sent Events) shows it arrive, by the editor's name.
    reader = signed_in(browser, base, tokens["reader"])
    reader.goto("/events")
    editor = signed_in(browser, base, tokens["editor"])
    cookie = next(c for c in editor.context.cookies() if c["name"] == "ledger_console_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    create = editor.locator("form[action='/profiles']")
    create.get_by_label("Name").fill("guarded")
    create.get_by_label("Steering").fill("3=1")
    submit(editor, create, "Create")
    profile_url = editor.url
    expect(editor.locator("header")).to_contain_text("editor-person")
    expect(reader.locator("#timeline li.event", has_text="Profile.Created")).to_contain_text("editor-person")
    assert editor.locator("form[action$='/delete']").count() == 0  # deleting needs admin

    # The reader sees the profile but no control that changes anything.
    reader.goto("/")
    expect(reader.locator("table.profiles")).to_contain_text("guarded")
    assert reader.locator("form[action='/profiles']").count() == 0
    reader.goto(profile_url)
    expect(reader.get_by_role("heading", level=1)).to_contain_text("guarded")
    for control in ("/edit", "/revert", "/activate", "/delete"):
        assert reader.locator(f"form[action$='{control}']").count() == 0, control
    shoot(reader, screenshots, "profile-reader")

    # A forged POST from the reader's session, with a valid CSRF token: refused by the role check.
    forged = reader.request.post(
        f"{profile_url}/edit",
        form={"_csrf_token": csrf_token(reader), "name": "hijacked", "steering": "3=9", "bump_version": "on"},
        max_redirects=0,
    )
    assert forged.status == 403, forged.text()

    # The editor's session without the CSRF token (what a cross-site form could send): refused.
    cross_site = editor.request.post(
        f"{profile_url}/edit", form={"name": "hijacked", "steering": "3=9", "bump_version": "on"}, max_redirects=0
    )
    assert cross_site.status == 403, cross_site.text()
    editor.reload()
    expect(editor.get_by_role("heading", level=1)).to_contain_text("guarded")
    expect(editor.locator("p.meta")).to_contain_text("Version 1")

    # The REST API still wants its bearer token; the console cookie is no substitute.
    assert editor.request.get("/api/profiles").status == 401

    # Signing out ends the session.
    with editor.expect_navigation():
        editor.get_by_role("button", name="Sign out").click()
    editor.goto(profile_url)
    assert "/login" in editor.url


def test_the_api_documentation_page_works_with_no_internet_and_loads_nothing_from_elsewhere(
    browser, serve, sqlite_url, screenshots
):
    """Swagger UI was fetched from a CDN into the console's origin (and was a blank page offline)."""
    from playwright.sync_api import expect

    server = serve(sqlite_url, auth=True)
    context = browser.new_context(viewport=VIEWPORT, base_url=server.base_url)
    page = context.new_page()
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    answer = page.goto("/schema")  # public, as the document is
    assert answer.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in answer.headers[
        "content-security-policy"]
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Profile Ledger API")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()  # the operations, from the document
    shoot(page, screenshots, "api-docs")
    assert asked and all(url.startswith(server.base_url + "/") for url in asked), asked

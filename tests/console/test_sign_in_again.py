"""A session that ends while a form is open: signing in again leads back to the page the form was on (a form's
own address answers POST only), never to another site."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

from ledger.tokens import TokenService
from tests.api.conftest import make_client
from tests.waiting import wait_until

HTML = {"Accept": "text/html"}


def next_after_login(response) -> str:
    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    assert location.path == "/login"
    return parse_qs(location.query)["next"][0]


def test_a_form_sent_without_a_session_returns_to_its_page_after_signing_in(sqlite_url):
    with make_client(sqlite_url, auth=True) as browser:
        form = {"name": "calm", "steering": "1=0.5"}
        on_its_page = browser.post("/profiles", data=form, follow_redirects=False,
                                   headers={**HTML, "Referer": "http://testserver.localhost/profiles?tag=x"})
        assert next_after_login(on_its_page) == "/profiles?tag=x"
        from_elsewhere = browser.post("/profiles", data=form, follow_redirects=False,
                                      headers={**HTML, "Referer": "https://elsewhere.example/profiles/1"})
        assert next_after_login(from_elsewhere) == "/"
        asked_for = browser.get("/events?actor=ann", follow_redirects=False, headers=HTML)
        assert next_after_login(asked_for) == "/events?actor=ann"


def test_signing_in_with_an_expired_token_says_it_expired(sqlite_url):
    with make_client(sqlite_url, auth=True) as browser:
        _, token = TokenService(browser.app.state.runtime.ledger).issue(
            "brief", "reader", expires_at=datetime.now(timezone.utc) + timedelta(seconds=1))
        time.sleep(1.2)
        form = browser.get("/login", headers=HTML).text
        csrf = re.search(r'name="_csrf_token" value="([^"]+)"', form).group(1)
        refused = browser.post("/login", data={"_csrf_token": csrf, "token": token}, headers=HTML)
        assert refused.status_code == 401 and "The token expired at" in refused.text, refused.text[:300]


def test_a_session_whose_token_is_revoked_meanwhile_is_told_why_on_the_sign_in_page(sqlite_url):
    with make_client(sqlite_url, auth=True) as browser:
        tokens = TokenService(browser.app.state.runtime.ledger)
        record, token = tokens.issue("leaked", "editor")
        form = browser.get("/login", headers=HTML).text
        csrf = re.search(r'name="_csrf_token" value="([^"]+)"', form).group(1)
        assert browser.post("/login", data={"_csrf_token": csrf, "token": token}, headers=HTML).status_code == 200
        assert "Your session ended" not in browser.get("/", headers=HTML).text
        tokens.revoke(record.token_id)
        ended = wait_until(lambda: (lambda page: page if urlsplit(str(page.url)).path == "/login" else None)(
            browser.get("/events?actor=ann", headers=HTML)), 10, "the revocation to be seen")
        assert urlsplit(str(ended.url)).path == "/login" and "next=%2Fevents%3Factor%3Dann" in str(ended.url)
        assert "Your session ended" in ended.text and "revoked or has expired" in ended.text  # before: no word why
    with make_client(sqlite_url, auth=True) as stranger:
        assert "Your session ended" not in stranger.get("/", headers=HTML).text  # never signed in: nothing ended

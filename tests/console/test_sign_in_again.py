"""A session that ends while a form is open: signing in again leads back to the page the form was on (a form's
own address answers POST only), never to another site."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tests.api.conftest import make_client

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

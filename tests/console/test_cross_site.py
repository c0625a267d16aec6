"""A page of another site cannot act on the ledger through the browser of someone who visits it, even in open
mode (no tokens): the forms and requests a page may send without asking first are refused, in a real browser."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import free_port

pytestmark = pytest.mark.slow

EVIL_PAGE = """<!doctype html><html><body>
<form id="plain" method="post" enctype="text/plain" action="{base}/api/profiles">
  <input name='{{"name":"from-evil-site","steering":{{"1":1}},"x":"' value='"}}'>
</form>
<form id="multipart" method="post" enctype="multipart/form-data" action="{base}/api/profiles/import">
  <textarea name="file">{{"name": "imported-by-evil"}}</textarea>
</form>
<iframe name="sink"></iframe>
<script>
  document.getElementById("plain").target = "sink";
  document.getElementById("multipart").target = "sink";
  fetch("{base}/api/profiles/deactivate", {{method: "POST", mode: "no-cors"}});
  fetch("{base}/api/tokens", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
        body: '{{"name": "evil", "role": "admin"}}'}});
  document.getElementById("plain").submit();
  setTimeout(() => document.getElementById("multipart").submit(), 300);
  setTimeout(() => document.title = "done", 1500);
</script></body></html>"""


@pytest.fixture
def evil_site(tmp_path: Path) -> Iterator[Any]:
    """Another site (another port is another origin), serving whatever page the test writes."""
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.root = tmp_path
    try:
        yield server
    finally:
        server.shutdown()


def test_a_page_of_another_site_cannot_change_anything_in_open_mode(browser, serve, sqlite_url, evil_site):
    ledger = serve(sqlite_url)
    with httpx.Client(base_url=ledger.base_url, timeout=10) as http:
        assert http.post("/api/profiles", json={"name": "calm", "steering": {"1": 1.0}}).status_code == 201
        assert http.post("/api/profiles/calm/activate").status_code == 200
        (evil_site.root / "index.html").write_text(EVIL_PAGE.format(base=ledger.base_url))
        page = browser.new_page()
        try:
            page.goto(f"http://127.0.0.1:{evil_site.server_address[1]}/index.html")
            page.wait_for_function("document.title === 'done'", timeout=15_000)
        finally:
            page.close()
        names = [profile["name"] for profile in http.get("/api/profiles").json()["profiles"]]
        assert names == ["calm"]
        assert http.get("/api/profiles/active").json()["name"] == "calm"  # still active
        assert [t["name"] for t in http.get("/api/tokens").json()["tokens"]] == []
        types = [event["type"] for event in http.get("/api/events").json()["events"]]
        assert types.count("Profile.Created") == 1 and "Profile.Deactivated" not in types

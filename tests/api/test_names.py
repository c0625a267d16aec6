"""Names people tell apart (issue 10, Low): NFKC-normalised, compared by a confusable-safe key, and no control or
invisible characters. Profile names on SQLite and PostgreSQL; token names are unique among live tokens."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_error, create, make_client

LOOKALIKES_OF_CALM = ["ｃａｌｍ", "саlm", "CALM", " calm ", "Ｃａｌｍ", "caℓm"]
INVISIBLE = ["cal\u200bm", "a\tb", "a\r\nb", "line\nbreak", "bidi\u202eevil", "soft\u00adhyphen", "bell\x07", "x\u2028y"]


def _log(client, position: int) -> list[dict]:
    return client.get("/api/events", params={"min_position": position}).json()["events"]


@pytest.mark.parametrize("lookalike", LOOKALIKES_OF_CALM)
def test_a_name_that_looks_like_a_taken_one_is_refused(client, lookalike):
    taken = create(client, "calm")
    assert_error(client.post("/api/profiles", json={"name": lookalike}), 409, "profile_name_taken")
    assert _log(client, taken["position"])[-1]["position"] == taken["position"]


def test_composed_and_decomposed_accents_are_one_name(client):
    first = create(client, "café")
    assert_error(client.post("/api/profiles", json={"name": "cafe\u0301"}), 409, "profile_name_taken")
    assert first["name"] == "café"


def test_a_name_is_stored_nfkc_normalised(client):
    assert create(client, "ｆｕｌｌｗｉｄｔｈ")["name"] == "fullwidth"
    assert create(client, "cafe\u0301 au lait")["name"] == "café au lait"


@pytest.mark.parametrize("name", INVISIBLE)
def test_control_and_invisible_characters_are_refused_with_a_clear_422(client, name):
    body = assert_error(client.post("/api/profiles", json={"name": name}), 422, "invalid_value")
    assert body["field"] == "name" and "U+" in body["detail"]
    assert client.get("/api/events").json()["events"] == []


def test_a_name_that_reads_as_an_id_is_refused_since_it_would_always_be_taken_for_one(client):
    other = create(client, "calm")
    for name in (other["id"], "11111111-2222-3333-4444-555555555555", other["id"].replace("-", "").upper()):
        body = assert_error(client.post("/api/profiles", json={"name": name}), 422, "invalid_value")
        assert body["field"] == "name" and "reads as a profile id" in body["detail"]
        assert_error(client.put(f"/api/profiles/{other['id']}", json={"name": name}), 422, "invalid_value")


def test_renaming_to_a_lookalike_of_another_profile_is_refused(client):
    create(client, "calm")
    other = create(client, "storm")
    answer = client.put(f"/api/profiles/{other['id']}", json={"name": "саlm"})
    assert_error(answer, 409, "profile_name_taken")
    renamed = client.put(f"/api/profiles/{other['id']}", json={"name": "ｓｔｏｒｍｙ"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "stormy"


@pytest.mark.postgres
def test_token_names_are_unique_among_live_tokens(postgres_url):
    with make_client(postgres_url) as client:
        first = client.post("/api/tokens", json={"name": "alice", "role": "reader"})
        assert first.status_code == 201
        for name in ("alice", "ALICE", "аlice", "ａｌｉｃｅ"):
            assert_error(client.post("/api/tokens", json={"name": name, "role": "admin"}), 409, "token_name_taken")
        assert_error(client.post("/api/tokens", json={"name": "al\tice", "role": "reader"}), 422)
        assert client.delete(f"/api/tokens/{first.json()['id']}").status_code == 200
        again = client.post("/api/tokens", json={"name": "alice", "role": "reader"})
        assert again.status_code == 201, again.text


@pytest.mark.postgres
def test_token_expiry_is_validated(postgres_url):
    with make_client(postgres_url) as client:
        for body in (
            {"expires_in": 0},
            {"expires_in": -5},
            {"expires_at": "2000-01-01T00:00:00Z"},
            {"expires_in": 60, "expires_at": "2999-01-01T00:00:00Z"},
            {"expires_at": "9999-12-31T23:59:59-14:00"},  # in UTC, after the end of the calendar
            {"expires_in": "999999999w"},
            {"expires_in": "9" * 30},
        ):
            assert_error(client.post("/api/tokens", json={"name": "t", "role": "reader", **body}), 422)
        issued = client.post("/api/tokens", json={"name": "t", "role": "reader", "expires_at": "2999-01-01T00:00:00Z"})
        assert issued.status_code == 201 and issued.json()["expires_at"].startswith("2999-01-01T00:00:00")

"""Profiles record what they were made for, and using one elsewhere warns (seed 000 §5): through the real app
with a tiny model whose SAE (id ``tiny-sae``, layer 1, ``D_SAE`` features) is loaded."""

from __future__ import annotations

import json

from tests.api.conftest import assert_error
from tests.api.test_chat import MESSAGES, server  # noqa: F401 - fixtures
from tests.steering.conftest import D_SAE, LAYER, sae_dir, tiny_model_dir  # noqa: F401 - fixtures

CHAT = {"messages": MESSAGES, "max_tokens": 2, "seed": 1}


def test_a_profile_created_without_a_target_records_the_loaded_model_sae_and_layer(server):
    http = server.client
    made = http.post("/api/profiles", json={"name": "here", "steering": {"1": 1.0}})
    assert made.status_code == 201, made.text
    assert (made.json()["model_id"], made.json()["sae_id"], made.json()["layer"]) == ("tiny", "tiny-sae", LAYER)
    partly = http.post("/api/profiles", json={"name": "partly", "steering": {"1": 1.0}, "model_id": "other", "layer": 0})
    assert (partly.json()["model_id"], partly.json()["sae_id"], partly.json()["layer"]) == ("other", "tiny-sae", 0)
    activation = http.post(f"/api/profiles/{made.json()['id']}/activate").json()
    assert activation["warnings"] == []


def test_activation_and_a_chat_request_warn_about_another_model_sae_and_layer(server):
    http = server.client
    body = {"name": "elsewhere", "steering": {"1": 1.0}, "model_id": "big-model", "sae_id": "big-sae", "layer": 0}
    profile = http.post("/api/profiles", json=body).json()
    chat = http.post("/v1/chat/completions", json={**CHAT, "profile": "elsewhere"})
    assert chat.status_code == 200, chat.text
    warnings = chat.json()["ledger"]["warnings"]
    assert [any(word in w for w in warnings) for word in ("big-model", "big-sae", "layer 0")] == [True] * 3
    activation = http.post(f"/api/profiles/{profile['id']}/activate").json()
    assert activation["warnings"] == warnings
    with http.stream("POST", "/v1/chat/completions", json={**CHAT, "profile": "elsewhere", "stream": True}) as streamed:
        chunks = [json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith("data: {")]
    assert chunks[-1]["ledger"]["warnings"] == warnings  # the last chunk of a stream carries them too
    matching = http.post("/api/profiles", json={"name": "matching", "steering": {"1": 1.0}}).json()
    assert http.post("/v1/chat/completions", json={**CHAT, "profile": matching["id"]}).json()["ledger"]["warnings"] == []


def test_a_feature_index_at_or_beyond_the_sae_width_is_refused_on_activation_and_use(server):
    http = server.client
    last = http.post("/api/profiles", json={"name": "last", "steering": {str(D_SAE - 1): 1.0}}).json()
    assert http.post(f"/api/profiles/{last['id']}/activate").status_code == 200
    assert http.post("/v1/chat/completions", json={**CHAT, "profile": "last"}).status_code == 200
    wide = http.post("/api/profiles", json={"name": "wide", "steering": {str(D_SAE): 1.0}}).json()
    body = assert_error(http.post(f"/api/profiles/{wide['id']}/activate"), 422, "profile_incompatible")
    assert str(D_SAE) in body["detail"]
    assert_error(http.post("/v1/chat/completions", json={**CHAT, "profile": "wide"}), 400, "profile_incompatible")
    assert_error(
        http.post("/v1/chat/completions", json={**CHAT, "profile": "wide", "stream": True}), 400, "profile_incompatible"
    )


def test_the_active_profile_following_its_latest_version_cannot_be_changed_to_what_cannot_be_applied(server):
    http = server.client
    made = http.post("/api/profiles", json={"name": "live", "steering": {"1": 1.0}}).json()
    url = f"/api/profiles/{made['id']}"
    assert http.post(f"{url}/activate").status_code == 200
    assert http.put(url, json={"steering": {"2": 1.0}}).status_code == 200  # version 2, applicable
    body = assert_error(http.put(url, json={"steering": {str(D_SAE): 1.0}}), 422, "profile_incompatible")
    assert str(D_SAE) in body["detail"]
    assert_error(http.put(url, json={"layer": 10_000}), 422, "profile_incompatible")
    assert http.get(url).json()["version"] == 2
    assert http.post("/v1/chat/completions", json={**CHAT, "profile": "live"}).status_code == 200  # still served
    assert http.put(url, json={"description": "only words"}).status_code == 200
    pinned = http.post(f"{url}/activate", json={"version": 1})  # pinned: later versions are not in force
    assert pinned.status_code == 200 and http.put(url, json={"steering": {str(D_SAE): 1.0}}).status_code == 200
    assert_error(http.post(f"{url}/activate"), 422, "profile_incompatible")  # following it again is refused
    assert http.put(url, json={"steering": {"3": 1.0}}).status_code == 200
    assert http.post(f"{url}/activate").status_code == 200  # following version 5 again
    assert_error(http.post(f"{url}/revert", json={"version": 4}), 422, "profile_incompatible")
    assert http.get(url).json()["version"] == 5

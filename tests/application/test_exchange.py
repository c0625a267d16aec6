"""Export and import in the millm_profile format (and miLLM's flat export)."""

from __future__ import annotations

import json
import math

import pytest

from ledger.errors import ImportFormatError, ProfileNameTakenError
from tests.application.conftest import log_types


def test_export_then_import_gives_an_identical_profile(ledger):
    original = ledger.create_profile(
        {
            "name": "round trip",
            "description": "ünïcode ✓",
            "model_id": "smollm2",
            "sae_id": "sae-l12",
            "layer": 12,
            "steering": {3: 1.5, 70: -0.25},
            "tags": ["a", "b"],
            "products": ["chat"],
            "metadata": {"nested": {"k": [1, 2]}},
        }
    ).profile
    document = json.loads(json.dumps(ledger.export_profile(original.id)))
    ledger.delete_profile(original.id)
    imported = ledger.import_profile(document).profile
    assert imported.id != original.id
    assert imported.fields() == original.fields()


@pytest.fixture
def seed_document():
    return {
        "version": "1.0",
        "type": "millm_profile",
        "profile": {
            "name": "Hand Written",
            "description": "typed by a person",
            "model": "gemma-2-2b",
            "sae": "gemma-scope-res-16k",
            "layer": 12,
            "steering": {"1234": 5.0, "42": -2},
        },
        "exported_at": "2026-01-30T12:00:00",
        "exported_from": "miLLM v1.0",
    }


def test_a_hand_written_document_in_the_seed_format_imports(ledger, seed_document):
    profile = ledger.import_profile(seed_document).profile
    assert (profile.name, profile.model_id, profile.sae_id, profile.layer) == (
        "Hand Written", "gemma-2-2b", "gemma-scope-res-16k", 12
    )
    assert profile.steering == {42: -2.0, 1234: 5.0}


def test_the_flat_document_millm_exports_imports(ledger):
    flat = {"version": "1.0", "name": "flat", "description": None, "model_id": "m", "sae_id": "s", "layer": 0,
            "steering": {"7": 0.5}, "is_active": True, "created_at": "2026-01-01T00:00:00"}
    profile = ledger.import_profile(flat).profile
    assert (profile.name, profile.layer, profile.steering) == ("flat", 0, {7: 0.5})


def _with(seed, **profile_changes):
    return {**seed, "profile": {**seed["profile"], **profile_changes}}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: {**d, "type": "other_profile"}, "unsupported document type 'other_profile'"),
        (lambda d: {k: v for k, v in d.items() if k != "profile"}, "no 'profile' object"),
        (lambda d: _with(d, steering={"abc": 1.0}), "steering['abc']: feature index must be a non-negative integer"),
        (lambda d: _with(d, steering={"1.5": 1.0}), "steering['1.5']"),
        (lambda d: _with(d, steering={"3": math.nan}), "steering['3']: strength must be finite"),
        (lambda d: _with(d, steering={"3": math.inf}), "steering['3']: strength must be finite"),
        (lambda d: _with(d, name=""), "name must not be empty"),
        (lambda d: _with(d, name="n" * 101), "at most 100 characters"),
        (lambda d: _with(d, layer=-1), "layer must be >= 0"),
        (lambda d: _with(d, steering={str(i): 1.0 for i in range(100_001)}), "at most 100000"),
    ],
)
def test_bad_documents_are_refused_with_a_specific_message_and_nothing_written(ledger, seed_document, mutate, message):
    before = log_types(ledger)
    with pytest.raises(ImportFormatError) as error:
        ledger.import_profile(mutate(seed_document))
    assert message in str(error.value)
    assert log_types(ledger) == before


def test_a_name_clash_is_refused_unless_renaming_is_asked_for(ledger, seed_document):
    ledger.import_profile(seed_document)
    with pytest.raises(ProfileNameTakenError):
        ledger.import_profile(seed_document)
    assert ledger.import_profile(seed_document, rename=True).profile.name == "Hand Written (imported)"
    assert ledger.import_profile(seed_document, rename=True).profile.name == "Hand Written (imported 2)"

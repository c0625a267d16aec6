"""Signed records: what the service stores carries its signature; anything else is refused and reported."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.application import ProfileLedger
from ledger.errors import SigningKeyError, TamperedRecordError
from ledger.settings import Database
from ledger.signing import HEADER_SIZE, MAC_SIZE, SigningKeys, create_private_key
from ledger.signing.records import MAGIC_V1

LEDGER = str(Path(sys.executable).with_name("ledger"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> SigningKeys:
    path = tmp_path_factory.mktemp("keys") / "key.pem"
    create_private_key(path)
    return SigningKeys(path, create=False)


records = st.lists(
    st.tuples(st.uuids(), st.integers(1, 2**40), st.sampled_from(["a:B.C", "ledger.domainmodel:Profile.Created"]),
              st.binary(max_size=64)),
    min_size=1, max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(records=records, data=st.data())
def test_any_changed_byte_of_a_signed_save_is_refused_on_read_and_by_the_services_walk(keys, records, data):
    states = keys.seal_all(records)
    strict = keys.record_check(strict=True)
    assert all(strict.feed(i, *record[:3], state) is None for i, (record, state) in enumerate(zip(records, states)))
    assert strict.finish() is None
    which = data.draw(st.integers(0, len(states) - 1))
    where = data.draw(st.integers(0, len(states[which]) - 1))
    changed = bytearray(states[which])
    changed[where] ^= data.draw(st.integers(1, 255))
    states[which] = bytes(changed)
    with pytest.raises(TamperedRecordError):
        keys.open(*records[which][:3], states[which])
    strict = keys.record_check(strict=True)
    found = [strict.feed(i, *record[:3], state) for i, (record, state) in enumerate(zip(records, states))]
    assert any(found) or strict.finish() is not None
    if where < HEADER_SIZE - MAC_SIZE - 4 or where >= HEADER_SIZE - 4:  # all but the MAC: the public check too
        public = keys.public().record_check()
        found = [public.feed(i, *record[:3], state) for i, (record, state) in enumerate(zip(records, states))]
        assert any(found) or public.finish() is not None


def test_a_signature_cannot_be_moved_to_another_stream_or_version(keys):
    stream = uuid4()
    (state,) = keys.seal_all([(stream, 1, "a:B.C", b"{}")])
    assert keys.open(stream, 1, "a:B.C", state) == b"{}"
    for originator_id, version, topic in ((uuid4(), 1, "a:B.C"), (stream, 2, "a:B.C"), (stream, 1, "a:B.D")):
        with pytest.raises(TamperedRecordError, match="does not match its content"):
            keys.open(originator_id, version, topic, state)


def test_a_save_missing_one_of_its_events_fails_the_strict_check(keys):
    saved = [(uuid4(), 1, "a:B.C", b"{}"), (uuid4(), 1, "a:B.C", b"{}"), (uuid4(), 1, "a:B.C", b"{}")]
    states = keys.seal_all(saved)
    strict = keys.public().record_check()
    assert strict.feed(1, *saved[0][:3], states[0]) is None
    found = strict.feed(3, *saved[2][:3], states[2])  # the second was removed
    assert found is not None and found[0] == 1 and "incomplete" in found[1]


@pytest.mark.parametrize("relabelled", [[0], [1, 2], [0, 1, 2]])
def test_records_relabelled_as_the_format_before_signed_heads_are_refused(keys, relabelled):
    """Records of the earlier format ask for no signed head, so a record of the current one must not pass for one:
    the format is bound into its signature and its MAC."""
    saved = [(uuid4(), 1, "a:B.C", b"{}") for _ in range(3)]
    states = [MAGIC_V1 + state[len(MAGIC_V1):] if index in relabelled else state
              for index, state in enumerate(keys.seal_all(saved))]
    for index in relabelled:
        with pytest.raises(TamperedRecordError):
            keys.open(*saved[index][:3], states[index])
    public = keys.public().record_check()
    found = [public.feed(index + 1, *record[:3], state) for index, (record, state) in enumerate(zip(saved, states))]
    assert any(found) or public.finish() is not None


def test_a_key_is_created_beside_the_sqlite_file_on_first_use_readable_only_by_its_owner(tmp_path, caplog):
    database = Database(str(tmp_path / "ledger.sqlite"))
    environment = {key: value for key, value in os.environ.items() if key != "LEDGER_SIGNING_KEY"}
    env = {**database.eventsourcing_env(), "LEDGER_SIGNING_KEY": ""}
    app = ProfileLedger(env=env)
    app.create_profile({"name": "calm", "steering": {1: 0.5}})
    app.close()
    key = tmp_path / ".ledger" / "signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "created a new event-signing key" in caplog.text
    # Another process on the same file finds the same key: the log verifies.
    result = subprocess.run([LEDGER, "--database", database.url, "verify"], capture_output=True, text=True,
                            env=environment, cwd=tmp_path / "..", timeout=120)
    assert result.returncode == 0, result.stderr


def test_another_key_reads_nothing_and_verify_names_both_keys(tmp_path):
    database = Database(str(tmp_path / "ledger.sqlite"))
    app = ProfileLedger(env=database.eventsourcing_env())
    profile = app.create_profile({"name": "calm", "steering": {1: 0.5}}).profile
    app.close()
    other = tmp_path / "other.pem"
    create_private_key(other)
    stranger = ProfileLedger(env={**database.eventsourcing_env(), "LEDGER_SIGNING_KEY": str(other)})
    with pytest.raises(TamperedRecordError, match="not by the key it is checked with"):
        stranger.get_profile(profile.id)
    stranger.close()
    result = subprocess.run([LEDGER, "--database", database.url, "verify"], capture_output=True, text=True,
                            env={**os.environ, "LEDGER_SIGNING_KEY": str(other)}, timeout=120)
    assert result.returncode == 1 and "TAMPERED: forged at position 1: " in result.stderr, result.stderr
    assert "not by the key it is checked with" in result.stderr


def test_a_configured_key_that_cannot_be_read_is_a_clear_error(tmp_path):
    database = Database(str(tmp_path / "ledger.sqlite"))
    missing = tmp_path / "nowhere.pem"
    app = ProfileLedger(env={**database.eventsourcing_env(), "LEDGER_SIGNING_KEY": str(missing)})
    with pytest.raises(SigningKeyError, match="nowhere.pem"):
        app.create_profile({"name": "calm", "steering": {1: 0.5}})
    app.close()
    assert not missing.exists()  # a configured key is never made up
    result = subprocess.run([LEDGER, "--database", database.url, "create", "calm", "--steering", '{"1": 0.5}'],
                            capture_output=True, text=True, env={**os.environ, "LEDGER_SIGNING_KEY": str(missing)},
                            timeout=120)
    assert result.returncode != 0 and "nowhere.pem" in result.stderr and "Traceback" not in result.stderr


def test_the_header_is_the_only_overhead_of_a_record(keys):
    (state,) = keys.seal_all([(uuid4(), 1, "a:B.C", b'{"x":1}')])
    assert len(state) == HEADER_SIZE + len(b'{"x":1}')


def test_reading_never_makes_a_key_only_the_first_write_does(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    environment = {key: value for key, value in os.environ.items() if key != "LEDGER_SIGNING_KEY"}

    def ledger(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([LEDGER, "--database", url, *args], capture_output=True, text=True, env=environment,
                              timeout=120)

    assert ledger("verify").returncode == 1  # no ledger there yet: said so, nothing made
    assert not (tmp_path / "ledger.sqlite").exists()
    assert ledger("db", "init").returncode == 0
    assert ledger("verify").returncode == 0
    assert ledger("list").returncode == 0
    assert not (tmp_path / ".ledger").exists()
    public = ledger("public-key")
    assert public.returncode == 1 and "there is no event-signing key" in public.stderr
    assert ledger("create", "calm", "--steering", '{"1": 0.5}').returncode == 0
    assert (tmp_path / ".ledger" / "signing-key.pem").exists()
    assert ledger("public-key").stdout.startswith("-----BEGIN PUBLIC KEY-----")

"""What the console derives from rows and forms: the steering field's text, bars, and the timeline newest first."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.application import ProfileLedger
from ledger.console.views import bars, format_labels, format_steering, newest_events, parse_labels, parse_steering
from ledger.domainmodel import CommandContext, acting_as
from ledger.errors import ValidationError
from ledger.settings import Database
from projections.queries import ReadModel
from projections.runner import rebuild

strengths = st.floats(min_value=-200, max_value=200, allow_nan=False)  # any of them, to the last digit


@given(st.dictionaries(st.integers(0, 2**20).map(str), strengths, max_size=20))
def test_the_steering_text_reads_back_as_the_spec_it_shows(steering):
    assert parse_steering(format_steering(steering)) == steering


labels = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12).map(str.strip).filter(bool)


@given(st.lists(labels, max_size=6, unique=True))
def test_the_labels_text_reads_back_as_the_labels_it_shows_separators_and_quotes_included(shown):
    assert parse_labels(format_labels(shown), "tags") == shown


@pytest.mark.parametrize("text", ['"a, b, c', 'x, "y', '"x"y, z'])
def test_labels_text_with_a_quote_never_closed_is_refused_not_read_as_labels_that_start_with_one(text):
    with pytest.raises(ValidationError, match="^tags: the double quote of .* is never closed"):
        parse_labels(text, "tags")  # was ['"a', 'b', 'c']


@pytest.mark.parametrize("text", ["12", "x=1", "12=strong", "=3", "1=1, 1=2", "7=1; 07=2"])
def test_steering_text_that_names_no_feature_and_strength_or_one_twice_is_refused(text):
    with pytest.raises(ValidationError):
        parse_steering(text)


def test_bars_put_the_strongest_feature_first_at_full_length():
    shown = bars({"1": 0.5, "2": -2.0, "3": 1.0})
    assert [(bar.feature, bar.percent, bar.negative) for bar in shown] == [("2", 100, True), ("3", 50, False), ("1", 25, False)]


@pytest.fixture(scope="module")
def read_model(tmp_path_factory):
    """A log of 60 profile changes by three actors, and its read models."""
    url = f"sqlite:///{tmp_path_factory.mktemp('timeline') / 'l.sqlite'}"
    ledger = ProfileLedger(env=Database(url).eventsourcing_env())
    try:
        ids = []
        for number in range(20):
            with acting_as(CommandContext(actor=("alice", "bob", "carol")[number % 3])):
                ids.append(ledger.create_profile({"name": f"p{number}", "steering": {"1": 1.0}}).profile.id)
        for number in range(40):
            with acting_as(CommandContext(actor="bob" if number % 7 else "dave")):
                ledger.update_profile(ids[number % 20], {"steering": {"1": float(number + 2)}})
    finally:
        ledger.close()
    rebuild(Database(url), progress=False)
    reads = ReadModel(Database(url))
    yield reads
    reads.close()


@settings(max_examples=40, deadline=None)
@given(
    limit=st.integers(1, 90),
    before=st.one_of(st.none(), st.integers(1, 120)),
    actor=st.sampled_from([None, "alice", "bob", "dave", "nobody"]),
    event_type=st.sampled_from([None, "Profile.SpecRevised", "Profile.Created"]),
)
def test_the_timeline_is_the_newest_matching_events_newest_first(read_model, limit, before, actor, event_type):
    filters = {"actor": actor, "event_type": event_type}
    everything = read_model.events(limit=1000, **filters).items
    wanted = [row for row in everything if before is None or row.position < before][::-1]
    shown, older = newest_events(read_model, limit=limit, before=before, **filters)
    assert [row.position for row in shown] == [row.position for row in wanted[:limit]]
    if len(wanted) > limit:
        assert older == shown[-1].position
        rest, _ = newest_events(read_model, limit=1000, before=older, **filters)
        assert [row.position for row in rest] == [row.position for row in wanted[limit:]]

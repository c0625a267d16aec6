from ledger.application import ProfileLedger
from ledger.settings import Database


def test_postgres_roundtrip(postgres_url):
    app = ProfileLedger(env=Database(postgres_url).eventsourcing_env())
    outcome = app.create_profile({"name": "a", "steering": {1: 1.0}})
    assert outcome.position >= 1
    assert app.get_profile(outcome.profile.id).steering == {1: 1.0}
    app.close()

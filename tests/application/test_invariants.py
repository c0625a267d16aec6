"""Property: any sequence of commands keeps the ledger's invariants (in-memory store, many random runs).

Invariants: names are unique among live profiles; at most one profile is active and the slot agrees;
user-facing versions are contiguous; once a version's spec is written it never changes.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ledger import values
from ledger.application import ProfileLedger
from ledger.errors import LedgerError

names = st.sampled_from(["a", "A ", "b", " B", "c", "d  d", "D D"])
steerings = st.dictionaries(st.integers(0, 5), st.sampled_from([-1.0, 0.5, 2.0]), max_size=3)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = ProfileLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.ids: list = []
        self.specs_seen: dict[tuple, dict] = {}

    def pick(self, index: int):
        return self.ids[index % len(self.ids)] if self.ids else None

    def attempt(self, command, *args, **kwargs) -> None:
        try:
            command(*args, **kwargs)
        except LedgerError:
            pass  # refusals are fine; the invariants must hold either way

    @rule(name=names, steering=steerings)
    def create(self, name, steering):
        try:
            self.ids.append(self.ledger.create_profile({"name": name, "steering": steering}).profile.id)
        except LedgerError:
            pass

    @rule(index=st.integers(0, 20), steering=steerings, name=st.none() | names, bump=st.booleans())
    def update(self, index, steering, name, bump):
        if (pid := self.pick(index)) is not None:
            changes = {"steering": steering} if name is None else {"name": name}
            self.attempt(self.ledger.update_profile, pid, changes, bump_version=bump)

    @rule(index=st.integers(0, 20), pin=st.none() | st.integers(1, 3))
    def activate(self, index, pin):
        if (pid := self.pick(index)) is not None:
            self.attempt(self.ledger.activate_profile, pid, version=pin)

    @rule()
    def deactivate(self):
        self.ledger.deactivate_profile()

    @rule(index=st.integers(0, 20), purge=st.booleans())
    def delete(self, index, purge):
        if (pid := self.pick(index)) is not None:
            self.attempt(self.ledger.delete_profile, pid, delete_executions=purge)

    @rule(index=st.integers(0, 20), version=st.none() | st.integers(1, 3))
    def revert(self, index, version):
        if (pid := self.pick(index)) is not None and version is not None:
            self.attempt(self.ledger.revert_profile, pid, version)

    def live(self):
        states = []
        for pid in self.ids:
            try:
                states.append(self.ledger.get_profile(pid))
            except LedgerError:
                pass
        return states

    @invariant()
    def names_are_unique_among_live_profiles(self):
        keys = [values.name_key(p.name) for p in self.live()]
        assert len(keys) == len(set(keys))

    @invariant()
    def at_most_one_profile_is_active_and_the_slot_agrees(self):
        active = [p.id for p in self.live() if p.is_active]
        assert len(active) <= 1
        slot = self.ledger.active_slot()
        assert active == ([slot.profile_id] if slot and slot.profile_id else [])

    @invariant()
    def versions_are_contiguous_and_written_specs_never_change(self):
        for pid in self.ids:
            history = self.ledger.profile_history(pid)
            assert [r.version for r in history] == list(range(1, len(history) + 1))
            for record in history:
                spec = {k: getattr(record.state, k) for k in ("model_id", "sae_id", "layer", "steering")}
                assert self.specs_seen.setdefault((pid, record.version), spec) == spec


LedgerMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_ledger_invariants = LedgerMachine.TestCase

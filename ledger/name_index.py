"""Moving name claims made under an earlier name key to the current one (:func:`ledger.values.name_key`).

A profile's name is claimed in a ``ProfileName`` stream whose id is a UUIDv5 of the name's key. The key used to
be the name trimmed, inner whitespace collapsed and case-folded; it is now also NFKC-normalised, stripped of
invisible characters and maps non-ASCII look-alikes (Cyrillic ``а``, fullwidth ``ｃ`` …) to ASCII. For an ASCII
name both keys are the same, so its claim stays where it is. A claim whose recorded key is not ASCII may now
belong under another key: left there, a second profile could take a name that looks the same. So, once per
process before the first name is claimed or looked up, each live claim whose recorded key differs from the
current key of its holder's name is moved: claimed under the new key and released under the old one, in one
atomic save (any number of processes may do this at once: the store lets one move win). Where two existing
profiles' names now share a key, the older claim wins and the other profile keeps its old claim (its name still
works; a new profile can take neither), and a warning names both. Where the log is in a database, a small table
beside it remembers how far the registrations were looked through, so later processes look only at new ones.
"""

from __future__ import annotations

import logging
from typing import Any

from eventsourcing.persistence import RecordConflictError
from eventsourcing.utils import get_topic

from ledger import values
from ledger.domainmodel import CommandContext, Profile, ProfileName, acting_as
from ledger.idempotency import claiming
from ledger.side_tables import SideTable

log = logging.getLogger(__name__)

REGISTERED_TOPIC = get_topic(ProfileName.Registered)
CHECKED_TABLE = "ledger_name_keys_checked"
PAGE = 1_000
UPGRADE_CONTEXT = CommandContext(actor="ledger", reason="name index moved to the confusable-safe name key")


def move_claims_to_current_keys(ledger: Any) -> None:
    """Move every live claim recorded under an earlier key to its holder's current key.

    Where the log is in a database, how far it has been looked through is kept beside it, so each process looks
    only at the name registrations recorded since (a server of the earlier version may still be writing them).
    """
    checked = SideTable(
        getattr(ledger.recorder, "datastore", None), CHECKED_TABLE, "id integer PRIMARY KEY, position bigint NOT NULL"
    )
    row = checked.one("SELECT position FROM {table} WHERE id = 1") if checked.available else None
    start, last = (int(row[0]) + 1 if row else 1), 0
    while True:
        notifications = ledger.recorder.select_notifications(start=start, limit=PAGE, topics=[REGISTERED_TOPIC])
        for notification in notifications:
            key = ledger.mapper.to_domain_event(notification).key
            if isinstance(key, str) and not key.isascii():
                _move(ledger, notification.originator_id)
            last = notification.id
        if len(notifications) < PAGE:
            break
        start = notifications[-1].id + 1
    if checked.available and last:
        checked.execute((
            "INSERT INTO {table} (id, position) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET position = "
            "CASE WHEN excluded.position > {table}.position THEN excluded.position ELSE {table}.position END",
            (last,),
        ))


def _move(ledger: Any, index_id: Any) -> None:
    index = ledger.repository.get(index_id)
    if index.profile_id is None:
        return
    profile = ledger.find_aggregate(index.profile_id)
    if not isinstance(profile, Profile) or profile.deleted:
        return
    key = values.name_key(profile.name)
    target_id = ProfileName.create_id(key)
    if target_id == index.id:
        return
    target = ledger.find_aggregate(target_id) or ProfileName(key=key)
    if target.profile_id is not None and target.profile_id != profile.id:
        log.warning(
            "profile %s (%r) keeps its claim under the earlier name key: profile %s holds a name that now "
            "compares equal to it; rename one of them",
            profile.id, profile.name, target.profile_id,
        )
        return
    with acting_as(UPGRADE_CONTEXT), claiming(None):  # not the command's save: it records no Idempotency-Key
        target.claim(profile.id, profile.name)
        index.release(profile.id)
        try:
            ledger.save(target, index)
        except RecordConflictError:
            pass  # another process moved it (or the profile changed): the next start looks again

"""Read model ``profiles``: the current state of every live profile, with its tags, products and usage.

Deleted profiles leave ``profiles`` (their name becomes free again); versions and audit rows stay elsewhere.
A profile's usage (executions recorded, the last one's time) is kept in ``profile_usage``, which a deletion
leaves in place (emptied with ``delete_executions``) for a restore to find. Whether a profile is active, and
pinned, is the active slot's row (``projections.active``): queries join both in.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from msgspec import Struct

from ledger.domainmodel import Execution, Profile
from ledger.values import iso_time, name_key
from projections import cursors
from projections.errors import InvalidCursorError, InvalidQueryError
from projections.fields import DETAIL_BYTES, PROFILE_SIZES, content, details, search_text, spec
from projections.ops import Add, Delete, Greatest, Insert, Op, Update
from projections.projection import ReadModelProjection
from projections.reading import (
    PAGE_BOUNDS, Queries, as_uuid, bounded_page, checked_limit, page_rows,
)
from projections.rows import Page, ProfileChoice, ProfileRow
from projections.tables import Index, Table


class ProfileUsage(Struct, frozen=True):
    profile_id: UUID
    execution_count: int
    last_executed_at: datetime | None


PROFILES = Table(
    "profiles",
    ProfileRow,
    key=("id",),
    internal={"name_key": str, "name_search": str, "description_search": str, **DETAIL_BYTES},
    derived=("is_active", "pinned_version", "execution_count", "last_executed_at"),
    indexes=(
        Index("by_name", "name_key, id"),
        Index("by_update", "updated_at, id"),
        # PostgreSQL only: array and trigram indexes for filtered, searched listings at a million profiles.
        Index("tags", "tags", using="gin"),
        Index("products", "products", using="gin"),
        Index("name_trgm", "name_search gin_trgm_ops", using="gin"),
        Index("description_trgm", "description_search gin_trgm_ops", using="gin"),
    ),
)
USAGE = Table("profile_usage", ProfileUsage, key=("profile_id",))


def on_created(event: Profile.Created) -> list[Op]:
    at = event.timestamp
    return [
        Insert(PROFILES, {"id": event.originator_id, **content(event, searchable=True), "version": 1,
                          "revision": event.originator_version, "created_at": at, "updated_at": at}),
        Insert(USAGE, {"profile_id": event.originator_id, "execution_count": 0, "last_executed_at": None}),
    ]


def on_revised(event: Profile.SpecRevised | Profile.DetailsRevised | Profile.DetailsEdited) -> list[Op]:
    values = details(event.changes, searchable=True)
    if isinstance(event, Profile.SpecRevised):
        values.update(spec(event))
    return [Update(PROFILES, {"id": event.originator_id},
                   {**values, "version": event.version, "revision": event.originator_version,
                    "updated_at": event.timestamp})]


def on_touched(event: Profile.Activated | Profile.Deactivated) -> list[Op]:
    return [Update(PROFILES, {"id": event.originator_id}, {"revision": event.originator_version, "updated_at": event.timestamp})]


def on_deleted(event: Profile.Deleted) -> list[Op]:
    ops: list[Op] = [Delete(PROFILES, {"id": event.originator_id})]
    if event.delete_executions:
        ops.append(Update(USAGE, {"profile_id": event.originator_id},
                          {"execution_count": 0, "last_executed_at": None}))
    return ops


def on_restored(event: Profile.Restored) -> list[Op]:
    return [Insert(PROFILES, {"id": event.originator_id, **content(event, searchable=True),
                              "version": event.version, "revision": event.originator_version,
                              "created_at": event.created_at, "updated_at": event.timestamp})]


def on_execution_recorded(event: Execution.Recorded) -> list[Op]:
    if event.profile_id is None:
        return []
    return [Update(USAGE, {"profile_id": event.profile_id},
                   {"execution_count": Add(1), "last_executed_at": Greatest(event.timestamp)})]


PROJECTION = ReadModelProjection(
    name="profiles",
    tables=(PROFILES, USAGE),
    handlers={
        Profile.Created: on_created,
        Profile.SpecRevised: on_revised,
        Profile.DetailsRevised: on_revised,
        Profile.DetailsEdited: on_revised,
        Profile.Activated: on_touched,
        Profile.Deactivated: on_touched,
        Profile.Deleted: on_deleted,
        Profile.Restored: on_restored,
        Execution.Recorded: on_execution_recorded,
    },
    version=4,
)

PROFILE_SORTS = ("name", "updated_at")
_ORDER = {"name": "name_key, id", "updated_at": "updated_at DESC, id DESC"}


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


SEARCH_WORDS_MAX = 32
SEARCH_CHARACTERS_MAX = 100  # a name's longest: each row costs a match of every pattern character against its text
SEARCH_HELP = (f"Every word, in any order (at most {SEARCH_WORDS_MAX} words, {SEARCH_CHARACTERS_MAX} characters), "
               "case-insensitively in the name or the description.")


def _search_terms(search: str) -> list[tuple[str, str]]:
    """Each word of a search (every one must be found, in the name or the description, in any order) as names are
    searched (NFKC-normalised, as names are stored: ``ｃａｌｍ`` finds ``calm``) and as descriptions are (as
    written); both folded, as the columns are."""
    words = search.split()
    if len(search.strip()) > SEARCH_CHARACTERS_MAX:
        raise InvalidQueryError(f"search takes at most {SEARCH_CHARACTERS_MAX} characters (got "
                                f"{len(search.strip())})", field="search")
    if len(words) > SEARCH_WORDS_MAX:
        raise InvalidQueryError(f"search takes at most {SEARCH_WORDS_MAX} words (got {len(words)})", field="search")
    return [(search_text(unicodedata.normalize("NFKC", word)), search_text(word)) for word in words]


def _shows(version: Any, name_search: str, tags: list[str], tags_match: str, products: list[str],
           search: str | None) -> bool:
    """Whether a version, shown under the profile's name now, passes the list's filters as the SQL above tests them."""
    labels = set(version.tags)
    if tags and not (labels.issuperset(tags) if tags_match == "all" else labels.intersection(tags)):
        return False
    if products and not set(version.products).intersection(products):
        return False
    description = search_text(version.description)
    return all(in_names in name_search or in_descriptions in description
               for in_names, in_descriptions in _search_terms(search or ""))


class ProfileQueries(Queries):
    def list_profiles(
        self,
        tags: Sequence[str] | None = None,
        tags_match: Literal["any", "all"] = "any",
        products: Sequence[str] | None = None,
        search: str | None = None,
        sort: Literal["name", "updated_at"] = "name",
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[ProfileRow]:
        """Live profiles, filtered by tags (any/all of them), products (any of them) and text in the name or
        description.

        ``sort="name"`` is case-insensitive A→Z; ``sort="updated_at"`` is most recently updated first.
        """
        limit = checked_limit(limit)
        if sort not in PROFILE_SORTS:
            raise InvalidQueryError(f"sort must be one of {', '.join(PROFILE_SORTS)} (got {sort!r})", field="sort")
        if tags_match not in ("any", "all"):
            raise InvalidQueryError(f"tags_match must be 'any' or 'all' (got {tags_match!r})", field="tags_match")
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit + 1}
        tags = [tag.strip() for tag in (tags or []) if tag and tag.strip()]
        if tags:
            where.append(self._labels_filter("tags", tags, tags_match, params))
        products = [product.strip() for product in (products or []) if product and product.strip()]
        if products:
            where.append(self._labels_filter("products", products, "any", params))
        terms = _search_terms(search or "")
        for word, (in_names, in_descriptions) in enumerate(terms):
            params[f"name_pattern{word}"] = _like_pattern(in_names)
            params[f"pattern{word}"] = _like_pattern(in_descriptions)
            where.append(f"(name_search LIKE :name_pattern{word} ESCAPE '\\' "
                         f"OR description_search LIKE :pattern{word} ESCAPE '\\')")
        pinned = self._pinned_in_force() if where else None
        if pinned is not None:  # the list shows its version in force: the filters test that, not its latest
            version, name_search = pinned
            params["pinned"] = version.profile_id
            shown = _shows(version, name_search, tags, tags_match, products, search)
            where = [f"((({' AND '.join(where)}) AND id <> :pinned){' OR id = :pinned' if shown else ''})"]
        listing = cursors.listing("profiles", sort=sort, tags=sorted(set(tags)),
                                  all_tags=len(set(tags)) > 1 and tags_match == "all", products=sorted(set(products)),
                                  search=sorted(set(terms)))  # (words match in any order)
        if cursor is not None:
            k0, k1 = cursors.decode(cursor, listing, (str, str))
            try:
                params["k0"] = k0 if sort == "name" else iso_time(k0)  # in range in UTC (SQLite converts)
                params["k1"] = UUID(k1)
            except ValueError:
                raise InvalidCursorError("invalid cursor: malformed position") from None
            where.append("(name_key, id) > (:k0, :k1)" if sort == "name" else "(updated_at, id) < (:k0, :k1)")
        # The planner cannot estimate substring matches; walking the sort index and filtering can then read
        # most of the table. With a search term, the trigram (and label) bitmaps are always the better plan.
        searching = self.dialect.is_postgres and "pattern0" in params and self.store.has_trigram
        params.update(PAGE_BOUNDS)
        rows, more = page_rows(self._profiles(" AND ".join(where), params, _ORDER[sort],
                                              setup=("SET LOCAL enable_indexscan = off",) if searching else ()), limit)
        items = self._rows(ProfileRow, rows)
        next_cursor = None
        if more:
            last_row, last = rows[-1], items[-1]
            key = last_row["name_key"] if sort == "name" else last.updated_at.isoformat()
            next_cursor = cursors.encode(listing, [key, str(last.id)])
        return Page(items=tuple(items), next_cursor=next_cursor)

    def profile_choices(self, limit: int) -> list[ProfileChoice]:
        """The first ``limit`` live profiles by name, as a picker offers them: however many features each steers,
        ``limit`` of them (a page of :meth:`list_profiles` holds fewer of the largest)."""
        return self._rows(ProfileChoice, self._all(
            f"SELECT id, name, version FROM profiles ORDER BY {_ORDER['name']} LIMIT :limit", {"limit": limit}))

    def _pinned_in_force(self) -> tuple[Any, str] | None:
        """The active profile's version in force when it is pinned to one before its latest (the version the list
        shows for it), with the search text of its name now (which it shows too)."""
        rows = self._all("SELECT a.profile_id, a.pinned_version, p.version, p.name_search FROM active_profile a "
                         "JOIN profiles p ON p.id = a.profile_id WHERE a.slot = 1 AND a.pinned_version IS NOT NULL")
        if not rows or rows[0]["pinned_version"] == rows[0]["version"]:
            return None
        version = self.get_version(rows[0]["profile_id"], rows[0]["pinned_version"])  # type: ignore[attr-defined]
        return None if version is None else (version, rows[0]["name_search"])

    def get_profile(self, profile_id: UUID | str) -> ProfileRow | None:
        identity = as_uuid(profile_id)
        if identity is None:
            return None
        return self._first(self._profiles("id = :id", {"id": identity, "limit": 1}, "id"))

    def get_profile_by_name(self, name: str) -> ProfileRow | None:
        """By name as names are compared: trimmed, inner whitespace collapsed, case-insensitive."""
        return self._first(self._profiles("name_key = :key", {"key": name_key(name), "limit": 1}, "id"))

    def _first(self, rows: list[Any]) -> ProfileRow | None:
        return self._rows(ProfileRow, rows)[0] if rows else None

    def _profiles(self, where: str, params: dict[str, Any], order: str, setup: Sequence[str] = ()) -> list[Any]:
        """A page of profile rows, then their usage and the active slot joined in (with :data:`PAGE_BOUNDS` in
        ``params``, bounded by them: :func:`projections.reading.bounded_page`)."""
        page = f"SELECT {PROFILES.select()}, name_key, {', '.join(DETAIL_BYTES)} FROM profiles"
        page += f" WHERE {where}" if where else ""
        page = f"{page} ORDER BY {order} LIMIT :limit"
        cut = ""
        if "features_max" in params:
            page, cut = bounded_page(page, order, PROFILE_SIZES), "WHERE p.fits "
        sql = (
            f"SELECT p.*, (a.profile_id IS NOT NULL) AS is_active, a.pinned_version, "
            f"COALESCE(u.execution_count, 0) AS execution_count, u.last_executed_at "
            f"FROM ({page}) p "
            f"LEFT JOIN profile_usage u ON u.profile_id = p.id LEFT JOIN active_profile a ON a.profile_id = p.id {cut}"
            f"ORDER BY {', '.join('p.' + term for term in order.split(', '))}"
        )
        return self._all(sql, params, setup=setup)

    def _labels_filter(self, column: str, labels: list[str], match: str, params: dict[str, Any]) -> str:
        if self.dialect.is_postgres:
            params[column] = labels
            return f"{column} {'@>' if match == 'all' else '&&'} :{column}"
        names = []
        for number, label in enumerate(labels):
            params[f"{column}{number}"] = label
            names.append(f":{column}{number}")
        members = f"SELECT value FROM json_each(profiles.{column}) WHERE value IN ({', '.join(names)})"
        if match == "all":
            params[f"{column}_count"] = len(set(labels))
            return f"(SELECT COUNT(DISTINCT value) FROM ({members})) = :{column}_count"
        return f"EXISTS ({members})"

"""How a route names a profile: ``{profile_id}`` is its id (a UUID) or, when it is not a UUID, its name."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar.params import PathParameter

from ledger.errors import ProfileNotFoundError

PROFILE_REF_DESCRIPTION = (
    "The profile's id (a UUID) or, when the value is not a UUID, its name (URL-encoded; compared trimmed and "
    "case-insensitively). A deleted profile is found by the name it had until another profile takes it."
)

ProfileRef = Annotated[str, PathParameter(description=PROFILE_REF_DESCRIPTION)]


def profile_not_found(profile_id: UUID | str) -> ProfileNotFoundError:
    return ProfileNotFoundError(f"profile {profile_id} not found", profile_id=str(profile_id))

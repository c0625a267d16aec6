"""Seed 000's compatibility check for a generation request: the profile version it uses, against what is loaded.

Warnings for another model, SAE or layer; a refusal (422 ``profile_incompatible``) for what cannot be applied,
such as a feature index at or beyond the SAE's width.
"""

from __future__ import annotations

from typing import Any


def request_warnings(generation: Any, completion: Any) -> list[str]:
    """The warnings for the profile a completion names (or the active one); raises when it is impossible."""
    spec = generation.resolve(completion.profile, completion.profile_version)
    return [] if spec is None else list(generation.compatibility_warnings(spec))

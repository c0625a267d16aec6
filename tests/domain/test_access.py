"""API tokens: issued once, stored only as a salted hash, refused once revoked."""

from __future__ import annotations

import pytest

from ledger.access import AccessTokens, role_allows
from ledger.errors import AuthenticationError, TokenNotFoundError, ValidationError


def test_a_token_authenticates_as_its_principal_and_its_secret_is_not_stored():
    tokens = AccessTokens()
    token = tokens.issue("ci bot", "editor")
    principal = tokens.authenticate(token)
    assert (principal.name, principal.role) == ("ci bot", "editor")
    secret = token.split("_", 2)[2]  # pl_<id>_<secret>; the secret itself may hold "_"
    assert all(secret not in repr(e.__dict__) for e in tokens.collect_events())


@pytest.mark.parametrize("bad", ["", "Bearer x", "pl_nothex_secret", "pl_" + "0" * 32 + "_secret"])
def test_malformed_or_unknown_tokens_are_refused(bad):
    tokens = AccessTokens()
    tokens.issue("a", "reader")
    with pytest.raises(AuthenticationError):
        tokens.authenticate(bad)


def test_a_wrong_secret_or_a_revoked_token_is_refused():
    tokens = AccessTokens()
    token = tokens.issue("a", "admin")
    with pytest.raises(AuthenticationError):
        tokens.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B"))
    token_id = tokens.authenticate(token).token_id
    assert tokens.revoke(token_id) and not tokens.revoke(token_id)
    with pytest.raises(AuthenticationError):
        tokens.authenticate(token)
    with pytest.raises(TokenNotFoundError):
        tokens.revoke(AccessTokens.ID)


def test_roles_are_ordered_and_checked():
    assert role_allows("admin", "editor") and role_allows("editor", "reader") and not role_allows("reader", "editor")
    with pytest.raises(ValidationError):
        AccessTokens().issue("a", "root")

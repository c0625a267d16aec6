"""The ledger's error tree. No HTTP here: the API maps these classes to status codes in one place."""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose.

    ``code`` is a stable machine-readable identifier; ``details`` carries structured context.
    """

    code = "ledger_error"
    passing = False
    """A refusal for a moment's state (a concurrent writer, a running rebuild): a retry of the same request may go
    through, so an ``Idempotency-Key`` does not keep it for the retries."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


# -- not found -------------------------------------------------------------------------------------
class NotFoundError(LedgerError):
    code = "not_found"


class ProfileNotFoundError(NotFoundError):
    code = "profile_not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class ProfileVersionNotFoundError(NotFoundError):
    code = "profile_version_not_found"


class ExecutionNotFoundError(NotFoundError):
    code = "execution_not_found"


class RunNotFoundError(NotFoundError):
    code = "run_not_found"

    @classmethod
    def of(cls, run_id: str, *, of_a_profile: bool = False) -> RunNotFoundError:
        """No execution (``of_a_profile``: of a live profile) is recorded with ``run_id``; the id said at most
        200 characters long, as a run id is (one asked for may be any length)."""
        shown = repr(run_id) if len(run_id) <= 200 else f"{run_id[:200]!r}… ({len(run_id)} characters)"
        what = "no execution of a profile" if of_a_profile else "no execution"
        return cls(f"{what} is recorded with run id {shown}", run_id=run_id[:200])


class NoActiveProfileError(NotFoundError):
    code = "no_active_profile"


# -- invalid input ---------------------------------------------------------------------------------
class ValidationError(LedgerError):
    """A value breaks a rule of the domain. ``field`` names it (a dotted path where useful)."""

    code = "invalid_value"

    def __init__(self, message: str, field: str | None = None, **details: Any) -> None:
        super().__init__(message, field=field, **details)
        self.field = field


class SpecChangeNeedsVersionError(ValidationError):
    code = "spec_change_needs_version"


class ImportFormatError(ValidationError):
    code = "invalid_import"


class ProfileIncompatibleError(ValidationError):
    """The profile cannot be applied to the loaded model/SAE (layer out of range, feature ≥ d_sae)."""

    code = "profile_incompatible"


class ContextLengthExceededError(ValidationError):
    """The messages, with the tokens asked for, do not fit the model's context."""

    code = "context_length_exceeded"


# -- conflicts -------------------------------------------------------------------------------------
class ConflictError(LedgerError):
    code = "conflict"


class ProfileNameTakenError(ConflictError):
    code = "profile_name_taken"


class ProfileActiveError(ConflictError):
    code = "profile_active"


class ProfileNotActiveError(ConflictError):
    code = "profile_not_active"


class ProfileDeletedError(ConflictError):
    code = "profile_deleted"


class ProfileNotDeletedError(ConflictError):
    """A restore of a profile that is not deleted."""

    code = "profile_not_deleted"


class ConcurrentUpdateError(ConflictError):
    """Another writer appended to the same stream first; reload and try again."""

    code = "concurrent_update"
    passing = True


class StaleVersionError(ConflictError):
    """The caller's ``expected_version`` is not the profile's current version."""

    code = "stale_version"


# -- access ----------------------------------------------------------------------------------------
class AuthenticationError(LedgerError):
    """No valid token was presented."""

    code = "unauthenticated"


class PermissionDeniedError(LedgerError):
    """The token's role is too low for the request."""

    code = "forbidden"


class TokenNotFoundError(NotFoundError):
    code = "token_not_found"


class BusyError(LedgerError):
    """Something that runs one at a time is running: try again after ``retry_after_s`` seconds."""

    code = "too_many_requests"
    retry_after_s = 2


# -- integrity -------------------------------------------------------------------------------------
class TamperedRecordError(LedgerError):
    """A stored event or snapshot that this ledger's key did not sign, or a stream with an event removed: refused,
    never used."""

    code = "log_tampered"


class SigningKeyError(LedgerError):
    """The event-signing key (``LEDGER_SIGNING_KEY``) cannot be read: nothing can be written or read."""

    code = "signing_key_unavailable"

"""``/api/tokens``: issue, list and revoke API tokens (admin only). A token may carry an expiry; its name is
unique among the live tokens (409 ``token_name_taken``)."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from ledger.access import expiry_after
from ledger.api.auth import requires
from ledger.api.commands import run_command
from ledger.api.runtime import Runtime
from ledger.api.errors import CONFLICT, INVALID, NOT_FOUND, TOO_LARGE, InvalidRequestError, responses
from ledger.api.schemas import CreateToken, TokenIssued, TokenList, TokenRead, TokenRevocation
from ledger.application import ProfileLedger
from ledger.domainmodel import CommandContext
from ledger.states import convert
from ledger.tokens import TokenService


def _forget_cached_tokens(runtime: Runtime) -> None:
    """This process's token cache reloads on the next request, so a revocation holds at once here."""
    runtime.tokens.invalidate()


class TokenController(Controller):
    path = "/api/tokens"
    tags = ["tokens"]
    opt = requires("admin")

    @post(
        "/",
        summary="Issue a token (its secret is in this answer only)",
        sync_to_thread=True,
        status_code=HTTP_201_CREATED,
        responses=responses(INVALID, CONFLICT, TOO_LARGE),
    )
    def issue_token(
        self,
        data: JSONBody[CreateToken],
        ledger: NamedDependency[ProfileLedger],
        context: NamedDependency[CommandContext],
        runtime: NamedDependency[Runtime],
    ) -> Response[TokenIssued]:
        if data.expires_in is not None and data.expires_at is not None:
            raise InvalidRequestError("give expires_in or expires_at, not both", field="expires_in")
        expires_at = expiry_after(data.expires_in) if data.expires_in is not None else data.expires_at
        record, token = run_command(context, lambda: TokenService(ledger).issue(data.name, data.role, expires_at))
        _forget_cached_tokens(runtime)
        body = convert(record, TokenIssued, token=token)
        return Response(body, status_code=HTTP_201_CREATED, headers={"Cache-Control": "no-store"})

    @get("/", summary="Every token ever issued (never their secrets)", sync_to_thread=True)
    def list_tokens(self, ledger: NamedDependency[ProfileLedger]) -> TokenList:
        return TokenList(tokens=[convert(record, TokenRead) for record in TokenService(ledger).records()])

    @delete(
        "/{token_id:uuid}",
        summary="Revoke a token: requests with it are refused from now on",
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        responses=responses(NOT_FOUND, INVALID),
    )
    def revoke_token(
        self,
        token_id: FromPath[UUID],
        ledger: NamedDependency[ProfileLedger],
        context: NamedDependency[CommandContext],
        runtime: NamedDependency[Runtime],
    ) -> TokenRevocation:
        revoked = run_command(context, lambda: TokenService(ledger).revoke(token_id))
        _forget_cached_tokens(runtime)
        return TokenRevocation(id=token_id, revoked=revoked)

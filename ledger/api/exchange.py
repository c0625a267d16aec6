"""``/api/profiles/{id}/export`` and ``/api/profiles/import``: profiles as exchange documents."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, Operation, Reference, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import QueryParameter
from litestar.status_codes import HTTP_201_CREATED

from ledger import exchange
from ledger.api.auth import requires
from ledger.api.bodies import media_type, refuse_repeated_keys, why_malformed
from ledger.api.commands import CREATED_PROFILE_HEADERS, run_command
from ledger.api.references import ProfileRef, profile_not_found
from ledger.api.deps import LOOKUP
from ledger.api.errors import CONFLICT, INVALID, TOO_LARGE, InvalidRequestError, UnsupportedMediaTypeError, responses
from ledger.api.profiles import change_response
from ledger.api.schemas import ExchangeDocument, ProfileChange
from ledger.application import ProfileLedger
from ledger.domainmodel import CommandContext
from ledger.errors import ProfileNotFoundError, ProfileVersionNotFoundError
from ledger.states import showing_version
from ledger.values import INT64_MAX

UTF8_BOM = b"\xef\xbb\xbf"
FILENAME_MAX = 120
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\"\';:*?<>|%]+')


def content_disposition(name: str, suffix: str = ".json") -> str:
    """An RFC 6266 attachment header safe for any name: an ASCII ``filename`` and a UTF-8 ``filename*``."""
    cleaned = "".join(ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C")
    cleaned = _UNSAFE.sub("_", cleaned).strip(" ._") or "profile"
    cleaned = cleaned[:FILENAME_MAX]
    ascii_name = unicodedata.normalize("NFKD", cleaned).encode("ascii", "ignore").decode("ascii")
    ascii_name = re.sub(r"[^A-Za-z0-9 ._()\[\]+=,!@#$&~-]+", "_", ascii_name).strip(" ._") or "profile"
    return f"attachment; filename=\"{ascii_name}{suffix}\"; filename*=UTF-8''{quote(cleaned + suffix, safe='')}"


IMPORT_BODY_FACTOR = 8
"""An import's body may be this many times larger than other requests' (16 MiB at the default 2 MiB): what the export
of the largest profile the ledger holds (one event of ``ledger.write_path.EVENT_BYTES_MAX``) spells, indented, must
import again. A lower configured limit lowers it too."""


def export_download(reads: Any, profile_id: UUID, version: int | None) -> Response[ExchangeDocument]:
    """The exchange document of a profile's version (default: the version in force, as every read shows it), from
    the read model, as a download. A deleted profile's versions stay history, and export as the CLI exports them;
    its latest is gone."""
    current = reads.get_profile(profile_id)
    in_force = version is None and current is not None and current.is_active and current.pinned_version is not None
    if in_force:
        version = current.pinned_version
    if current is None and reads.get_version(profile_id, 1) is None:  # never a profile (with ?version too)
        raise profile_not_found(profile_id)
    if current is None and version is None:
        raise ProfileNotFoundError(f"profile {profile_id} has been deleted; its versions stay history: export one "
                                   "with ?version=N", profile_id=str(profile_id))
    row = current if current is not None and version in (None, current.version) else reads.get_version(
        profile_id, version)
    if row is None:
        latest = f" (latest is {current.version})" if current is not None else ""
        raise ProfileVersionNotFoundError(
            f"profile {profile_id} has no version {version}{latest}", profile_id=str(profile_id), version=version
        )
    if in_force and row is not current:
        row = showing_version(current, row)  # the version in force, under the profile's own name as reads show it
    document = msgspec.convert(exchange.export_document(row, row.version), ExchangeDocument)
    return Response(document, headers={"Content-Disposition": content_disposition((current or row).name)})


@dataclass
class ImportOperation(Operation):
    """Documents the import body: a JSON document, or a multipart form with the document as ``file``."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="An exchange document (`millm_profile` 1.x, or a flat miLLM profile).",
            content={
                "application/json": OpenAPIMediaType(schema=Schema(one_of=[
                    Reference(f"#/components/schemas/{ExchangeDocument.__name__}"),
                    Schema(type=OpenAPIType.OBJECT, required=["name"], description="A flat profile: a profile's "
                           "fields (`model_id`, `sae_id`), with what an answer says of it besides (not imported)."),
                ])),
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        properties={"file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)},
                        required=["file"],
                    )
                ),
            },
        )


async def exchange_document(request: Request[Any, Any, Any], also: Collection[str] = ()) -> Any:
    """The exchange document a request carries: its JSON body, or the ``file`` of its multipart form (one file, and
    no field but those its caller reads itself, ``also``)."""
    header = request.headers.get("content-type", "")
    content_type = header.split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form()
        names = [name for name, _ in form.multi_items()]
        extra = next((name for name in names if name != "file" and name not in also), None) \
            or ("file" if names.count("file") > 1 else None)
        if extra is not None:
            given = "more than one 'file'" if extra == "file" else f"a field {extra[:80]!r}"
            raise InvalidRequestError(f"the form has {given}: it takes one document, as 'file' (rename is the query "
                                      "parameter ?rename=true)", field=extra)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError("the form has no file field named 'file'", field="file")
        raw = await upload.read()
    elif (content_type := media_type(header)) in ("application/json", "") or content_type.endswith("+json"):
        raw = await request.body()
    else:
        raise UnsupportedMediaTypeError(
            f"send the document as application/json or as multipart/form-data (not {content_type[:80]!r})"
        )
    raw = raw.removeprefix(UTF8_BOM)  # some editors begin a UTF-8 file with one
    if not raw.strip():
        raise InvalidRequestError("the import document is empty", field="file")
    try:
        document = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise InvalidRequestError(f"the import document is not valid JSON: {why_malformed(error, raw)}",
                                  field="file") from None
    except RecursionError:
        raise InvalidRequestError("the import document is nested too deeply", field="file") from None
    await refuse_repeated_keys(raw)
    return document


class ProfileExchangeController(Controller):
    path = "/api/profiles"
    tags = ["exchange"]

    @get("/{profile_id:str}/export", summary="Download a profile (or one of its versions) as an exchange document",
         **LOOKUP)
    def export_profile(
        self,
        profile_id: ProfileRef,
        reads: NamedDependency[Any],
        ledger: NamedDependency[ProfileLedger],
        version: Annotated[int | None, QueryParameter(
            ge=1, le=INT64_MAX,
            description="Default: the version in force (the active profile's pinned one, else the latest).",
        )] = None,
    ) -> Response[ExchangeDocument]:
        return export_download(reads, ledger.resolve_profile(profile_id), version)

    @post(
        "/import",
        summary="Create a profile from an exchange document (JSON body or multipart `file`)",
        status_code=HTTP_201_CREATED,
        operation_class=ImportOperation,
        opt=requires("admin"),
        response_headers=CREATED_PROFILE_HEADERS,
        responses=responses(CONFLICT, INVALID, TOO_LARGE),
    )
    async def import_profile(
        self,
        request: Request[Any, Any, Any],
        ledger: NamedDependency[ProfileLedger],
        context: NamedDependency[CommandContext],
        runtime: NamedDependency[Any],
        rename: Annotated[bool, QueryParameter(description="On a name clash, import under a new name.")] = False,
    ) -> Response[ProfileChange]:
        document = await exchange_document(request)

        def work() -> Response[ProfileChange]:
            outcome = run_command(context, lambda: ledger.import_profile(document, rename=rename))
            return change_response(outcome, ledger, runtime.read_model, HTTP_201_CREATED)

        return await anyio.to_thread.run_sync(work)

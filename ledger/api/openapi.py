"""Make the generated OpenAPI document say what the API does.

Litestar documents a ``400`` for every handler with parameters; this API answers request validation errors
with ``422`` and the common error shape, so the ``400`` entries are replaced by that ``422``.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Reference

ERROR_SCHEMA = "#/components/schemas/ErrorBody"


def tidy_openapi(app: Litestar) -> None:
    schema = app.openapi_schema
    for path_item in (schema.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(path_item, method, None)
            if operation is None or operation.responses is None:
                continue
            responses = operation.responses
            if "400" in responses:
                del responses["400"]
                responses.setdefault(
                    "422",
                    OpenAPIResponse(
                        description="The request is invalid (error `invalid_request`)",
                        content={"application/json": OpenAPIMediaType(schema=Reference(ref=ERROR_SCHEMA))},
                    ),
                )

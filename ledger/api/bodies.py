"""Strict request bodies.

Litestar converts a JSON body to the handler's Struct leniently (``"3"`` would become ``3``). This hook, run
before every handler, decodes the body again with msgspec's strict rules against the handler's ``data``
type, so a value of the wrong JSON type is refused (422) rather than coerced; malformed JSON is refused
(422) here too, and so is JSON nested too deeply to decode.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException

_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def _body_type(request: Request[Any, Any, Any]) -> Any:
    field = request.route_handler.parsed_fn_signature.parameters.get("data")
    return None if field is None else field.annotation


async def strict_json_body(request: Request[Any, Any, Any]) -> None:
    body_type = _body_type(request)
    if body_type is None:
        return
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        return
    raw = await request.body()
    if not raw.strip():
        return  # an absent body: the handler's signature says whether that is allowed
    try:
        msgspec.json.decode(raw, type=body_type)
    except msgspec.ValidationError as error:
        message = str(error)
        match = _PATH.search(message)
        key = match.group("path") if match else "data"
        message = _PATH.sub("", message)
        raise ValidationException(
            detail="the request body is invalid", extra=[{"message": message, "key": key or "data", "source": "body"}]
        ) from None
    except msgspec.DecodeError as error:
        raise ValidationException(
            detail="the request body is not valid JSON",
            extra=[{"message": f"malformed JSON: {error}", "key": "data", "source": "body"}],
        ) from None
    except RecursionError:
        raise ValidationException(
            detail="the request body is nested too deeply",
            extra=[{"message": "the JSON is nested too deeply", "key": "data", "source": "body"}],
        ) from None

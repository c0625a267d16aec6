"""The OpenAPI document's page (``/schema``): Swagger UI from this server, not from a CDN.

swagger-ui-py ships Swagger UI's files; they are served under ``/schema/assets``, so the page works where the
browser has no internet, and it runs no script from elsewhere in the origin the console's session lives in. The
page carries the console's security headers, but for its inline start-up script (Litestar's).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from litestar import Router
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

from ledger.api.auth import PUBLIC
from ledger.console.rendering import security_headers

DOCS_PATH = "/schema"
ASSETS = f"{DOCS_PATH}/assets"
_SWAGGER_UI = Path(importlib.util.find_spec("swagger_ui").submodule_search_locations[0]) / "static"  # no import

DOCS_HEADERS = security_headers(inline_scripts=True)


def docs_page() -> SwaggerRenderPlugin:
    return SwaggerRenderPlugin(
        js_url=f"{ASSETS}/swagger-ui-bundle.js",
        css_url=f"{ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>",
    )


def docs_router() -> Router:
    """The router the OpenAPI document and its page are served by (Litestar adds their routes): with Swagger UI's
    files, public as the document is, and every answer with :data:`DOCS_HEADERS`."""
    assets = create_static_files_router(
        path="/assets", directories=[_SWAGGER_UI], opt=dict(PUBLIC), include_in_schema=False, name="docs:assets"
    )
    return Router(DOCS_PATH, route_handlers=[assets], include_in_schema=False, response_headers=DOCS_HEADERS)

"""The OpenAPI UI at ``docs_path``: Swagger UI's files from the installed ``fastapi-offline``
package (only its static files: Swagger UI 5, which reads the OpenAPI 3.1 schema FastAPI
writes), served by the app under its own prefix, so the page needs no network beyond the
service.

FastAPI's built-in page loads Swagger UI from a CDN and starts it with an inline script; both
break under the pages' Content-Security-Policy (``service.security``) and in an air-gapped
cluster. Here the start-up is a file (``static/swagger-init.js``) reading the schema's URL from
the page, and only the assets the page uses are served, under a URL carrying the
package's version (cached for good: a new version is a new URL).
"""

from __future__ import annotations

import html
from importlib import metadata, resources
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from service.errors import NotFound

PACKAGE = "fastapi-offline"
ASSET_DIR = Path(str(resources.files("fastapi_offline") / "static"))
ASSET_SEGMENT = f"assets-{metadata.version(PACKAGE)}"
"""The URL segment of the assets under ``docs_path``: the package's version."""
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
"""What the page loads; nothing else in the package's folder is served."""
IMMUTABLE = "public, max-age=31536000, immutable"

_PAGE = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>{title} - Swagger UI</title>
    <link rel="icon" type="image/png" href="{assets}/favicon.png" />
    <link rel="stylesheet" href="{assets}/swagger-ui.css" />
  </head>
  <body>
    <div id="swagger-ui" data-openapi-url="{openapi}"></div>
    <script src="{assets}/swagger-ui-bundle.js"></script>
    <script src="{root}/static/swagger-init.js"></script>
  </body>
</html>
"""


def install(app: FastAPI, docs_path: str, openapi_path: str) -> None:
    """Add the page at ``docs_path`` and its assets under ``docs_path/assets-<version>/``."""
    assets = f"{docs_path}/{ASSET_SEGMENT}"

    async def page(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return HTMLResponse(
            _PAGE.format(
                title=html.escape(app.title),
                assets=html.escape(root + assets),
                openapi=html.escape(root + openapi_path),
                root=html.escape(root),
            )
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFound(f"no Swagger UI asset '{name[:80]}'", field="name")
        return FileResponse(
            ASSET_DIR / name, media_type=media_type, headers={"Cache-Control": IMMUTABLE}
        )

    app.add_route(docs_path, page, methods=["GET"], include_in_schema=False)
    app.add_route(assets + "/{name}", asset, methods=["GET"], include_in_schema=False)

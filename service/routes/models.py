"""What the playground page reads (the models, their versions and metadata), and the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from service.errors import NotFound
from service.responses import json_response
from service.routes.common import DataPlaneDep, parse_version
from service.schemas import ErrorResponse, ModelListing, ModelsListing

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# The page's files keep their names across releases, so browsers must revalidate (cheap: ETag
# and Last-Modified answer 304) rather than cache blindly.
CACHE_CONTROL = "no-cache"

router = APIRouter(tags=["models"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown model or version"}
}


@router.get("/models", response_model=ModelsListing)
async def list_models(dataplane: DataPlaneDep) -> Response:
    """Every model served (one with ``--model-dir``), and the default one (``POST /predict``)."""
    models = []
    for served in dataplane.models.models:
        registry = served.registry
        models.append(
            {
                "name": served.name,
                "ready": served.ready,
                "default_version": registry.default_version,
                "versions": registry.versions,
            }
        )
    return json_response({"default_model": dataplane.model_name, "models": models})


@router.get("/models/{model_name}", response_model=ModelListing, responses=_ERRORS)
async def list_versions(model_name: str, dataplane: DataPlaneDep) -> Response:
    """Loaded versions (newest last) and the default one."""
    registry = dataplane.model(model_name).registry
    default = registry.default_version
    if default is None:
        raise NotFound(f"model '{model_name}' has no version loaded yet", field="model_name")
    return json_response(
        {"name": model_name, "default_version": default, "versions": registry.versions}
    )


@router.get(
    "/models/{model_name}/versions/{version}",
    responses={**_ERRORS, 200: {"description": "The version's metadata.json"}},
)
async def version_metadata(model_name: str, version: str, dataplane: DataPlaneDep) -> Response:
    """The version's ``metadata.json`` as written by training (config, accuracy, sample...)."""
    served = dataplane.model(model_name).registry.get(parse_version(version))
    return json_response({**served.metadata, "version": served.version})


def _page() -> Response:
    index = STATIC_DIR / "index.html"
    if not index.is_file():
        raise NotFound("the playground page is not installed (service/static/index.html)")
    return FileResponse(
        index, media_type="text/html; charset=utf-8", headers={"Cache-Control": CACHE_CONTROL}
    )


@router.get("/", include_in_schema=False)
async def root_page() -> Response:
    return _page()


@router.get("/playground", include_in_schema=False)
async def playground_page() -> Response:
    return _page()


class CachedStaticFiles(StaticFiles):
    """StaticFiles answering with our Cache-Control (and its ETag/304 handling)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = CACHE_CONTROL
        return response

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not Path(str(self.directory)).is_dir():
            raise NotFound("the playground's static files are not installed")
        return await super().get_response(path, scope)


def static_files() -> CachedStaticFiles:
    return CachedStaticFiles(directory=STATIC_DIR, check_dir=False)

"""What the playground page reads (the models, their versions, metadata and training
history), and the page itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from service.errors import NotFound
from service.registry import ServedVersion
from service.responses import JSON, json_response
from service.routes.common import DataPlaneDep, parse_version
from service.schemas import ErrorResponse, ModelListing, ModelsListing, TrainingHistory

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# The page's files keep their names across releases, so browsers must revalidate (cheap: ETag
# and Last-Modified answer 304) rather than cache blindly.
CACHE_CONTROL = "no-cache"
# A published version never changes (xor_dnn.modelstore), so its history may be cached for a
# day without asking again; the default version's history changes when a new version loads,
# so that URL is revalidated every time (a 304 when it has not).
VERSION_HISTORY_CACHE = "public, max-age=86400, immutable"
DEFAULT_HISTORY_CACHE = "no-cache"

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


_HISTORY_ANSWERS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    200: {
        "model": TrainingHistory,
        "description": "The version's training history (ETag: its sha256)",
    },
    304: {"description": "Unchanged: the If-None-Match ETag is the history's"},
}


@router.get(
    "/models/{model_name}/history", response_model=TrainingHistory, responses=_HISTORY_ANSWERS
)
async def default_history(model_name: str, request: Request, dataplane: DataPlaneDep) -> Response:
    """The default version's training history; 404 when that version has none."""
    return _history(dataplane.model(model_name).registry.get(None), request, DEFAULT_HISTORY_CACHE)


@router.get(
    "/models/{model_name}/versions/{version}/history",
    response_model=TrainingHistory,
    responses=_HISTORY_ANSWERS,
)
async def version_history(
    model_name: str, version: str, request: Request, dataplane: DataPlaneDep
) -> Response:
    """The version's training history (a version never changes: cached a day, ETag); 404
    when it was trained with ``--no-history`` or before histories existed."""
    served = dataplane.model(model_name).registry.get(parse_version(version))
    return _history(served, request, VERSION_HISTORY_CACHE)


def _history(served: ServedVersion, request: Request, cache_control: str) -> Response:
    history = served.model.history
    if history is None:
        raise NotFound(
            f"version {served.version} has no training history (trained with --no-history, "
            "or before histories were recorded)",
            field="version",
        )
    etag = f'"{history.sha256}"'
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if _matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers=headers)
    return Response(history.body, media_type=JSON, headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (weak comparison, RFC 9110) or ``*``."""
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag in tags or "*" in tags


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

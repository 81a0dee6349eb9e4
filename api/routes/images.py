"""Image routes: metadata, server-rendered thumbnail and preview PNGs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import WithJsonSchema
from starlette.concurrency import run_in_threadpool

from api.deps import FreshDep, ImageIdDep
from api.routes.render import WINDOW_SCHEMA, png_response
from api.schemas import ImageModel
from api.state import ServiceState
from api.views import image_model
from retrieval.errors import NotFoundError
from retrieval.render import SIZES, cached_png, render_indexed
from retrieval.store.models import Image

router = APIRouter(prefix="/v1/images", tags=["images"])


def _by_sop(state: ServiceState, uid: str, frame: int | None) -> Image:
    images = state.collection.catalog.images(state.collection.catalog.ids_by_sop_uid(uid))
    if not images:
        raise NotFoundError(f"SOP Instance UID {uid} is not indexed here: index its study first")
    by_frame = {image.frame: image for image in images.values()}
    if frame is None:
        return images[min(images)]
    if frame not in by_frame:
        indexed = ", ".join(map(str, sorted(by_frame)))
        raise NotFoundError(f"frame {frame} of SOP Instance UID {uid} is not indexed (indexed frames: {indexed})")
    return by_frame[frame]


@router.get("/by-sop", response_model=ImageModel, summary="The indexed image of a SOP Instance UID (and frame)")
async def image_by_sop(
    state: FreshDep,
    uid: Annotated[str, Query(min_length=1, max_length=64, description="A SOP Instance UID.")],
    frame: Annotated[int | None, Query(ge=1, description="A 1-based frame (default: the first indexed one).")] = None,
) -> ImageModel:
    """Where a viewer's deep link `/?sop=UID&frame=N` starts: the image's metadata and id, or 404 naming what is
    missing."""
    image = await run_in_threadpool(_by_sop, state, uid, frame)
    return image_model(image, state.settings.viewer_url_template, state.settings.dicomweb_url)


@router.get("/{image_id}", response_model=ImageModel, summary="Metadata of an indexed image")
async def get_image(image_id: ImageIdDep, state: FreshDep) -> ImageModel:
    """UIDs, modality, body part, date, labels/report, source; never patient identifiers."""
    image = await run_in_threadpool(state.collection.catalog.image, image_id)
    return image_model(image, state.settings.viewer_url_template, state.settings.dicomweb_url)


async def _png(state: ServiceState, image_id: int, kind: str) -> Response:
    image = await run_in_threadpool(state.collection.catalog.image, image_id)
    png = await run_in_threadpool(cached_png, image, kind, state.settings)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/{image_id}/thumbnail",
    response_class=Response,
    summary="256 px PNG rendered from the source",
    responses={200: {"content": {"image/png": {}}}},
)
async def thumbnail(image_id: ImageIdDep, state: FreshDep) -> Response:
    """The image's own frame, windowed as at indexing time, at most 256 x 256."""
    return await _png(state, image_id, "thumbnail")


@router.get(
    "/{image_id}/preview",
    response_class=Response,
    summary="1024 px PNG rendered from the source",
    responses={200: {"content": {"image/png": {}}}},
)
async def preview(
    image_id: ImageIdDep,
    state: FreshDep,
    window: Annotated[
        str | None, Query(description="a CT preset (GET /v1/render/windows)"), WithJsonSchema(WINDOW_SCHEMA)
    ] = None,
) -> Response:
    """The image's own frame, windowed as at indexing time (or under a CT `window` preset), at most 1024 x 1024."""
    if window is not None:  # an empty `window=` is no preset (400), not "as indexed"
        image = await run_in_threadpool(state.collection.catalog.image, image_id)
        return png_response(await run_in_threadpool(render_indexed, image, SIZES["preview"], state.settings, window))
    return await _png(state, image_id, "preview")

"""The viewer route: an indexed image's frame at a free window/level (W/L dragged on the page), or inverted."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from api.deps import FreshDep, ImageIdDep
from retrieval.viewing import LEVEL_LIMIT, View, view_indexed

router = APIRouter(prefix="/v1/images", tags=["images"])
PNG_DOC: dict[int | str, dict[str, object]] = {200: {"content": {"image/png": {}}}}


def view_response(view: View) -> Response:
    """The PNG, with what it shows in headers: frame, frame count, inversion and the window (when one applies)."""
    headers = {
        "Cache-Control": "private, max-age=600",
        "X-Medsearch-Frame": str(view.frame),
        "X-Medsearch-Frames": str(view.frames),
        "X-Medsearch-Inverted": "true" if view.inverted else "false",
        "X-Medsearch-Size": f"{view.columns}x{view.rows}",
    }
    if view.window is not None:
        headers |= {
            "X-Medsearch-Window-Centre": f"{view.window.centre:g}",
            "X-Medsearch-Window-Width": f"{view.window.width:g}",
            "X-Medsearch-Window-Units": view.window.units,
            "X-Medsearch-Window-Origin": view.window.origin,
        }
    return Response(view.png, media_type="image/png", headers=headers)


@router.get("/{image_id}/view", response_class=Response, summary="A frame at a free window/level", responses=PNG_DOC)
async def view(
    image_id: ImageIdDep,
    state: FreshDep,
    wc: Annotated[
        float | None,
        Query(ge=-LEVEL_LIMIT, le=LEVEL_LIMIT, description="window centre (HU for CT, stored values otherwise)"),
    ] = None,
    ww: Annotated[
        float | None, Query(ge=1, le=2 * LEVEL_LIMIT, description="window width, at least 1 (PS3.3 C.11.2.1.2)")
    ] = None,
    frame: Annotated[
        int | None, Query(ge=1, description="a 1-based frame of the file (default: the image's own)")
    ] = None,
    invert: Annotated[bool, Query(description="white for black")] = False,
) -> Response:
    """The image's frame from its source at most 1024 x 1024, windowed with the linear VOI function of PS3.3
    C.11.2.1.2 at centre `wc` and width `ww` (either one missing: the default window's, which the headers name:
    the file's own, the CT preset in use, or the frame's value range). Not cached; recent frames stay decoded.

    Headers: X-Medsearch-Window-Centre, -Width, -Units (HU or stored), -Origin (request, file, ct:<preset> or
    range), X-Medsearch-Frame, -Frames, -Inverted and -Size (the source frame's columns x rows). A window on a
    raster picture or a colour DICOM is a 409 window_not_applicable; a frame the file does not have is a 400."""
    image = await run_in_threadpool(state.collection.catalog.image, image_id)
    shown = await run_in_threadpool(
        lambda: view_indexed(image, state.settings, centre=wc, width=ww, frame=frame, invert=invert)
    )
    return view_response(shown)

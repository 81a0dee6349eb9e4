"""Render routes: an uploaded file as the indexer sees it (the page's query preview), and the window presets."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile
from pydantic import BaseModel, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from api.deps import KeyDep, StateDep
from api.limits import read_upload
from retrieval.imaging.windowing import CT_PRESETS, preset_range
from retrieval.render import PRESET_MODALITY, SIZES, Rendering, render

# the preset names as the one accepted set (an unknown name is a 400 `bad_query` saying which exist)
WINDOW_SCHEMA: dict[str, Any] = {"type": "string", "enum": list(CT_PRESETS)}
router = APIRouter(prefix="/v1/render", tags=["render"])
PNG_DOC: dict[int | str, dict[str, object]] = {200: {"content": {"image/png": {}}}}


class WindowPreset(BaseModel):
    """A named window: width and centre, and the value range it maps onto black..white."""

    name: str
    width: float
    centre: float
    low: float
    high: float


class WindowPresets(BaseModel):
    """The presets the `window` parameter accepts, and the modality they apply to."""

    modality: str
    presets: list[WindowPreset]


def png_response(rendering: Rendering) -> Response:
    """The PNG, with what it shows in headers (kind, modality, window) so the page can offer presets or not, and
    the source frame's size (`WxH`), number and the file's frame count, so a region drawn on the picture maps
    back to source pixels of that frame."""
    headers = {
        "Cache-Control": "private, max-age=3600",
        "X-Medsearch-Kind": rendering.kind,
        "X-Medsearch-Modality": rendering.modality or "",
        "X-Medsearch-Window": rendering.window,
        "X-Medsearch-Size": f"{rendering.width}x{rendering.height}",
        "X-Medsearch-Frame": str(rendering.frame),
        "X-Medsearch-Frames": str(rendering.frames),
    }
    return Response(rendering.png, media_type="image/png", headers=headers)


@router.get("/windows", response_model=WindowPresets, summary="Window presets for previews")
async def windows(_key: KeyDep) -> WindowPresets:
    """Named CT windows (Hounsfield units) that `window` on the preview and render routes accepts."""
    presets = [
        WindowPreset(name=name, width=width, centre=centre, low=preset_range(name)[0], high=preset_range(name)[1])
        for name, (width, centre) in CT_PRESETS.items()
    ]
    return WindowPresets(modality=PRESET_MODALITY, presets=presets)


@router.post("", response_class=Response, summary="Render an uploaded image as PNG", responses=PNG_DOC)
async def render_upload(
    state: StateDep,
    _key: KeyDep,
    file: Annotated[UploadFile, File(description="DICOM, PNG, JPEG or TIFF")],
    window: Annotated[
        str | None,
        Form(description="a CT preset (GET /v1/render/windows); default: as indexed"),
        WithJsonSchema(WINDOW_SCHEMA),
    ] = None,
    size: Annotated[Literal["thumbnail", "preview"], Form()] = "preview",
) -> Response:
    """The upload decoded exactly as the indexer decodes (middle frame, same windowing), or under a CT preset.

    Nothing is stored. Headers say what the picture shows: X-Medsearch-Kind, -Modality and -Window, and
    -Size (the source frame's columns x rows, before scaling), -Frame (its 1-based number) and -Frames (of how many).
    """
    data = await read_upload(file, state.settings.max_upload_bytes)
    rendering = await run_in_threadpool(render, data, SIZES[size], state.settings, window=window)  # "": 400
    return png_response(rendering)

"""Export route: run a search for a DICOM query (upload or indexed id) and store its results as an SR in the PACS."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import FreshDep, ImageIdDep
from api.limits import read_upload
from api.routes.search import ROI_HELP, ROI_PATTERN, _audit, _encode
from api.schemas import ExportResponse, FilterParams
from api.state import ServiceState
from retrieval import query as engine
from retrieval.export.send import Route, targets
from retrieval.imaging.roi import parse_roi
from retrieval.query import MAX_K
from retrieval.vocabulary import GroupBy

router = APIRouter(prefix="/v1", tags=["export"])


Via = Literal["all", "cstore", "stow"]
IncludeUids = Annotated[
    bool, Form(description="List each match's Study/Series/SOP Instance UIDs (other patients' UIDs)")
]
ViaForm = Annotated[Via, Form(description="all configured routes, or only cstore or stow")]
RoiForm = Annotated[str, Form(max_length=64, pattern=ROI_PATTERN, description=ROI_HELP)]


@router.post("/export/sr", response_model=ExportResponse, summary="Search by a DICOM upload, results to the PACS as SR")
async def export_upload_sr(
    state: FreshDep,
    request: Request,
    params: Annotated[FilterParams, Form()],
    file: Annotated[UploadFile, File(description="A DICOM query")],
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
    group_by: Annotated[GroupBy, Form()] = "image",
    include_uids: IncludeUids = True,
    via: ViaForm = "all",
    roi: RoiForm = "",
) -> ExportResponse:
    """The search an uploaded DICOM query makes (as /v1/search/image), its hits stored as a Comprehensive SR in the
    query's study, in a series of its own, by C-STORE and/or STOW-RS (MEDSEARCH_EXPORT_*)."""
    data = await read_upload(file, state.settings.max_upload_bytes)
    return await _export(state, request, params, data, None, k, group_by, include_uids, via, roi)


@router.post(
    "/images/{image_id}/export/sr", response_model=ExportResponse, summary="Pivot from an indexed DICOM image, to SR"
)
async def export_similar_sr(
    image_id: ImageIdDep,
    state: FreshDep,
    request: Request,
    params: Annotated[FilterParams, Form()],
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
    group_by: Annotated[GroupBy, Form()] = "image",
    include_uids: IncludeUids = True,
    via: ViaForm = "all",
    roi: RoiForm = "",
) -> ExportResponse:
    """The search an indexed DICOM image makes (as /v1/images/{id}/similar), its hits stored as an SR in its study."""
    return await _export(state, request, params, None, image_id, k, group_by, include_uids, via, roi)


async def _export(
    state: ServiceState,
    request: Request,
    params: FilterParams,
    data: bytes | None,
    image_id: int | None,
    k: int,
    group_by: GroupBy,
    include_uids: bool,
    via: Via,
    roi: str,
) -> ExportResponse:
    region = parse_roi(roi) if roi else None
    route: Route | None = None if via == "all" else via

    def work() -> ExportResponse:
        from retrieval.export.run import export_sr, header_of, indexed_header, region_text  # highdicom: 1.4 s

        collection = state.collection
        targets(collection.settings, route)  # refused before any decoding when export is off
        if data is not None:
            header = header_of(data)
            query = _encode(state, lambda: engine.embed_image(collection, data, roi=region))
        else:
            assert image_id is not None
            header = indexed_header(collection, image_id)
            query = (
                engine.embed_id(collection, image_id)
                if region is None
                else _encode(state, engine.embed_region, collection, image_id, region)
            )
        hits = engine.search(
            collection,
            query,
            k=k,
            filters=params.store_filters(),
            exclude_same_patient=params.exclude_same_patient,
            exclude_same_study=params.exclude_same_study,
            group_by=group_by,
        )
        result = export_sr(
            collection, header, hits, query.kind, include_uids=include_uids, via=route, region=region_text(query.region)
        )
        return ExportResponse(**asdict(result))

    result = await run_in_threadpool(work)
    _audit(request, "export-sr", params, k, result.matches)
    return result

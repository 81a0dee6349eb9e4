"""Export route: run a search for a DICOM query (upload or indexed id) and store its results as an SR in the PACS."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import FreshDep
from api.limits import read_upload
from api.routes.search import ROI_HELP, ROI_PATTERN, _audit, _encode
from api.schemas import ExportResponse, FilterParams
from retrieval import query as engine
from retrieval.errors import BadQueryError
from retrieval.export.send import targets
from retrieval.imaging.roi import parse_roi
from retrieval.query import MAX_K
from retrieval.vocabulary import GroupBy

router = APIRouter(prefix="/v1/export", tags=["export"])


@router.post("/sr", response_model=ExportResponse, summary="Search and send the results to the PACS as a DICOM SR")
async def export_search_sr(
    state: FreshDep,
    request: Request,
    params: Annotated[FilterParams, Form()],
    file: Annotated[UploadFile | None, File(description="A DICOM query (or give image_id)")] = None,
    image_id: Annotated[int | None, Form(ge=1, description="An indexed DICOM image as the query")] = None,
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
    group_by: Annotated[GroupBy, Form()] = "image",
    include_uids: Annotated[
        bool, Form(description="List each match's Study/Series/SOP Instance UIDs (other patients' UIDs)")
    ] = True,
    via: Annotated[Literal["cstore", "stow"] | None, Form(description="Only this route")] = None,
    roi: Annotated[str | None, Form(max_length=64, pattern=ROI_PATTERN, description=ROI_HELP)] = None,
) -> ExportResponse:
    """The search a DICOM query makes (as /v1/search/image or /v1/images/{id}/similar), its hits stored as a
    Comprehensive SR in the query's study, in a series of its own, by C-STORE and/or STOW-RS (MEDSEARCH_EXPORT_*)."""
    if (file is None) == (image_id is None):
        raise BadQueryError("give exactly one of file (a DICOM upload) or image_id (an indexed DICOM image)")
    region = parse_roi(roi) if roi else None
    data = await read_upload(file, state.settings.max_upload_bytes) if file is not None else None

    def work() -> ExportResponse:
        from retrieval.export.run import export_sr, header_of, indexed_header, region_text  # highdicom: 1.4 s

        collection = state.collection
        targets(collection.settings, via)  # refused before any decoding when export is off
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
            collection, header, hits, query.kind, include_uids=include_uids, via=via, region=region_text(query.region)
        )
        return ExportResponse(**asdict(result))

    result = await run_in_threadpool(work)
    _audit(request, "export-sr", params, k, result.matches)
    return result

"""Report routes: a study's stored (de-identified) reports, for the page's report panel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from api.deps import FreshDep
from api.report_schemas import StudyReportModel, StudyReportsResponse
from api.state import ServiceState
from retrieval.errors import NotFoundError

router = APIRouter(prefix="/v1/studies", tags=["reports"])


def _reports(state: ServiceState, uid: str) -> StudyReportsResponse:
    rows = state.collection.catalog.reports.all_of(uid)
    if not rows:
        raise NotFoundError(f"no report is stored for study {uid}: import its report (`medsearch reports import`)")
    reports = [
        StudyReportModel(
            id=row.id,
            latest=row.latest,
            origin=row.origin,
            written_at=row.written_at.isoformat() if row.written_at else None,
            text=row.text,
            negated=row.negated.splitlines(),
            truncated=row.truncated,
        )
        for row in rows
    ]
    return StudyReportsResponse(study_instance_uid=uid, versions=len(reports), reports=reports)


@router.get("/{uid}/reports", response_model=StudyReportsResponse, summary="A study's stored reports")
async def study_reports(
    uid: Annotated[str, Path(max_length=64, description="A StudyInstanceUID.")], state: FreshDep
) -> StudyReportsResponse:
    """Every stored (de-identified) report of a study, the latest (the one words match and hits show) first, with
    its negated phrases; 404 when the study has none."""
    return await run_in_threadpool(_reports, state, uid)

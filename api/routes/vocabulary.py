"""GET /v1/vocabulary: error codes with their statuses, filter fields, grouping values and stats fields."""

from __future__ import annotations

from fastapi import APIRouter

from api.errors import API_ERRORS
from api.schemas import ErrorInfo, FilterInfo, VocabularyResponse
from retrieval.vocabulary import GROUP_BY, STATS_FIELDS, filter_fields, library_errors

router = APIRouter(tags=["system"])


def vocabulary() -> VocabularyResponse:
    """Built from the definitions themselves (error classes, `SearchFilters`, `GroupBy`, `StatsReport`)."""
    errors = {code: ErrorInfo(status=cls.status, title=cls.title) for code, cls in library_errors().items()}
    errors.update({code: ErrorInfo(status=e.status, title=e.title) for code, e in API_ERRORS.items()})
    return VocabularyResponse(
        errors=dict(sorted(errors.items())),
        filters=[FilterInfo(**field) for field in filter_fields()],
        group_by=list(GROUP_BY),
        stats=list(STATS_FIELDS),
    )


@router.get("/v1/vocabulary", response_model=VocabularyResponse, summary="Codes, filters, grouping, stats fields")
async def get_vocabulary() -> VocabularyResponse:
    """Public (no API key, no data): what clients such as the web page need to speak the API."""
    return vocabulary()

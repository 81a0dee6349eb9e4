"""Request and response models of the REST API (documented in OpenAPI)."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema

from retrieval.search import MAX_K, MAX_TEXT_CHARS


def _iso_date(value: Any) -> Any:
    """Dates only as YYYY-MM-DD (not numbers or timestamps, which pydantic would otherwise accept); a blank form
    field or query parameter means no bound."""
    if value is None or isinstance(value, date):
        return value
    if isinstance(value, str):
        if not value.strip():
            return None
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            return value.strip()
    raise ValueError("expected a date as YYYY-MM-DD")


def _not_bool(value: Any) -> Any:
    """JSON `true`/`false` are not numbers (pydantic would read them as 1 and 0); 3.0 still is 3."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, not a boolean")
    return value


IsoDate = Annotated[
    date | None,
    BeforeValidator(_iso_date),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "maxLength": 0}, {"type": "null"}]}
    ),
]
# a form field or query parameter cannot be null: absent, blank or a date
FormDate = Annotated[
    date | None,
    BeforeValidator(_iso_date),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "maxLength": 0}]}),
]
Count = Annotated[int, BeforeValidator(_not_bool)]


class FilterParams(BaseModel):
    """Candidate filters, applied in SQL before the vector search."""

    modality: list[str] = Field(default_factory=list, max_length=32, examples=[["CR", "DX"]])
    body_part: list[str] = Field(default_factory=list, max_length=32, examples=[["CHEST"]])
    date_from: IsoDate = Field(default=None, examples=["2020-01-01"])
    date_to: IsoDate = None
    label: str | None = Field(default=None, max_length=200)
    exclude_same_patient: bool = Field(default=False, strict=True, description="Drop the query patient's images.")
    exclude_same_study: bool = Field(default=False, strict=True)


class TextSearchRequest(FilterParams):
    """Search by text, e.g. 'right lower lobe consolidation'."""

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, examples=["right lower lobe consolidation"])
    k: Count = Field(default=10, ge=1, le=MAX_K)
    offset: Count = Field(default=0, ge=0, le=10_000)
    group_by: Literal["image", "study", "series"] = "image"


class HitModel(BaseModel):
    """One similar image."""

    rank: int
    id: int
    score: float = Field(description="Cosine similarity to the query.")
    text_score: float | None = Field(default=None, description="Calibrated text-image probability (text queries).")
    modality: str | None
    body_part: str | None
    study_date: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    frame: int
    label: str | None
    report: str | None
    source: str
    thumbnail_url: str
    preview_url: str
    viewer_url: str | None = None
    retrieve_url: str | None = Field(default=None, description="DICOMweb WADO-RS URL (MEDSEARCH_DICOMWEB_URL).")


class SearchResponse(BaseModel):
    """Hits, best first."""

    query: str = Field(description="image, text, image+text or id")
    k: int
    offset: int
    hits: list[HitModel]
    model: str | None
    standin_model: bool = Field(description="True when the offline stand-in model is in use (meaningless scores).")


class ImageModel(BaseModel):
    """Metadata of one indexed image (never patient identifiers)."""

    id: int
    kind: str
    sop_instance_uid: str | None
    sop_class_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    frame: int
    number_of_frames: int
    modality: str | None
    body_part: str | None
    view_position: str | None
    study_date: str | None
    sex: str | None
    age: str | None
    manufacturer: str | None
    rows: int | None
    columns: int | None
    photometric: str | None
    transfer_syntax: str | None
    window: str | None
    label: str | None
    report: str | None
    source: str
    indexed_at: str
    viewer_url: str | None = None
    retrieve_url: str | None = Field(default=None, description="DICOMweb WADO-RS URL (MEDSEARCH_DICOMWEB_URL).")


class ErrorModel(BaseModel):
    """Every error response."""

    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["no indexed image with id 7"])

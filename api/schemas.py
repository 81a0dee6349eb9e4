"""Request and response models of the REST API (documented in OpenAPI)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from retrieval.search import MAX_K, MAX_TEXT_CHARS


class FilterParams(BaseModel):
    """Candidate filters, applied in SQL before the vector search."""

    modality: list[str] = Field(default_factory=list, max_length=32, examples=[["CR", "DX"]])
    body_part: list[str] = Field(default_factory=list, max_length=32, examples=[["CHEST"]])
    date_from: date | None = Field(default=None, examples=["2020-01-01"])
    date_to: date | None = None
    label: str | None = Field(default=None, max_length=200)
    exclude_same_patient: bool = Field(default=False, description="Drop the query patient's images.")
    exclude_same_study: bool = False


class TextSearchRequest(FilterParams):
    """Search by text, e.g. 'right lower lobe consolidation'."""

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, examples=["right lower lobe consolidation"])
    k: int = Field(default=10, ge=1, le=MAX_K)
    offset: int = Field(default=0, ge=0, le=10_000)
    group_by: Literal["image", "study", "series"] = "image"
    show_duplicates: bool = Field(default=False, description="Also list near-duplicate copies of a hit.")


class HitModel(BaseModel):
    """One similar image."""

    rank: int
    id: int
    score: float = Field(description="Cosine similarity to the query.")
    text_score: float | None = Field(
        default=None, description="Calibrated text-image probability of the query text (text and image+text queries)."
    )
    duplicates: int = Field(
        default=0, description="Near-duplicate copies folded into this hit (0 with show_duplicates)."
    )
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
    empty_reason: str | None = Field(
        default=None, description="Why there are no hits: nothing indexed yet, or which filters match no image."
    )


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

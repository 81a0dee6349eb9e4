"""Request and response models of the REST API (documented in OpenAPI)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from api.report_schemas import ContextModel, SnippetModel
from retrieval.feedback import ALPHA, BETA, GAMMA, MAX_MARKS, MAX_WEIGHT
from retrieval.query import MAX_K, MAX_TEXT_CHARS
from retrieval.vocabulary import GroupBy, Level, Rerank, SearchFilters, filter_fields


def _not_bool(value: Any) -> Any:
    """JSON `true`/`false` are not numbers (pydantic would read them as 1 and 0); 3.0 still is 3."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, not a boolean")
    return value


Count = Annotated[int, BeforeValidator(_not_bool)]
Weight = Annotated[float, BeforeValidator(_not_bool)]
_FLAGS = tuple(f["name"] for f in filter_fields() if f["kind"] == "flag")
_DATES = tuple(f["name"] for f in filter_fields() if f["kind"] == "date")
_NUMBERS = tuple(f["name"] for f in filter_fields() if f["kind"] == "number")


LEVEL_HELP = "What a hit is: an image, a series (its slices' mean vector) or a study (its series' mean vector)."
RERANK_HELP = (
    "maxsim: re-rank the series/study level's top 50 by late interaction (mean over the query's slices of the best "
    "cosine with the case's slices); no effect at the image level."
)


class FilterParams(SearchFilters):
    """Candidate filters as form fields or query parameters (fields from retrieval/vocabulary.py)."""


ROI_PATTERN = (
    r"^$|^[0-9]{1,6},[0-9]{1,6},[0-9]{1,6},[0-9]{1,6}$"  # the schema says the form; the route checks the bounds
)
ROI_HELP = "Region of interest x,y,w,h in the source image's pixels (origin top left); at least 8x8"


class SimilarQuery(FilterParams):
    """The query parameters of a search by an indexed image id (`GET /v1/images/{id}/similar`), read in one pass
    (api/query_model.py); field for field what the route declared as separate parameters before."""

    k: int = Field(default=10, ge=1, le=MAX_K)
    offset: int = Field(default=0, ge=0, le=10_000)
    group_by: GroupBy = "image"
    show_duplicates: bool = False
    level: Level = Field(default="image", description=LEVEL_HELP)
    rerank: Rerank = Field(default="none", description=RERANK_HELP)
    roi: str = Field(default="", max_length=64, pattern=ROI_PATTERN, description=ROI_HELP)
    frame: int = Field(
        default=0, ge=0, le=100_000, description="With roi, multi-frame: this 1-based frame (0: the indexed one)"
    )


class CaseQuery(FilterParams):
    """The query parameters of a search by an indexed series or study (`GET /v1/series/{uid}/similar`, ...)."""

    level: Level | None = Field(default=None, description=LEVEL_HELP + " Default: the query's own level.")
    rerank: Rerank = Field(default="none", description=RERANK_HELP)
    k: int = Field(default=10, ge=1, le=MAX_K)
    offset: int = Field(default=0, ge=0, le=10_000)


def _dates_may_be_null(schema: dict[str, Any]) -> None:
    for name in (*_DATES, *_NUMBERS):
        prop = schema["properties"][name]
        prop["anyOf"] = [*prop.get("anyOf", []), {"type": "null"}]


class StrictBody(BaseModel):
    """A JSON request body: a field the model does not define is a 422 naming it, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class JsonFilters(FilterParams, json_schema_extra=_dates_may_be_null):
    """Candidate filters in a JSON body: flags must be JSON booleans, numbers JSON numbers; a date or number may be
    null; an unknown field (`date_form`) is a 422."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _flags_are_booleans(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in _FLAGS:
                if name in data and not isinstance(data[name], bool):
                    raise ValueError(f"{name}: expected true or false")
            for name in _NUMBERS:  # a number, null or "" (blank, as in a form); not a number written as a string
                value = data.get(name)
                if isinstance(value, str) and value.strip():
                    raise ValueError(f"{name}: expected a number, not a string")
        return data


class TextSearchRequest(JsonFilters):
    """Search by text, e.g. 'right lower lobe consolidation'."""

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, examples=["right lower lobe consolidation"])
    mode: Literal["vector", "hybrid"] = Field(
        default="vector",
        description="hybrid: rank by the embedding and by the text's words in the studies' reports, fused by "
        "reciprocal rank fusion, at any level (a series or study ranks by its study's report); hits carry "
        "embedding_rank and report_rank.",
    )
    k: Count = Field(default=10, ge=1, le=MAX_K)
    offset: Count = Field(default=0, ge=0, le=10_000)
    group_by: GroupBy = "image"
    show_duplicates: bool = Field(default=False, strict=True, description="Also list near-duplicate copies of a hit.")
    level: Level = Field(default="image", description=LEVEL_HELP)
    rerank: Rerank = Field(default="none", description=RERANK_HELP)


def _feedback_schema(schema: dict[str, Any]) -> None:
    """Dates may be null, and the schema says what the route checks: a liked id or a base, not two bases."""
    _dates_may_be_null(schema)
    text, image = {"text": {"type": "string"}}, {"image_id": {"type": "integer"}}
    schema["anyOf"] = [
        {"required": ["like"], "properties": {"like": {"type": "array", "minItems": 1}}},
        {"required": ["text"], "properties": text},
        {"required": ["image_id"], "properties": image},
    ]
    schema["not"] = {"required": ["text", "image_id"], "properties": {**text, **image}}


class FeedbackSearchRequest(JsonFilters, json_schema_extra=_feedback_schema):
    """Refine a search with relevance feedback: q' = normalise(alpha*q + beta*mean(like) - gamma*mean(unlike)).

    The base query q is a text, an indexed image id, or absent (then liked images are needed). Liked, unliked and
    base images are never returned."""

    like: list[Count] = Field(default_factory=list, max_length=MAX_MARKS, description="Ids of images to move towards.")
    unlike: list[Count] = Field(
        default_factory=list, max_length=MAX_MARKS, description="Ids of images to move away from."
    )
    text: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS, description="Base query: a text.")
    image_id: Count | None = Field(default=None, description="Base query: an indexed image's stored vector.")
    alpha: Weight = Field(default=ALPHA, gt=0.0, le=MAX_WEIGHT, description="Weight of the base query.")
    beta: Weight = Field(default=BETA, gt=0.0, le=MAX_WEIGHT, description="Weight of the liked images' mean.")
    gamma: Weight = Field(default=GAMMA, ge=0.0, le=MAX_WEIGHT, description="Weight of the unliked images' mean.")
    k: Count = Field(default=10, ge=1, le=MAX_K)
    offset: Count = Field(default=0, ge=0, le=10_000)
    group_by: GroupBy = "image"
    show_duplicates: bool = Field(default=False, strict=True, description="Also list near-duplicate copies of a hit.")
    level: Level = Field(default="image", description=LEVEL_HELP)
    rerank: Rerank = Field(default="none", description=RERANK_HELP)


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
    report: str | None = Field(
        description="A labels-file report, else the latest stored (de-identified) report of its study."
    )
    source: str
    tags: dict[str, float] = Field(default_factory=dict, description="Zero-shot tags the image has, with their score.")
    probes: dict[str, float] = Field(
        default_factory=dict, description="The image's probability under each applied probe."
    )
    embedding_rank: int | None = Field(
        default=None, description="mode=hybrid: rank by the embedding (None: not in it)."
    )
    report_rank: int | None = Field(
        default=None, description="mode=hybrid: rank of the study's report match (None: its report does not match)."
    )
    report_versions: int = Field(default=0, description="Stored reports of its study (amendments included).")
    snippet: SnippetModel | None = Field(
        default=None, description="Its report around the report query's words, marked (None: no report)."
    )
    thumbnail_url: str
    preview_url: str
    viewer_url: str | None = None
    retrieve_url: str | None = Field(default=None, description="DICOMweb WADO-RS URL (MEDSEARCH_DICOMWEB_URL).")
    level: Level = Field(
        default="image",
        description="image, series or study. A series or study hit's image fields (id, sop_instance_uid, source, "
        "thumbnail_url...) are those of its key slice.",
    )
    key_image_id: int | None = Field(
        default=None, description="Series/study hits: the indexed slice most similar to the query (same as id)."
    )
    sampled_image_ids: list[int] = Field(
        default_factory=list,
        description="Series/study hits: the indexed slices in slice order (a study: series after series).",
    )
    slices_sampled: int | None = Field(default=None, description="Series/study hits: indexed slices.")
    slices_total: int | None = Field(default=None, description="Series/study hits: slices of the case.")
    series_count: int | None = Field(default=None, description="Series/study hits: series of the case (1: a series).")
    series_description: str | None = Field(default=None, description="Series hits: the series' description.")
    study_description: str | None = Field(default=None, description="Series/study hits: the study's description.")


class SearchResponse(BaseModel):
    """Hits, best first."""

    query: str = Field(
        description="image, text, image+text, id, feedback, series, study, case (an upload), or text+report "
        "(mode=hybrid)"
    )
    level: Level = Field(default="image", description="What the hits are: images, series or studies.")
    k: int
    offset: int
    total: int = Field(
        description="Indexed images (series, studies at those levels) the filters admit (before exclusions and "
        "grouping)."
    )
    hits: list[HitModel]
    model: str | None
    standin_model: bool = Field(description="True when the offline stand-in model is in use (meaningless scores).")
    empty_reason: str | None = Field(
        default=None, description="Why there are no hits: nothing indexed yet, or which filters match no image."
    )
    roi: list[int] | None = Field(default=None, description="The query's region x,y,w,h, when it was one.")
    context: ContextModel | None = Field(
        default=None, description="Reference-case context of these hits (labels, tags, probes, report findings)."
    )


class ExportSent(BaseModel):
    """One route that stored the SR."""

    route: str = Field(description="cstore or stow")
    target: str = Field(description="AET@host:port or the STOW-RS base URL")


class ExportResponse(BaseModel):
    """The SR stored in the PACS: its UIDs (in the query's study), how many matches it lists, where it went."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    matches: int
    include_uids: bool = Field(description="False: the SR lists rank, score, level and id, no UIDs of matches.")
    sent: list[ExportSent]


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
    transfer_syntax_title: str | None = Field(
        default=None, description="The transfer syntax in words, e.g. 'JPEG 2000 Image Compression'."
    )
    window: str | None
    label: str | None
    report: str | None = Field(
        description="A labels-file report, else the latest stored (de-identified) report of its study."
    )
    source: str
    indexed_at: str
    viewer_url: str | None = None
    retrieve_url: str | None = Field(default=None, description="DICOMweb WADO-RS URL (MEDSEARCH_DICOMWEB_URL).")


class ErrorInfo(BaseModel):
    """The HTTP status an error code comes with, and a short human title."""

    status: int
    title: str


class FilterInfo(BaseModel):
    """One filter field: its request name, the kind of value it takes and a label to show."""

    name: str
    kind: str = Field(examples=["list"])
    label: str


class VocabularyResponse(BaseModel):
    """The API's words, for clients that should not copy them: error codes, filters, grouping, stats fields."""

    errors: dict[str, ErrorInfo]
    filters: list[FilterInfo]
    group_by: list[str]
    stats: list[str]


class ErrorModel(BaseModel):
    """Every error response."""

    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["no indexed image with id 7"])

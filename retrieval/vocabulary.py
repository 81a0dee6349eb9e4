"""The query vocabulary, defined once: filter fields, result grouping, the stats report and the error codes."""

from __future__ import annotations

import importlib
import re
from datetime import date
from typing import TYPE_CHECKING, Annotated, Literal, get_args

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema
from pydantic.config import JsonDict
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12 (the stats route returns it)

from retrieval import cpu
from retrieval.errors import MedsearchError, error_types
from retrieval.store.stats import CatalogStats

if TYPE_CHECKING:  # the CLI reads this module for its option help: keep the store and models unimported
    from retrieval.collection import Collection
    from retrieval.store.repo import Filters

FilterKind = Literal["list", "date", "text", "flag", "number"]
GroupBy = Literal["image", "study", "series"]
GROUP_BY: tuple[GroupBy, ...] = get_args(GroupBy)
Level = Literal["image", "series", "study"]  # what a hit is (retrieval/query_levels.py)
LEVELS: tuple[Level, ...] = get_args(Level)
Rerank = Literal["none", "maxsim"]  # late-interaction re-ranking of series/study hits
# modules that define error classes (their codes register on import); tests/test_vocabulary.py checks the list
ERROR_MODULES = (
    "retrieval.errors",
    "retrieval.findings.errors",
    "retrieval.export.errors",
    "retrieval.sources.dicomweb",
    "retrieval.index.milvus_index",
    "retrieval.store.db",
    "retrieval.summarize.base",
)


def _one_or_many(value: object) -> object:
    """A single string where a list is expected means a list of one (`"modality": "CT"`)."""
    return [value] if isinstance(value, str) else value


TextList = Annotated[
    list[str],
    BeforeValidator(_one_or_many),
    WithJsonSchema({"anyOf": [{"type": "array", "items": {"type": "string"}, "maxItems": 32}, {"type": "string"}]}),
]


def _iso_date(value: object) -> object:
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


# a form field or query parameter cannot be null: absent, blank or a date (a JSON body may also say null)
IsoDate = Annotated[
    date | None,
    BeforeValidator(_iso_date),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "maxLength": 0}]}),
]


def _probability(value: object) -> object:
    """A probability: a number (not a JSON boolean); a blank form field or query parameter means none."""
    if isinstance(value, bool):
        raise ValueError("expected a number between 0 and 1, not a boolean")
    if isinstance(value, str) and not value.strip():
        return None
    return value


Probability = Annotated[
    float | None,
    BeforeValidator(_probability),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"type": "string", "maxLength": 0}]}),
]


def _kind(kind: FilterKind) -> JsonDict:
    return {"kind": kind}


class SearchFilters(BaseModel):
    """Candidate filters, applied in SQL before the vector search (the CLI, the API and the page use these)."""

    modality: TextList = Field(
        default_factory=list,
        max_length=32,
        title="Modality",
        description="Only these modalities (one or a list).",
        examples=[["CR", "DX"]],
        json_schema_extra=_kind("list"),
    )
    body_part: TextList = Field(
        default_factory=list,
        max_length=32,
        title="Body part",
        description="Only these body parts (one or a list).",
        examples=[["CHEST"]],
        json_schema_extra=_kind("list"),
    )
    date_from: IsoDate = Field(
        default=None,
        title="Study date from",
        description="Study date on or after (YYYY-MM-DD).",
        examples=["2020-01-01"],
        json_schema_extra=_kind("date"),
    )
    date_to: IsoDate = Field(
        default=None,
        title="Study date to",
        description="Study date on or before (YYYY-MM-DD).",
        json_schema_extra=_kind("date"),
    )
    label: str | None = Field(
        default=None,
        max_length=200,
        title="Label",
        description="Only images with this label.",
        json_schema_extra=_kind("text"),
    )
    report: str | None = Field(
        default=None,
        max_length=500,
        title="Report words",
        description='Only studies whose latest report has these words: terms, "phrases", prefix*, AND, OR, '
        '(parentheses); negated findings ("no pneumothorax") do not match.',
        examples=['"pleural effusion" OR consolidat*'],
        json_schema_extra=_kind("text"),
    )
    tag: TextList = Field(
        default_factory=list,
        max_length=32,
        title="Tag",
        description="Only images that have these zero-shot tags (score at or above the tag's threshold).",
        examples=[["effusion"]],
        json_schema_extra=_kind("list"),
    )
    probe: str | None = Field(
        default=None,
        max_length=64,
        title="Probe",
        description="Only images that this applied probe finds likely (probability at or above min_prob).",
        json_schema_extra=_kind("text"),
    )
    min_prob: Probability = Field(
        default=None,
        ge=0.0,
        le=1.0,
        title="Probe min. probability",
        description="The probe's probability an image needs (0 to 1; default 0.5).",
        examples=[0.5],
        json_schema_extra=_kind("number"),
    )
    exclude_same_patient: bool = Field(
        default=False,
        title="Exclude same patient",
        description="Drop the query patient's images.",
        json_schema_extra=_kind("flag"),
    )
    exclude_same_study: bool = Field(
        default=False,
        title="Exclude same study",
        description="Drop the query study's images.",
        json_schema_extra=_kind("flag"),
    )

    def store_filters(self) -> Filters:
        """The SQL candidate restrictions (the exclusions are resolved against the query by the search)."""
        from retrieval.store.repo import Filters

        return Filters(
            modality=list(self.modality),
            body_part=list(self.body_part),
            date_from=self.date_from,
            date_to=self.date_to,
            label=self.label,
            report=self.report.strip() if self.report and self.report.strip() else None,
            tags=list(self.tag),
            probe=self.probe or None,
            min_prob=self.min_prob,
        )


class FilterField(TypedDict):
    """One filter as the page and other clients see it."""

    name: str
    kind: FilterKind
    label: str


def filter_fields() -> list[FilterField]:
    """The filters in order, derived from `SearchFilters`."""
    fields: list[FilterField] = []
    for name, info in SearchFilters.model_fields.items():
        extra = info.json_schema_extra
        kind = extra["kind"] if isinstance(extra, dict) else None
        if kind not in get_args(FilterKind):
            raise TypeError(f"filter {name} has no kind")
        fields.append({"name": name, "kind": kind, "label": info.title or name})  # type: ignore[typeddict-item]
    return fields


def filter_help(name: str) -> str:
    """The help text of one filter (the CLI's option help)."""
    return SearchFilters.model_fields[name].description or name


class StatsReport(CatalogStats):
    """What `medsearch stats` and `GET /v1/stats` report (the same fields in both)."""

    index_vectors: int
    case_index_vectors: dict[str, int]  # vectors in the series and study indexes
    index: dict[str, object] | None
    model: str | None
    model_fingerprint: str | None
    standin_model: bool
    encoder: str  # back end and precision that encode queries and new images here, e.g. "openvino-bf16"
    encoder_runs: str  # what computes them, read back from the loaded model (or "not loaded yet")
    encoder_warning: str | None  # a requested precision this CPU or collection cannot keep, and what runs instead
    cpu_features: list[str]  # the CPU flags that choice depends on (AVX-512 BF16/VNNI, AMX)


STATS_FIELDS: tuple[str, ...] = tuple(StatsReport.__annotations__)


def stats_report(collection: Collection) -> StatsReport:
    """The stats report of an opened collection."""
    counts = collection.catalog.stats()
    index = collection.index
    fingerprint = collection.catalog.fingerprint()
    return StatsReport(
        **counts,
        index_vectors=index.ntotal if index is not None else 0,
        case_index_vectors=case_index_sizes(collection),
        index=index.describe() if index is not None else None,
        model=fingerprint.model_id if fingerprint else None,
        model_fingerprint=fingerprint.key if fingerprint else None,
        standin_model=bool(fingerprint and fingerprint.standin),
        **encoder_facts(collection),
        cpu_features=sorted(cpu.cpu_features()),
    )


def case_index_sizes(collection: Collection) -> dict[str, int]:
    """Vectors in the series and study indexes (none before a model is recorded)."""
    indexes = collection.case_indexes
    if indexes is None:
        return {"series": 0, "study": 0}
    return {level: case.index.ntotal for level, case in indexes.levels.items()}


class EncoderFacts(TypedDict):
    """The encoder fields of the stats and /readyz."""

    encoder: str
    encoder_runs: str
    encoder_warning: str | None


NOT_LOADED = "not loaded yet (read back from the model once it loads)"


def encoder_facts(collection: Collection) -> EncoderFacts:
    """The loaded encoder's back end and precision, what it runs (read back from the model) and the warning about
    a requested precision it does not run; before loading, what the settings pick on this CPU."""
    from retrieval.encoders.factory import choose_encoder

    encoder = collection.loaded_encoder
    if encoder is not None:  # what it runs, read back; the warning it was built (or loaded) with
        runs = getattr(encoder, "runs", None)
        warning = getattr(encoder, "warning", None)
        return EncoderFacts(encoder=encoder.encoded_by, encoder_runs=str(runs or "unknown"), encoder_warning=warning)
    try:
        choice = choose_encoder(collection.settings)
    except MedsearchError as exc:
        return EncoderFacts(encoder=f"refused: {exc}", encoder_runs=NOT_LOADED, encoder_warning=None)
    name = f"{choice.backend}-{choice.precision}"
    return EncoderFacts(encoder=name, encoder_runs=NOT_LOADED, encoder_warning=choice.warning)


def running_encoder(collection: Collection) -> str:
    """The loaded encoder's back end and precision, else what the settings pick on this CPU (without loading)."""
    return encoder_facts(collection)["encoder"]


def library_errors() -> dict[str, type[MedsearchError]]:
    """Every error code the library can raise, with its class (status and title)."""
    for module in ERROR_MODULES:
        importlib.import_module(module)
    return error_types()

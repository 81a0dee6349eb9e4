"""Response models of reports in search answers: a hit's snippet, the context block, a study's reports."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SnippetModel(BaseModel):
    """Part of a hit's report, the query's words in it as character ranges (plain text: escape it to show it)."""

    text: str = Field(description="The stored (de-identified) report text around the first marked word.")
    highlights: list[list[int]] = Field(
        default_factory=list,
        description="[start, end) character offsets in `text` of the report query's words (report filter, hybrid "
        "text); negated mentions are not marked. Empty for other queries: `text` is then the report's start.",
    )
    cut_start: bool = Field(default=False, description="The report goes on before `text`.")
    cut_end: bool = Field(default=False, description="The report goes on after `text`.")


class ContextItemModel(BaseModel):
    """A label, tag, positive probe or report finding among the hits."""

    name: str
    count: int = Field(description="Hits that have it.")
    of: int = Field(description="Hits in the answer.")
    share: float = Field(description="Score-weighted share: the weight of the hits with it / the weight of all.")
    summary: str = Field(examples=["6 of 10 similar images: consolidation"])


class ContextModel(BaseModel):
    """Reference-case context: what the answer's hits were labelled, tagged, scored by probes and reported."""

    hits: int
    with_report: int = Field(description="Hits whose study has a stored report.")
    labels: list[ContextItemModel] = Field(default_factory=list)
    tags: list[ContextItemModel] = Field(default_factory=list)
    probes: list[ContextItemModel] = Field(
        default_factory=list, description="Probes with a probability of 0.5 or more (a positive outcome)."
    )
    findings: list[ContextItemModel] = Field(
        default_factory=list,
        description="Findings of a radiology lexicon the hits' latest reports state (negated mentions excluded).",
    )
    notice: str = Field(description="Not for diagnosis.")
    weighting: str = Field(description="How shares are weighted.")


class StudyReportModel(BaseModel):
    """One stored (de-identified) report of a study."""

    id: int
    latest: bool = Field(description="The version words match and hits show.")
    origin: str = Field(description="sr (a DICOM Structured Report) or import (`medsearch reports import`).")
    written_at: str | None = Field(description="The report's own date (SR content date, the import's date).")
    text: str
    negated: list[str] = Field(default_factory=list, description="The negated phrases (not matched by words).")
    truncated: bool = Field(description="Cut at MEDSEARCH_REPORT_MAX_CHARS.")


class StudyReportsResponse(BaseModel):
    """Every report of a study, the latest first."""

    study_instance_uid: str
    versions: int
    reports: list[StudyReportModel]

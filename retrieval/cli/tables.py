"""The table of search hits: readable at 80 columns (short file names and UIDs), everything with --wide."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from rich import box
from rich.table import Table

UID_KEEP = 8
WIDE_WIDTH = 1000  # --wide tables take the width their values need; the terminal wraps the lines


def short_uid(uid: str | None, keep: int = UID_KEEP) -> str:
    """The distinguishing end of a DICOM UID ('…' + its last `keep` characters)."""
    if not uid:
        return ""
    return uid if len(uid) <= keep + 1 else "…" + uid[-keep:]


def file_name(source: str) -> str:
    """The last part of a source: a file name, an archive member's name or the end of a WADO-RS URL."""
    tail = source.rstrip("/").split("!/")[-1]
    return PurePosixPath(tail).name or source


def findings_text(tags: dict[str, float], probes: dict[str, float]) -> str:
    """A hit's tags by name, then each probe with its probability: 'effusion, chest-xray p=0.91'."""
    return ", ".join([*sorted(tags), *(f"{name} p={p:.2f}" for name, p in sorted(probes.items()))])


def _description(row: dict[str, Any]) -> str:
    """A case hit's series and study descriptions, as the page's card shows them."""
    return " · ".join(str(row[key]) for key in ("series_description", "study_description") if row.get(key))


def _rank(rank: int | None) -> str:
    """A hybrid hit's rank in one of the fused lists, '-' when it is not in that list."""
    return "-" if rank is None else str(rank)


def hits_table(title: str, hits: list[Any], wide: bool = False) -> Table:
    """One row per hit; `wide` adds body part, series/SOP UIDs and frame, and prints UIDs and sources whole
    (print it with `WIDE_WIDTH` so that it is not squeezed into the terminal)."""
    table = Table(
        title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )  # no side rules: room for the data
    texts = any(h.text_score is not None for h in hits)
    copies = any(h.duplicates for h in hits)
    findings = any(h.tags or h.probes for h in hits)  # zero-shot tags and probe probabilities (retrieval/findings)
    columns: list[tuple[str, bool]] = [("#", True), ("id", True), ("score", True)]  # (name, never shortened)
    columns += [("p", True)] if texts else []
    fused = any(h.embedding_rank is not None or h.report_rank is not None for h in hits)  # hybrid: both ranks
    columns += [("ranks e/r", True)] if fused else []
    cases = any(h.case for h in hits)  # series/study hits: the id is the key slice's; slices indexed / of the case
    columns += [("slices", True)] if cases else []
    columns += [("mod", True)] + ([("body part", False)] if wide else []) + [("date", True), ("label", False)]
    columns += [("copies", True)] if copies else []
    columns += [("tags", False)] if findings else []
    columns += [("study UID", True)]
    columns += [("series UID", True), ("SOP UID", True), ("frame", True)] if wide else []
    columns += [("description", False)] if wide and cases else []  # a case's series · study description
    columns += [("source", wide)]
    for name, fixed in columns:  # wide: every value whole on one line (printed at its natural width)
        table.add_column(name, no_wrap=fixed or wide, overflow="fold" if wide else "ellipsis")
    for hit in hits:
        row = hit.as_dict()
        image = hit.image
        cells = [str(hit.rank), str(image.id), f"{hit.score:.4f}"]
        cells += [f"{hit.text_score:.3f}" if hit.text_score is not None else ""] if texts else []
        cells += [f"{_rank(hit.embedding_rank)}/{_rank(hit.report_rank)}"] if fused else []
        cells += [f"{row['slices_sampled']}/{row['slices_total']}" if hit.case else ""] if cases else []
        cells += [str(row["modality"] or "")] + ([str(row["body_part"] or "")] if wide else [])
        cells += [str(row["study_date"] or ""), str(row["label"] or "")]
        cells += [f"+{hit.duplicates}" if hit.duplicates else ""] if copies else []
        cells += [findings_text(hit.tags, hit.probes)] if findings else []
        uid = (lambda value: str(value or "")) if wide else short_uid
        cells += [uid(image.study_instance_uid)]
        if wide:
            cells += [uid(image.series_instance_uid), uid(image.sop_instance_uid), str(image.frame)]
            cells += [_description(row)] if cases else []
        cells += [image.source_uri if wide else file_name(image.source_uri)]
        table.add_row(*cells)
    return table

"""The store's counts (the first part of the stats report), as a type both the store and the vocabulary use."""

from __future__ import annotations

from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12 (the stats route returns it)


class CatalogStats(TypedDict):
    """Counts from the metadata store (the first part of the stats report)."""

    images: int
    vectors: int
    series: int  # distinct SeriesInstanceUIDs of the indexed images
    studies: int
    sources: int
    failures: int
    by_modality: dict[str, int]
    failures_by_code: dict[str, int]
    by_encoder: dict[str, int]  # images per back end + precision that wrote them ("unrecorded" before 0.2)
    not_images: int  # non-image DICOM objects skipped (RT plans, ECGs, DICOMDIRs...)
    not_images_by_class: dict[str, int]  # the same by SOP class name
    reports: int  # de-identified reports stored (structured reports and imported rows; amendments each count)
    report_studies: int  # studies with at least one report
    reports_waiting: int  # studies whose report arrived before any of their images
    slices_skipped_by_sampling: int  # volume slices (instances or frames) not among the K sampled per series
    encoder_calls_saved: int  # those, plus slices left out of volumes (localizers...): one encoder call each

"""Errors of the SR export: not configured, not a DICOM query, study unknown to the PACS, PACS refused or down."""

from __future__ import annotations

from retrieval.errors import MedsearchError


class ExportOffError(MedsearchError):
    """No export destination is configured."""

    code = "export_off"
    status = 503
    title = "SR export not configured"


class ExportNeedsDicomError(MedsearchError):
    """The query has no DICOM study to put the SR in (a PNG/JPEG, a text, a feedback-only query)."""

    code = "export_needs_dicom"
    status = 400
    title = "SR export needs a DICOM query"


class StudyNotInPacsError(MedsearchError):
    """The PACS does not hold the query's study, so an SR there would start a study of its own."""

    code = "study_not_in_pacs"
    status = 409
    title = "Study unknown to the PACS"


class ExportFailedError(MedsearchError):
    """The PACS refused the SR, could not be reached, or did not answer in time."""

    code = "export_failed"
    status = 502
    title = "SR export failed"

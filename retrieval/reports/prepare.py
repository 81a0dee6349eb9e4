"""One report from text to what the store keeps: cap, de-identify (header values, then the tool), split negations."""

from __future__ import annotations

import logging
from datetime import datetime

from retrieval.imaging.sr_text import Identifiers
from retrieval.reports.deid import scrub
from retrieval.reports.negation import split_negated
from retrieval.store.reports import NewReport

log = logging.getLogger(__name__)


def prepare_report(
    text: str,
    study: str,
    *,
    origin: str,
    reference: str | None,
    written_at: datetime | None,
    known: Identifiers | None,
    max_chars: int,
) -> NewReport:
    """The storable report: the original `text` goes no further than this function (nor into any log)."""
    chars = len(text)
    truncated = chars > max_chars
    if truncated:
        text = text[:max_chars]
        log.warning("a report was %d characters long: stored cut at %d", chars, max_chars)
    text = text.replace("\x00", "")
    scrubbed = scrub(text, known)
    negation = split_negated(scrubbed.text)
    return NewReport(
        study_instance_uid=study,
        origin=origin,
        reference=reference,
        written_at=written_at,
        text=scrubbed.text,
        affirmed=negation.affirmed,
        negated=negation.negated,
        chars=chars,
        truncated=truncated,
        redactions=scrubbed.replaced,
        headers_known=known is not None and bool(known.names or known.ids or known.places or known.dates),
    )

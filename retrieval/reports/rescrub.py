"""Reports that arrived before their study's images are scrubbed again once those images' headers are known."""

from __future__ import annotations

from collections.abc import Mapping

from retrieval.collection import Collection
from retrieval.imaging.sr_text import Identifiers
from retrieval.reports.deid import scrub_known
from retrieval.reports.negation import split_negated


def rescrub_waiting_reports(collection: Collection, identifiers: Mapping[str, Identifiers]) -> int:
    """Scrub the header values of these studies' new images from their reports not yet scrubbed of them."""
    if not identifiers:
        return 0
    store = collection.catalog.reports
    waiting = store.waiting_for_headers(list(identifiers))
    for report_id, study, text in waiting:
        scrubbed, replaced = scrub_known(text, identifiers[study])
        negation = split_negated(scrubbed)
        store.replace_text(report_id, scrubbed, negation.affirmed, negation.negated, replaced)
    return len(waiting)

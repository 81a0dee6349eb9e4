"""Where tags and probes meet indexing and search: score images as they are written, check and annotate searches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from retrieval.collection import Collection
from retrieval.findings.common import findings_store, write_scores
from retrieval.findings.errors import UnknownTagError
from retrieval.findings.probes import get_probe, usable_probes
from retrieval.findings.scoring import Scorer
from retrieval.findings.tags import usable_tags
from retrieval.store.findings import ImageFindings
from retrieval.store.repo import Filters, IdArray


def score_new_images(collection: Collection, ids: IdArray, vectors: npt.NDArray[np.float32]) -> None:
    """Score freshly written images against the stored tags and the applied probes (nothing to do without any)."""
    if len(ids) == 0:
        return
    tags = usable_tags(collection)
    probes = usable_probes(collection)
    if not tags and not probes:
        return
    scorer = Scorer.build(tags, probes, collection.load_encoder().text_scores if tags else None)
    tag_scores, probe_scores = scorer.score(vectors)
    write_scores(findings_store(collection), scorer, ids, tag_scores, probe_scores)


def check_filters(collection: Collection, filters: Filters) -> None:
    """A tag filter must name a stored tag (else 404 unknown_tag), a probe filter an applied probe of this model
    (404 unknown_probe, 409 probe_not_applied or other_model), rather than silently matching nothing."""
    if filters.tags:
        known = {t.name for t in findings_store(collection).tags(filters.tags)}
        unknown = [t for t in filters.tags if t not in known]
        if unknown:
            raise UnknownTagError(f"no tag named {', '.join(unknown)}: `medsearch tags list` shows the tags")
    if filters.probe:
        get_probe(collection, filters.probe, applied=True)


def findings_of(collection: Collection, ids: Sequence[int]) -> dict[int, ImageFindings]:
    """The tags and probe probabilities of these images (what each hit carries)."""
    return findings_store(collection).of_images(ids) if ids else {}

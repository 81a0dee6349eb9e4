"""Turning ids and an upload into a SummaryRequest: records from the catalog, pictures rendered from sources."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image as PILImage

from retrieval.collection import Collection
from retrieval.duplicates import distinct_from_query
from retrieval.errors import BadQueryError, NotFoundError
from retrieval.render import cached_png, picture_from_bytes
from retrieval.store.models import Image
from retrieval.summarize.base import SummaryCase, SummaryRequest

MAX_MATCH_IDS = 50
MAX_QUERY_TEXT = 2000


def _case(image: Image, picture: PILImage.Image, score: float | None) -> SummaryCase:
    return SummaryCase(
        picture=picture,
        image_id=image.id,
        score=score,
        modality=image.modality,
        body_part=image.body_part,
        study_date=image.study_date.isoformat() if image.study_date else None,
        label=image.label,
        report=image.report,
    )


def _picture(image: Image, collection: Collection) -> PILImage.Image:
    """The image's cached 1024 px preview (rendered from its source with the indexing windowing)."""
    with PILImage.open(io.BytesIO(cached_png(image, "preview", collection.settings))) as png:
        return png.convert("RGB")


def _not_copies(collection: Collection, ids: list[int], query_id: int | None, score_of: dict[int, float]) -> list[int]:
    """Drop matches that are near-duplicates of the query (by vector, or by their search score) or of an
    earlier match: a copy of the query image is not a similar case."""
    vectors = collection.catalog.vectors(ids + ([query_id] if query_id is not None else []))
    query_vector = vectors.get(query_id) if query_id is not None else None
    threshold = collection.settings.duplicate_threshold
    kept = distinct_from_query(ids, vectors, threshold, query_vector=query_vector, scores=score_of)
    if not kept:
        raise BadQueryError(
            "every match is a copy of the query image (cosine >= MEDSEARCH_DUPLICATE_THRESHOLD): "
            "there is no other case to compare it with"
        )
    return kept


def build_request(
    collection: Collection,
    match_ids: Sequence[int],
    *,
    limit: int,
    query_id: int | None = None,
    query_bytes: bytes | None = None,
    query_text: str | None = None,
    scores: Sequence[float] | None = None,
) -> SummaryRequest:
    """The query and the first `limit` matches (in the given order), rendered and described.

    Scores come from the caller (the search that found the matches) or, for an indexed query image, from the
    stored vectors; an uploaded query without scores is compared without them (no model is needed here).
    """
    if query_id is not None and query_bytes is not None:
        raise BadQueryError("give either a query image id or an uploaded query image, not both")
    text = (query_text or "").strip() or None
    if query_id is None and query_bytes is None and text is None:
        raise BadQueryError("give a query: an indexed image id (query_id), an uploaded file, or query_text")
    if text is not None and len(text) > MAX_QUERY_TEXT:
        raise BadQueryError(f"query_text is longer than {MAX_QUERY_TEXT} characters")
    ids = list(dict.fromkeys(int(i) for i in match_ids))
    if not ids:
        raise BadQueryError("match_ids is empty: give the ids of the search hits to compare")
    if len(ids) > MAX_MATCH_IDS:
        raise BadQueryError(f"at most {MAX_MATCH_IDS} match_ids")
    if scores is not None and len(scores) != len(match_ids):
        raise BadQueryError("scores must have one value per match id")
    score_of = dict(zip((int(i) for i in match_ids), scores, strict=True)) if scores is not None else {}
    if query_id is not None and query_id in ids:
        ids.remove(query_id)
        if not ids:
            raise BadQueryError("match_ids holds only the query image itself")
    wanted = ids + ([query_id] if query_id is not None else [])
    rows = collection.catalog.images(wanted)
    missing = [i for i in wanted if i not in rows]
    if missing:
        raise NotFoundError(f"no indexed image with id {', '.join(map(str, missing))}")
    digest = hashlib.sha256(query_bytes).hexdigest() if query_bytes is not None else None
    if digest is not None:  # an uploaded file that is itself indexed is not its own prior case
        ids = [i for i in ids if rows[i].content_hash != digest] or ids
    ids = _not_copies(collection, ids, query_id, score_of)
    ids = ids[:limit]

    query: SummaryCase | None = None
    if query_id is not None:
        query = _case(rows[query_id], _picture(rows[query_id], collection), None)
        key = f"id:{query_id}"
        query_vector = collection.catalog.vector(query_id)
        if scores is None and query_vector is not None:
            for i in ids:
                vector = collection.catalog.vector(i)
                if vector is not None:
                    score_of[i] = float(np.dot(query_vector, vector))
    elif query_bytes is not None:
        query = SummaryCase(picture=picture_from_bytes(query_bytes, collection.settings))
        key = f"sha256:{digest}"
    else:
        key = "text"
    if text is not None:
        key += ":text:" + hashlib.sha256(text.encode()).hexdigest()
    matches = [_case(rows[i], _picture(rows[i], collection), score_of.get(i)) for i in ids]
    return SummaryRequest(matches=matches, query_key=key, query=query, query_text=text)

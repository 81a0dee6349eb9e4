"""Similar-case search: by image bytes, text, image+text or an indexed image id; filters and grouping."""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from retrieval import duplicates
from retrieval.collection import Collection
from retrieval.duplicates import fold_margin
from retrieval.embed_cache import CachedEmbedding, content_key
from retrieval.encoders.base import Encoder
from retrieval.errors import BadQueryError, NotFoundError
from retrieval.findings.hook import check_filters, findings_of
from retrieval.imaging.decode import content_hash
from retrieval.imaging.roi import Region
from retrieval.imaging.types import DecodeLimits
from retrieval.index.base import Found
from retrieval.prepare import PreparedImage, prepare_bytes
from retrieval.privacy import hash_patient_id
from retrieval.reports.snippets import Snippet, make_snippet
from retrieval.store.models import Image, is_image_id
from retrieval.store.repo import Filters
from retrieval.store.report_search import Either, Node, parse
from retrieval.store.reports import StoredReport

GroupBy = Literal["image", "study", "series"]
MAX_K = 1000
MAX_TEXT_CHARS = 2000
# A text query visits this many times the IVF lists (HNSW beam) an image query does: its cosines to images are small
# and close together, so its neighbours spread over more lists (clip-retrieval#76). 1M ivf-sq8, 800 synthetic text
# queries: recall@10 0.9955 / 0.9940 at nprobe 15 (worst query 0.6) -> 0.9995 / 1.0 at 23 (worst 0.9), for +0.85 ms
# of FAISS CPU (+1.0 ms a library search), small beside the text encoder's own time (BENCHMARKS.md issue 22, "Round 6").
TEXT_PROBE = 1.5


@dataclass
class CaseInfo:
    """What a series or study hit adds to its key image's row (retrieval/query_levels.py)."""

    level: Literal["series", "study"]
    key_image_id: int  # the indexed slice most similar to the query (the hit's image row)
    sampled_image_ids: list[int]  # its indexed slices, in slice order (a study: series after series)
    slices_total: int  # indexed slices + those series planning did not sample
    series_count: int  # 1 for a series
    series_description: str | None = None
    study_description: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "level": self.level,
            "key_image_id": self.key_image_id,
            "sampled_image_ids": list(self.sampled_image_ids),
            "slices_sampled": len(self.sampled_image_ids),
            "slices_total": self.slices_total,
            "series_count": self.series_count,
            "series_description": self.series_description,
            "study_description": self.study_description,
        }


_HIT_COLUMNS = frozenset(
    [
        "id",
        "modality",
        "body_part",
        "study_date",
        "study_instance_uid",
        "series_instance_uid",
        "sop_instance_uid",
        "frame",
        "label",
        "report",
        "source_uri",
    ]
)


def _hit_columns(image: Image) -> dict[str, Any]:
    """The row's columns a hit shows: a search's rows hold every column in `__dict__`, read there directly (the
    ORM's attribute descriptors cost ~0.3 us a read, 14 reads a hit); an image the ORM loaded only partly is read
    through its descriptors."""
    values: dict[str, Any] = image.__dict__
    return values if values.keys() >= _HIT_COLUMNS else {name: getattr(image, name) for name in _HIT_COLUMNS}


@dataclass
class Hit:
    """One result: the image row, its cosine similarity, rank and (for text queries) calibrated score."""

    rank: int
    image: Image
    score: float
    text_score: float | None = None
    duplicates: int = 0  # near-duplicate copies folded into this hit (retrieval.duplicates)
    tags: dict[str, float] = field(default_factory=dict)  # zero-shot tags it has, with their scores
    probes: dict[str, float] = field(default_factory=dict)  # its probability under each applied probe
    stored_report: StoredReport | None = None  # the latest stored (de-identified) report of its study, if any
    snippet: Snippet | None = None  # of that report (else of a labels-file report): the query's words marked
    embedding_rank: int | None = None  # hybrid search: its rank by the embedding (None: not in that list)
    report_rank: int | None = None  # hybrid search: its study's rank by the report match (None: no match)
    case: CaseInfo | None = None  # a series or study hit: the case; `image` is its key slice

    @property
    def image_id(self) -> int:
        return self.image.id

    def as_dict(self) -> dict[str, object]:
        """JSON-ready view (no patient identifiers: the hash stays internal)."""
        img = _hit_columns(self.image)
        return {
            "rank": self.rank,
            "id": img["id"],
            "score": round(self.score, 6),
            "text_score": None if self.text_score is None else round(self.text_score, 6),
            "duplicates": self.duplicates,
            "modality": img["modality"],
            "body_part": img["body_part"],
            "study_date": img["study_date"].isoformat() if img["study_date"] else None,
            "study_instance_uid": img["study_instance_uid"],
            "series_instance_uid": img["series_instance_uid"],
            "sop_instance_uid": img["sop_instance_uid"],
            "frame": img["frame"],
            "label": img["label"],
            # a labels-file report, else the study's stored one
            "report": img["report"] or (self.stored_report.text if self.stored_report else None),
            "report_versions": self.stored_report.versions if self.stored_report else 0,
            "snippet": self.snippet.as_dict() if self.snippet else None,
            "source": img["source_uri"],
            "tags": {name: round(score, 6) for name, score in self.tags.items()},
            # unrounded: the number a client may pass back as min_prob is the one the filter compares (>= is exact)
            "probes": dict(self.probes),
            "embedding_rank": self.embedding_rank,
            "report_rank": self.report_rank,
            **(self.case.as_dict() if self.case else {"level": "image"}),
        }


@dataclass
class QueryVector:
    """An embedded query plus what it knows about itself (for exclusions)."""

    vector: npt.NDArray[np.float32]
    kind: Literal["image", "text", "image+text", "id", "feedback", "series", "study", "case"]
    patient_hash: str | None = None
    study_uid: str | None = None
    image_id: int | None = None
    text_vector: npt.NDArray[np.float32] | None = None  # the text part of an image+text query
    exclude_ids: frozenset[int] = field(default_factory=frozenset)  # never returned (relevance feedback's marks)
    # a case query's slice vectors (rows), for the maxsim re-ranking (retrieval/query_levels.py); None: the vector
    slices: npt.NDArray[np.float32] | None = None
    region: Region | None = None  # an ROI query's x,y,w,h in the source image's pixels
    # a search by id: reads (patient hash, study UID) from the store when `identity` is first asked (exclusions)
    identify: Callable[[], tuple[str | None, str | None]] | None = field(default=None, repr=False, compare=False)

    def identity(self) -> tuple[str | None, str | None]:
        """(patient hash, Study Instance UID) of the query, what the same-patient and same-study exclusions compare.
        A search by id reads them from the store only here: most searches exclude neither, and the statement was
        ~20 us of a ~0.7 ms search (BENCHMARKS.md issue 22, "Round 5")."""
        if self.identify is not None:
            self.patient_hash, self.study_uid = self.identify()
            self.identify = None
        return self.patient_hash, self.study_uid


def rows_and_vectors(
    collection: Collection, ids: Sequence[int]
) -> tuple[dict[int, Image], dict[int, npt.NDArray[np.float32]]]:
    """Image rows (plain SQL) and their float vectors from the index of this moment (no vector blob is read from
    the database on a query); ids removed meanwhile are absent from either."""
    if not ids:
        return {}, {}
    rows = collection.catalog.hit_rows(ids)
    with collection.leased_index() as index:
        vectors = index.vectors(np.asarray(ids, np.int64)) if index is not None else {}
    return rows, vectors


def _unit(vec: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norm = float(np.linalg.norm(vec))
    return (vec / norm).astype(np.float32) if norm > 0 else vec.astype(np.float32)


def embed_image(
    collection: Collection, data: bytes, *, roi: Region | None = None, frame: int | None = None
) -> QueryVector:
    """Embed an uploaded file exactly as the indexer would (middle frame for multi-frame, or `frame`); with `roi`,
    only that region (x,y,w,h in source pixels) of the frame, cropped after windowing, then padded and resized.

    The model runs only when needed: the same bytes embedded before come from the LRU, and pixels that are
    already indexed (the same encoder input, see `Catalog.vector_for_input`) reuse the stored vector."""
    encoder = collection.load_encoder()
    settings = collection.settings
    fingerprint = encoder.fingerprint
    where = f"{frame or 'middle'}:{roi}"
    key = content_key("image", fingerprint.key, settings.ct_window, settings.ct_channels, content_hash(data), where)
    cached = collection.embed_cache.get(key, "image")
    if cached is None:
        prepared = prepare_bytes(
            data,
            encoder.image_processor,
            frames=frame or "middle",
            limits=DecodeLimits.of(settings),
            ct_window=settings.ct_window,
            ct_channels=settings.ct_channels,
            roi=roi,
        )
        # a region is never an indexed input (the content-hash fallback would find the whole image)
        vector = None if roi is not None else _indexed_vector(collection, prepared, fingerprint.key)
        if vector is None:
            vector = collection.run_model(lambda: encoder.encode_pixel_values(prepared.pixel_values)[0])
        patient = hash_patient_id(prepared.meta.patient_id, collection.salt)
        cached = CachedEmbedding(vector, patient, prepared.meta.study_instance_uid)
        collection.embed_cache.put(key, cached)
    return QueryVector(
        vector=cached.vector.copy(),
        kind="image",
        patient_hash=cached.patient_hash,
        study_uid=cached.study_uid,
        region=roi,
    )


def embed_region(collection: Collection, image_id: int, roi: Region, frame: int | None = None) -> QueryVector:
    """A region of an indexed image as the query: its source re-read, its indexed frame (or `frame`, another
    1-based frame of the same multi-frame file: the one a viewer shows) decoded and cropped."""
    from retrieval.sources.read import read_source

    image = collection.catalog.image(image_id)
    data = read_source(image.source_uri, collection.settings)
    if frame is None and image.number_of_frames > 1:
        frame = image.frame
    query = embed_image(collection, data, roi=roi, frame=frame)
    query.kind, query.image_id = "id", image_id
    return query


def _indexed_vector(
    collection: Collection, prepared: PreparedImage, fingerprint_key: str
) -> npt.NDArray[np.float32] | None:
    """The stored vector of an indexed image with exactly this encoder input, made by this model, if any."""
    stored = collection.catalog.fingerprint()
    if not collection.settings.reuse_indexed_vectors or stored is None or stored.key != fingerprint_key:
        return None
    meta = prepared.meta
    vector = collection.catalog.vector_for_input(
        prepared.pixel_hashes[0], meta.content_hash, prepared.frames[0], meta.window
    )
    collection.embed_cache.count("indexed", "image", hit=vector is not None)
    return vector


def _text_key(encoder: Encoder, text: str) -> str:
    """The LRU key of a (stripped) text query under this model."""
    return content_key("text", encoder.fingerprint.key, text)


def embed_text(collection: Collection, text: str) -> QueryVector:
    """Embed a text query (64-token SigLIP text tower); a text embedded before comes from the LRU."""
    text = text.strip()
    if not text:
        raise BadQueryError("the text query is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise BadQueryError(f"the text query is longer than {MAX_TEXT_CHARS} characters")
    encoder = collection.load_encoder()
    key = _text_key(encoder, text)
    cached = collection.embed_cache.get(key, "text")
    if cached is None:
        cached = CachedEmbedding(collection.run_model(lambda: encoder.encode_texts([text])[0]))
        collection.embed_cache.put(key, cached)
    return QueryVector(vector=cached.vector.copy(), kind="text")


def cached_text(collection: Collection, text: str) -> QueryVector | None:
    """A text query embedded before, from the LRU, when the model is loaded; None otherwise (nothing is loaded,
    and a miss is not counted: `embed_text` counts it)."""
    encoder, text = collection.loaded_encoder, text.strip()
    if encoder is None or not text or len(text) > MAX_TEXT_CHARS:
        return None
    cached = collection.embed_cache.get(_text_key(encoder, text), "text", count_miss=False)
    return None if cached is None else QueryVector(vector=cached.vector.copy(), kind="text")


def embed_id(collection: Collection, image_id: int) -> QueryVector:
    """Use an indexed image's vector as the query (no model needed): its vector from the index's float vectors
    (the stored vector itself, with its row's patient and study, read from the database only when the index does
    not hold it); an id neither holds is not found. The patient and study of an id the index holds are read when
    an exclusion asks for them (`QueryVector.identity`)."""
    if not is_image_id(image_id):
        raise NotFoundError(f"no indexed image with id {image_id}")
    with collection.leased_index() as index:
        vector = index.vectors(np.asarray([image_id], np.int64)).get(image_id) if index is not None else None
    if vector is not None:
        return QueryVector(
            np.array(vector, np.float32), "id", image_id=image_id, identify=lambda: _identity(collection, image_id)
        )
    row = collection.catalog.query_row(image_id)
    if row is None:
        raise NotFoundError(f"no indexed image with id {image_id}")
    stored, patient, study = row
    return QueryVector(np.array(stored, np.float32), "id", patient_hash=patient, study_uid=study, image_id=image_id)


def _identity(collection: Collection, image_id: int) -> tuple[str | None, str | None]:
    """(patient hash, Study Instance UID) of an indexed image; (None, None) when its row was removed meanwhile
    (nothing left to exclude by)."""
    return collection.catalog.query_meta(image_id) or (None, None)


def combine(image: QueryVector, text: QueryVector, text_weight: float) -> QueryVector:
    """Image+text query: the normalised weighted sum of both unit vectors."""
    if not 0.0 <= text_weight <= 1.0:
        raise BadQueryError("text_weight must be between 0 and 1")
    vector = _unit((1.0 - text_weight) * image.vector + text_weight * text.vector)
    return QueryVector(
        vector=vector,
        kind="image+text",
        patient_hash=image.patient_hash,
        study_uid=image.study_uid,
        text_vector=text.vector,
    )


def search(
    collection: Collection,
    query: QueryVector,
    *,
    k: int = 10,
    filters: Filters | None = None,
    exclude_same_patient: bool = False,
    exclude_same_study: bool = False,
    group_by: GroupBy = "image",
    show_duplicates: bool = False,
    with_reports: bool = True,
) -> list[Hit]:
    """Top-k hits for an embedded query; filters restrict candidates in SQL before the vector search.

    Near-duplicates (cosine >= MEDSEARCH_DUPLICATE_THRESHOLD between two hits) are folded into the best of
    them, which counts them in `duplicates`, unless `show_duplicates`.
    """
    hits, _ = search_page(
        collection,
        query,
        k=k,
        filters=filters,
        exclude_same_patient=exclude_same_patient,
        exclude_same_study=exclude_same_study,
        group_by=group_by,
        show_duplicates=show_duplicates,
        with_reports=with_reports,
    )
    return hits


def search_page(
    collection: Collection,
    query: QueryVector,
    *,
    k: int = 10,
    filters: Filters | None = None,
    exclude_same_patient: bool = False,
    exclude_same_study: bool = False,
    group_by: GroupBy = "image",
    show_duplicates: bool = False,
    with_reports: bool = True,
) -> tuple[list[Hit], int]:
    """`search`, plus how many images the filters admit (the index size when nothing is filtered), from the
    same candidate lookup (so a results page never runs the filter query twice). Without `with_reports` the hits'
    study reports and snippets are not read (a caller that keeps only some of them reads those itself)."""
    if not 1 <= k <= MAX_K:
        raise BadQueryError(f"k must be between 1 and {MAX_K}")
    filters = filters or Filters()
    exclude(filters, query, exclude_same_patient, exclude_same_study)
    check_filters(collection, filters)
    with collection.leased_index() as index:  # one index for every pass, even if a newer one is swapped in
        if index is None or index.ntotal == 0:
            return [], 0
        candidates = collection.catalog.candidate_ids(filters)
        available = index.ntotal if candidates is None else len(candidates)
        # A pivot never returns its own image (nor feedback its marked ones): fetch that many more and drop them,
        # rather than excluding them in SQL (which would turn every pivot into a filtered search over all other ids).
        skip = query.exclude_ids | ({query.image_id} if query.image_id is not None else set())
        shown = (k if group_by == "image" else k * 4) + len(skip)
        needed = not show_duplicates or query.text_vector is not None  # for folding, or the text part's score
        # folding may drop some: ask for a margin more in the same search (re-ranked from the proposals for `shown`)
        fetch = shown if show_duplicates else shown + fold_margin(k)
        exact_top: int | None = shown
        while True:
            found = index.search_vectors(
                query.vector,
                min(fetch, available),
                candidates,
                with_vectors=needed,
                exact_top=exact_top,
                probe=probe_of(query),
            )
            page = _rank(collection, found, group_by, k, skip, fold=not show_duplicates)
            if page.kept >= k or fetch >= available:
                break
            fetch *= 4  # more copies than the margin: the rare second search (every place re-ranked alike)
            exact_top = None
    hits = page.hits  # ranked 1.. by `_page`
    _add_text_scores(collection, query, hits, found, page.positions)
    if page.any_findings:  # read with the hits' rows: a collection without tags or probes costs no statement
        found_tags = findings_of(collection, [h.image.id for h in hits])
        for hit in hits:
            hit.tags, hit.probes = found_tags[hit.image.id].tags, found_tags[hit.image.id].probes
    if with_reports:
        add_reports(collection, hits, report_query(filters.report), any_stored=page.any_reports)
    return hits, available


def probe_of(query: QueryVector) -> float:
    """How many times the index's own lists (beam) this query visits: TEXT_PROBE for a text query, else 1."""
    return TEXT_PROBE if query.kind == "text" else 1.0


def exclude(filters: Filters, query: QueryVector, same_patient: bool, same_study: bool) -> None:
    """Add the query's own patient and/or study to the filters' exclusions (its identity read only when asked)."""
    if not (same_patient or same_study):
        return
    patient, study = query.identity()
    if same_patient and patient:
        filters.exclude_patient_hash = patient
    if same_study and study:
        filters.exclude_study_uid = study


def report_query(report_filter: str | None, also: Node | None = None) -> Node | None:
    """The words a search's snippets mark: its report filter's terms (already checked by the filter) and `also`
    (a hybrid search's text words)."""
    nodes = [parse(report_filter)] if report_filter and report_filter.strip() else []
    nodes += [also] if also is not None else []
    return None if not nodes else nodes[0] if len(nodes) == 1 else Either(tuple(nodes))


def add_reports(collection: Collection, hits: Sequence[Hit], words: Node | None, any_stored: bool = True) -> None:
    """Each hit's study report (one read for all hits; none when the caller knows none is stored: not
    `any_stored`) and its snippet: around the marked `words` when given, else the report's first lines."""
    latest = collection.catalog.reports.latest([h.image.study_instance_uid or "" for h in hits]) if any_stored else {}
    for hit in hits:
        stored = hit.stored_report = latest.get(hit.image.study_instance_uid or "")
        if stored is not None:
            hit.snippet = make_snippet(stored.text, stored.negated, words)
        elif hit.image.report:  # a labels-file report: no negation known, nothing matched it
            hit.snippet = make_snippet(hit.image.report)


def _add_text_scores(
    collection: Collection, query: QueryVector, hits: list[Hit], found: Found, positions: list[int]
) -> None:
    """Calibrated text-image probability of each hit: of its score for a text query, of the text part's cosine
    with the hit's vector (the search's, at the hit's position in `found`) for an image+text query."""
    if not hits or (query.kind != "text" and query.text_vector is None):
        return
    have = found.have
    vectors = {h.image.id: found.vectors[p] for h, p in zip(hits, positions, strict=True) if have[p]}
    text_vector = query.text_vector
    if text_vector is not None:  # a hit whose vector was removed meanwhile keeps text_score None
        hits = [h for h in hits if h.image.id in vectors]
    cosines = [h.score if text_vector is None else float(np.dot(vectors[h.image.id], text_vector)) for h in hits]
    calibrated = collection.load_encoder().text_scores(np.asarray(cosines, np.float32))
    for hit, value in zip(hits, calibrated, strict=True):
        hit.text_score = float(value)


@dataclass
class _Page:
    """A search's hits (at most k, grouped and folded), where each sits in the search's result, how many hits
    folding kept in all (fewer than k: search again, deeper), and whether the collection holds any findings and
    stored reports."""

    hits: list[Hit]
    positions: list[int]
    kept: int
    any_findings: bool
    any_reports: bool


def _rank(collection: Collection, found: Found, group_by: GroupBy, k: int, skip: Container[int], fold: bool) -> _Page:
    """One pass over the search's hits: near-duplicates folded on the vectors the search handed over, then the
    rows of only the k kept (one statement). Grouping, or a hit removed from the store since the search (its row
    gone), takes the rows of every hit first, as grouping needs them."""
    threshold = collection.settings.duplicate_threshold
    at = np.asarray([n for n, i in enumerate(found.ids.tolist()) if i not in skip], np.intp)
    if group_by == "image":
        kept, copies = _fold(found, at, fold, threshold)
        first = at[kept[:k]]
        rows, any_findings, any_reports = collection.catalog.search_rows(found.ids[first].tolist())
        if len(rows) == len(first):
            return _page(found, first, copies, rows, len(kept), any_findings, any_reports)
    rows, any_findings, any_reports = collection.catalog.search_rows(found.ids[at].tolist())
    present: list[int] = []
    seen: set[str] = set()
    for n in at.tolist():
        image = rows.get(int(found.ids[n]))
        if image is None:  # removed between search and lookup
            continue
        if group_by != "image":
            group = image.study_instance_uid if group_by == "study" else image.series_instance_uid
            group_key = group or f"image:{image.id}"
            if group_key in seen:
                continue
            seen.add(group_key)
        present.append(n)
    at = np.asarray(present, np.intp)
    kept, copies = _fold(found, at, fold, threshold)
    return _page(found, at[kept[:k]], copies, rows, len(kept), any_findings, any_reports)


def _fold(found: Found, at: npt.NDArray[np.intp], fold: bool, threshold: float) -> tuple[list[int], list[int]]:
    """Folding over the hits at these positions: (which of them are kept, copies folded into each kept one)."""
    if not fold:
        return list(range(len(at))), [0] * len(at)
    if len(at) and int(at[-1]) - int(at[0]) == len(at) - 1:  # a run of places (all but the pivot's): no copy
        return duplicates.fold(found.vectors[at[0] : at[-1] + 1], found.have[at[0] : at[-1] + 1], threshold)
    return duplicates.fold(found.vectors[at], found.have[at], threshold)


def _page(
    found: Found,
    positions: npt.NDArray[np.intp],
    copies: list[int],
    rows: dict[int, Image],
    kept: int,
    any_findings: bool,
    any_reports: bool,
) -> _Page:
    hits = [
        Hit(rank=n + 1, image=rows[image_id], score=score, duplicates=count)
        for n, (image_id, score, count) in enumerate(
            zip(found.ids[positions].tolist(), found.scores[positions].tolist(), copies, strict=False)
        )
    ]
    return _Page(hits, positions.tolist(), kept, any_findings, any_reports)

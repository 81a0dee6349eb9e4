"""The search routes' path through the service: the answer validated in one pass is byte for byte what a model per
hit gave; quick searches are answered on the event loop, the rest in a worker thread that also makes the JSON."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

import api.routes.search as route
from api.app import create_app
from api.config import ServiceSettings
from api.report_schemas import ContextModel
from api.schemas import HitModel, SearchResponse
from api.views import viewer_url
from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from retrieval.context import reference_context
from retrieval.index.faiss_index import FaissIndex
from retrieval.query import CaseInfo, Hit
from retrieval.reports.snippets import Snippet
from retrieval.sources.dicomweb import retrieve_url
from retrieval.store.models import Image
from retrieval.store.repo import Filters
from retrieval.store.reports import StoredReport
from tests.conftest import SAMPLES, make_settings

TEMPLATE = "https://viewer.example/{study_instance_uid}/{series_instance_uid}/{sop_instance_uid}?frame={frame}"
DICOMWEB = "https://pacs.example/dicom-web"


def _image(image_id: int, **fields: Any) -> Image:
    base: dict[str, Any] = {
        "id": image_id,
        "kind": "dicom",
        "sop_instance_uid": f"1.2.3.{image_id}",
        "study_instance_uid": "1.2.3",
        "series_instance_uid": f"1.2.3.9{image_id % 2}",
        "frame": 1,
        "modality": "CT",
        "body_part": "CHEST",
        "study_date": date(2020, 1, 2),
        "source_uri": f"/data/{image_id}.dcm",
        "label": None,
        "report": None,
    }
    return Image(**{**base, **fields})


def _hits() -> list[Hit]:
    """Hits with every optional part: text score, tags, probes, a stored report and its snippet, a case, a raster
    image without UIDs or date, scores that round."""
    report = StoredReport(
        1, "1.2.3", "sr", datetime(2020, 1, 3, tzinfo=UTC), "Right lower lobe consolidation.", False, 2
    )
    return [
        Hit(
            1,
            _image(11, label="pneumonia"),
            0.912345678,
            text_score=0.0123456789,
            duplicates=2,
            tags={"effusion": 0.31234567},
            probes={"nodule": 0.5000000001},
            stored_report=report,
            snippet=Snippet("Right lower lobe consolidation.", [(15, 28)], False, True),
        ),
        Hit(2, _image(12, report="labels-file report"), 0.5, embedding_rank=3, report_rank=None),
        Hit(
            3,
            _image(13),
            0.25,
            case=CaseInfo("series", 13, [13, 14, 15], 40, 1, series_description="AXIAL", study_description=None),
        ),
        Hit(4, _image(20, kind="raster", sop_instance_uid=None, study_instance_uid=None, study_date=None), -0.125),
    ]


def _per_hit_models(state: Any, kind: str, hits: list[Hit], region: list[int] | None) -> bytes:
    """The answer as main built it: a `HitModel` per hit, a `ContextModel`, then the `SearchResponse`."""
    models = [
        HitModel(
            **h.as_dict(),  # type: ignore[arg-type]
            thumbnail_url=f"/v1/images/{h.image.id}/thumbnail",
            preview_url=f"/v1/images/{h.image.id}/preview",
            viewer_url=viewer_url(TEMPLATE, h.image),
            retrieve_url=retrieve_url(
                DICOMWEB, h.image.study_instance_uid, h.image.series_instance_uid, h.image.sop_instance_uid
            ),
        )
        for h in hits
    ]
    fingerprint = state.collection.catalog.fingerprint()
    result = SearchResponse(
        query=kind,
        level="image",
        k=10,
        offset=0,
        total=100,
        hits=models,
        model=fingerprint.model_id,
        standin_model=fingerprint.standin,
        empty_reason=None,
        roi=region,
        context=ContextModel.model_validate(reference_context(hits).as_dict()),
    )
    return result.model_dump_json(by_alias=True).encode()


@pytest.mark.parametrize("region", [None, [1, 2, 30, 40]])
def test_the_answer_in_one_pass_is_byte_identical_to_a_model_per_hit(region: list[int] | None) -> None:
    fingerprint = SimpleNamespace(model_id="google/medsiglip-448", standin=False)
    state: Any = SimpleNamespace(
        collection=SimpleNamespace(catalog=SimpleNamespace(fingerprint=lambda: fingerprint)),
        settings=SimpleNamespace(viewer_url_template=TEMPLATE, dicomweb_url=DICOMWEB),
    )
    hits = _hits()
    answer = route.Answer.of(route._response(state, "text", "image", 10, 0, 100, hits, Filters(), region))
    assert answer.body == _per_hit_models(state, "text", hits, region)
    assert (answer.kind, answer.hits) == ("text", 4)
    assert b'"snippet":{"text":"Right lower lobe consolidation.","highlights":[[15,28]]' in answer.body


@pytest.mark.slow  # indexes the samples
def test_quick_searches_run_on_the_loop_and_the_rest_in_a_worker_that_encodes_them(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search by id or a text embedded before, unfiltered at image level over an idle FAISS index, runs on the
    event loop (no hop); a filter, a first text, or an index change under way sends it to a worker thread, which
    also encodes the answer's JSON."""
    data = tmp_path / "data"
    collection = Collection(make_settings(data, tiny_model))
    try:
        run_index(collection, [SAMPLES], IndexOptions(workers=0))
    finally:
        collection.close()
    seen: list[dict[str, int]] = []  # per request: the thread of the search, of its JSON, of the route after it
    real_run, real_dump, real_audit = route._run, SearchResponse.model_dump_json, route._audit

    def run(*args: Any, **kwargs: Any) -> SearchResponse:
        seen.append({"search": threading.get_ident()})
        return real_run(*args, **kwargs)

    def dump(self: SearchResponse, **kwargs: Any) -> str:
        seen[-1]["json"] = threading.get_ident()
        return real_dump(self, **kwargs)

    def audit(*args: Any) -> None:  # the route's own code after the search: on the event loop
        seen[-1]["loop"] = threading.get_ident()
        real_audit(*args)

    monkeypatch.setattr(route, "_run", run)
    monkeypatch.setattr(route, "_audit", audit)
    monkeypatch.setattr(SearchResponse, "model_dump_json", dump)
    changing = {"now": False}
    monkeypatch.setattr(FaissIndex, "searchable_now", lambda self: not changing["now"])
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("on loop", "GET /v1/images/1/similar", {"k": 3}),
        ("in worker", "GET /v1/images/1/similar", {"k": 3, "modality": "CT"}),
        ("in worker", "GET /v1/images/1/similar", {"k": 3, "exclude_same_study": "true"}),
        ("in worker", "GET /v1/images/1/similar", {"k": 60, "offset": 41}),
        ("in worker", "POST /v1/search/text", {"text": "chest", "k": 3}),  # first time: the model embeds it
        ("on loop", "POST /v1/search/text", {"text": "chest", "k": 3}),
        ("in worker", "POST /v1/search/text", {"text": "chest", "k": 3, "level": "study"}),
        ("index changing", "GET /v1/images/1/similar", {"k": 3}),
        ("index changing", "POST /v1/search/text", {"text": "chest", "k": 3}),
    ]
    with TestClient(create_app(ServiceSettings(data_dir=data, model=str(tiny_model)))) as client:
        for expected, route_name, params in requests:
            changing["now"] = expected == "index changing"
            method, path = route_name.split()
            answer = client.get(path, params=params) if method == "GET" else client.post(path, json=params)
            assert answer.status_code == 200, (route_name, params, answer.text)
            where = seen[-1]
            assert where["json"] == where["search"], (route_name, params, where)  # encoded where it was searched
            on_loop = where["search"] == where["loop"]
            assert on_loop == (expected == "on loop"), (expected, route_name, params, where)
    assert len(seen) == len(requests)

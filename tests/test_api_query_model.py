"""The search routes' query parameters read in one pass (api/query_model.py) behave as FastAPI's own solving of the
same model did: same values, same 422 bodies, unknown parameters refused, the same OpenAPI declaration; and a
search request is no longer solved as a tree of dependencies and one FastAPI parameter per field."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Query
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api import strict
from api.app import create_app
from api.config import ServiceSettings
from api.errors import install_error_handlers
from api.query_model import openapi_extra, query_dependency
from api.routes import search
from api.schemas import CaseQuery, SimilarQuery

QUERIES: list[list[tuple[str, str]]] = [
    [],
    [("k", "3"), ("offset", "2")],
    [("modality", "CT"), ("modality", "MR"), ("body_part", "CHEST")],
    [("modality", "CT")],
    [("k", "1"), ("k", "5")],  # repeated single value: the last one wins, as FastAPI takes it
    [("date_from", "2020-01-01"), ("date_to", "")],
    [("exclude_same_patient", "true"), ("show_duplicates", "1"), ("level", "study"), ("rerank", "maxsim")],
    [("roi", "1,2,30,40"), ("frame", "2")],
    [("probe", "p"), ("min_prob", "0.7")],
    [("k", "x")],
    [("k", "0")],
    [("k", "1001"), ("offset", "-1")],
    [("roi", "1,2,3")],
    [("date_from", "2020-13-45")],
    [("date_from", "20200101")],
    [("level", "patient")],
    [("show_duplicates", "maybe")],
    [("min_prob", "2")],
    [("modality", "x" * 10)] * 33,
    [("date_form", "2020-01-01")],  # a misspelt filter: refused by name
    [("k", "x"), ("verbose", "1")],
]


def _apps(model: type[SimilarQuery] | type[CaseQuery]) -> tuple[FastAPI, FastAPI]:
    """The same route twice: the model solved by FastAPI (`Query()`), and read in one pass."""
    apps = []
    for fast in (False, True):
        app = FastAPI(dependencies=[Depends(strict.reject_unknown_parameters)])
        install_error_handlers(app)

        async def endpoint(item: int, params: Any) -> dict[str, Any]:
            return {"item": item, **params.model_dump(mode="json")}

        declared = Annotated[model, Depends(query_dependency(model))] if fast else Annotated[model, Query()]
        endpoint.__annotations__ = {"item": int, "params": declared, "return": dict[str, Any]}  # real types
        app.get("/items/{item}", openapi_extra=openapi_extra(model) if fast else None)(endpoint)
        apps.append(app)
    return apps[0], apps[1]


@pytest.mark.parametrize("model", [SimilarQuery, CaseQuery])
def test_one_pass_reads_what_fastapi_read(model: type[SimilarQuery] | type[CaseQuery]) -> None:
    solved, one_pass = _apps(model)
    with TestClient(solved) as before, TestClient(one_pass) as after:
        refused = 0
        for params in QUERIES:
            expected, got = before.get("/items/7", params=params), after.get("/items/7", params=params)
            assert (got.status_code, got.json()) == (expected.status_code, expected.json()), params
            refused += expected.status_code == 422
        assert refused >= 10  # the ill-typed and out-of-range values above are refused, with the same message
        assert after.get("/items/7", params={"date_form": "x"}).json()["message"].startswith("query.date_form:")
    assert one_pass.openapi()["paths"] == solved.openapi()["paths"]


def _solved_per_request(dependant: Dependant) -> int:
    """How many dependants FastAPI solves for one request (it recurses into every sub-dependency each time)."""
    return 1 + sum(_solved_per_request(d) for d in dependant.dependencies)


def test_search_routes_solve_no_query_parameter_and_a_flat_dependency_list(tmp_path: Path, tiny_model: Path) -> None:
    app = create_app(ServiceSettings(data_dir=tmp_path / "data", model=str(tiny_model)))
    spec = app.openapi()
    routes = {r.path: r for r in search.router.routes if isinstance(r, APIRoute)}
    for path, model in [
        ("/v1/images/{image_id}/similar", SimilarQuery),
        ("/v1/series/{uid}/similar", CaseQuery),
        ("/v1/studies/{uid}/similar", CaseQuery),
    ]:
        route = routes[path]
        stack, query_params = [route.dependant], []
        while stack:
            dependant = stack.pop()
            query_params += dependant.query_params
            stack += dependant.dependencies
        assert query_params == [], path  # FastAPI solves none of them field by field
        declared = [p["name"] for p in spec["paths"][path]["get"]["parameters"] if p["in"] == "query"]
        assert declared == list(model.model_fields), path  # the document still declares every one
        assert strict.declared(route).query == frozenset(declared), path  # and the unknown-parameter check knows them
        # key, freshness, id and query each solved once: the route, the app's unknown-parameter check, 3-4 of ours
        assert _solved_per_request(route.dependant) <= 1 + 1 + 3 + 1, path

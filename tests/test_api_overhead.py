"""What the service adds per request stays small: no Starlette `BaseHTTPMiddleware` in the stack (metrics are a
plain ASGI middleware that still counts every status, a crash included), and a route's declared parameters are
walked once, not on every request."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.middleware.base import BaseHTTPMiddleware

from api import strict
from api.app import create_app
from api.config import ServiceSettings
from api.metrics import Metrics


def test_no_middleware_of_the_service_is_a_base_http_middleware(tmp_path: Path, tiny_model: Path) -> None:
    app = create_app(ServiceSettings(data_dir=tmp_path / "data", model=str(tiny_model), cors_origins=["http://x"]))
    classes = [m.cls for m in app.user_middleware]
    assert len(classes) >= 4  # metrics, body limit, key gate, CORS
    assert not [c for c in classes if isinstance(c, type) and issubclass(c, BaseHTTPMiddleware)], classes


def _tiny_app() -> tuple[FastAPI, Metrics]:
    app = FastAPI(dependencies=[Depends(strict.reject_unknown_parameters)])
    metrics = Metrics()
    metrics.install(app)

    @app.get("/items/{item_id}")
    async def item(item_id: int, verbose: bool = False) -> dict[str, int]:
        if item_id == 13:
            raise RuntimeError("unlucky")
        return {"id": item_id}

    return app, metrics


def _counts(metrics: Metrics) -> dict[tuple[str, str], float]:
    text = metrics.render().body.decode()
    return {
        (s.labels["route"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "medsearch_requests"
        for s in family.samples
        if s.name == "medsearch_requests_total"
    }


def test_metrics_count_every_status_by_route_template() -> None:
    app, metrics = _tiny_app()
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/items/1").status_code == 200
        assert client.get("/items/2").status_code == 200
        assert client.get("/items/x").status_code == 422
        assert client.get("/items/13").status_code == 500
        assert client.get("/nowhere").status_code == 404
    assert _counts(metrics) == {
        ("/items/{item_id}", "200"): 2.0,
        ("/items/{item_id}", "422"): 1.0,
        ("/items/{item_id}", "500"): 1.0,
        ("other", "404"): 1.0,
    }


def test_a_routes_parameters_are_walked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    walks: list[str] = []
    real = strict._walk

    def counted(route: object) -> strict.Declared:
        walks.append(getattr(route, "path", "?"))
        return real(route)  # type: ignore[arg-type]

    monkeypatch.setattr(strict, "_walk", counted)
    app, _ = _tiny_app()
    with TestClient(app) as client:
        for _ in range(3):
            assert client.get("/items/1", params={"verbose": "true"}).status_code == 200
        refused = client.get("/items/1", params={"verbsoe": "true"})
        assert refused.status_code == 422 and "verbsoe" in refused.text
    assert walks == ["/items/{item_id}"]

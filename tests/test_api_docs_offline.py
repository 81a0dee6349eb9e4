"""/docs and /redoc load every asset from the service itself: they work on a machine without internet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import ServiceSettings

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|(?:url\s*:|spec-url\s*=)\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_local_assets_that_answer(page: str, tmp_path: Path) -> None:
    client = TestClient(create_app(ServiceSettings(data_dir=tmp_path, model=str(tmp_path / "unused"))))
    html = client.get(page)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assert "://" not in html.text  # no CDN, no web font: nothing outside this server
    urls = {a or b for a, b in ASSET.findall(html.text)}
    scripts = {u for u in urls if u.endswith(".js")}
    assert scripts and all(u.startswith("/static-docs/") for u in scripts), urls  # the UI's code is ours to serve
    for url in urls:
        assert url.startswith("/"), url
        answer = client.get(url)
        assert answer.status_code == 200 and len(answer.content) > 100, url
    assert "/openapi.json" in urls

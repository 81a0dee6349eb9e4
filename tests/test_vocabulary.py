"""One vocabulary: every error code has its status, and the CLI, the API and /v1/vocabulary share one definition."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import api
import indexer
import retrieval
from api.app import create_app
from api.config import ServiceSettings
from api.errors import API_ERRORS, install_error_handlers
from api.routes.vocabulary import vocabulary
from api.schemas import FilterParams, TextSearchRequest
from retrieval.errors import MedsearchError
from retrieval.vocabulary import (
    ERROR_MODULES,
    GROUP_BY,
    STATS_FIELDS,
    SearchFilters,
    StatsReport,
    filter_fields,
    library_errors,
)
from tests.conftest import REPO

PACKAGES = (retrieval, indexer, api)
SKIP_MODULES = {"retrieval.cli.__main__", "api.__main__"}  # running them would start the program
SKIP_PACKAGES = ("retrieval.store.migrations",)  # alembic scripts, run only by alembic


def all_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name not in SKIP_MODULES and not info.name.startswith(SKIP_PACKAGES):
                names.append(info.name)
    return names


def all_error_classes() -> list[type[MedsearchError]]:
    for name in all_modules():
        importlib.import_module(name)
    found: list[type[MedsearchError]] = []
    todo = list(MedsearchError.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if c.__module__.split(".")[0] in {"retrieval", "indexer", "api"}]


def test_every_error_class_names_its_code_status_and_title() -> None:
    classes = all_error_classes()
    assert len(classes) >= 25
    codes: dict[str, type[MedsearchError]] = {}
    for cls in classes:
        assert "code" in cls.__dict__, f"{cls.__qualname__} reuses its parent's code {cls.code!r}"
        assert "status" in cls.__dict__ and "title" in cls.__dict__, f"{cls.__qualname__} has no status/title"
        assert 400 <= cls.status <= 599 and cls.title.strip(), cls
        assert cls.code not in codes, f"{cls.code} defined by {codes.get(cls.code)} and {cls}"
        codes[cls.code] = cls
    library = {c: k for c, k in codes.items() if not k.__module__.startswith("api.")}
    assert library_errors().keys() >= library.keys()  # ERROR_MODULES lists every module that defines one
    assert {k.__module__ for k in library.values()} == set(ERROR_MODULES)
    assert not set(codes) & set(API_ERRORS), "an API code shadows a library code"
    for code in ("bad_settings", "bad_labels", "salt_mismatch", "salt_required", "vector_backend_unavailable"):
        assert codes[code].status != 500, code


def _literal_codes(tree: ast.AST) -> list[tuple[int, str]]:
    """`code=` keywords in calls (an ad-hoc code would bypass the classes) and `code = "..."` class attributes."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                func = ast.unparse(node.func)
                if kw.arg == "code" and func.endswith("Error"):
                    found.append((node.lineno, f"ad-hoc code in {func}(...)"))
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and [ast.unparse(t) for t in stmt.targets] == ["code"]
                    and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)
                    and any(ast.unparse(b).endswith("Error") for b in node.bases)
                ):
                    found.append((stmt.lineno, stmt.value.value))
    return found


def test_no_code_is_raised_without_a_class() -> None:
    known = {cls.code for cls in all_error_classes()}
    problems = []
    for package in ("retrieval", "indexer", "api"):
        for path in sorted((REPO / package).rglob("*.py")):
            for line, code in _literal_codes(ast.parse(path.read_text(), str(path))):
                if code.startswith("ad-hoc") or code not in known:
                    problems.append(f"{path.relative_to(REPO)}:{line}: {code}")
    assert problems == []


def test_every_code_gets_its_status_from_the_api() -> None:
    """A route raising each error answers with that error's status and code, never a bare 500."""
    classes = all_error_classes()
    app = FastAPI()
    install_error_handlers(app)
    by_code = {cls.code: cls for cls in classes}

    @app.get("/raise/{code}")
    def _raise(code: str) -> None:
        raise by_code[code](f"test message for {code}")

    with TestClient(app, raise_server_exceptions=False) as client:
        for code, cls in by_code.items():
            response = client.get(f"/raise/{code}")
            assert response.status_code == cls.status, code
            assert response.json() == {"code": code, "message": f"test message for {code}"}


def test_vocabulary_lists_every_code_filter_group_and_stat() -> None:
    body = vocabulary().model_dump()
    for cls in all_error_classes():
        assert body["errors"][cls.code] == {"status": cls.status, "title": cls.title}
    for code, err in API_ERRORS.items():
        assert body["errors"][code] == {"status": err.status, "title": err.title}
    assert body["filters"] == filter_fields()
    assert [f["name"] for f in body["filters"]] == list(SearchFilters.model_fields)
    assert {f["kind"] for f in body["filters"]} == {"list", "date", "text", "flag", "number"}
    assert body["group_by"] == list(GROUP_BY) == ["image", "study", "series"]
    assert body["stats"] == list(STATS_FIELDS) == list(StatsReport.__annotations__)
    assert {"index", "model_fingerprint", "index_vectors", "by_modality"} <= set(body["stats"])


def _search_options() -> dict[str, Any]:
    """The `medsearch search` options by name (Typer's own click types)."""
    from retrieval.cli import app

    group: Any = typer.main.get_command(app)
    return {p.name: p for p in group.commands["search"].params}


def test_cli_api_and_vocabulary_filters_agree(tmp_path: Path) -> None:
    names = list(SearchFilters.model_fields)
    assert list(FilterParams.model_fields) == names
    assert [n for n in TextSearchRequest.model_fields if n in names] == names

    options = _search_options()
    for field in filter_fields():
        option = options.get(field["name"])
        assert option is not None, f"medsearch search has no --{field['name'].replace('_', '-')}"
        assert option.multiple == (field["kind"] == "list"), field
        assert option.is_flag == (field["kind"] == "flag"), field
        help_text = SearchFilters.model_fields[field["name"]].description
        assert help_text and option.help and option.help.startswith(help_text)
    from retrieval.cli import app

    refused = CliRunner().invoke(app, ["search", "--text", "x", "--group-by", "patient"])
    assert refused.exit_code == 2 and all(repr(g) in refused.output for g in GROUP_BY), refused.output

    spec = create_app(ServiceSettings(data_dir=tmp_path)).openapi()
    similar = spec["paths"]["/v1/images/{image_id}/similar"]["get"]
    query_params = {p["name"] for p in similar["parameters"] if p["in"] == "query"}
    assert set(names) <= query_params
    form_ref = spec["paths"]["/v1/search/image"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    schemas = spec["components"]["schemas"]
    form = schemas[form_ref["$ref"].rsplit("/", 1)[1]]
    form_fields = set(form["properties"])
    for part in form.get("allOf", []):
        form_fields |= set(schemas[part["$ref"].rsplit("/", 1)[1]]["properties"])
    assert set(names) <= form_fields
    group_enum = next(p for p in similar["parameters"] if p["name"] == "group_by")["schema"]["enum"]
    assert group_enum == list(GROUP_BY)


@pytest.mark.parametrize("field", ["modality", "body_part"])
def test_a_single_string_is_a_list_of_one(field: str) -> None:
    assert getattr(SearchFilters.model_validate({field: "CT"}), field) == ["CT"]
    assert getattr(TextSearchRequest.model_validate({"text": "x", field: "CT"}), field) == ["CT"]
    assert getattr(SearchFilters.model_validate({field: ["CT", "MR"]}), field) == ["CT", "MR"]
    with pytest.raises(ValueError):
        SearchFilters.model_validate({field: 3})

"""The house's import graph: no circles, and every import points down the layers of DESIGN.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("retrieval", "indexer", "api")
STATIC = ROOT / "api" / "static"

# DESIGN.md's layers, declared once: the longest matching module prefix gives a module's layer.
# A module may import from a lower layer, or from its own layer when that does not close a circle.
LAYERS: dict[str, int] = {
    # 1 errors, settings, small utilities
    "retrieval": 1,
    "retrieval.errors": 1,
    "retrieval.settings": 1,
    "retrieval.settings_errors": 1,
    "retrieval.fsutil": 1,
    "retrieval.threads": 1,
    "retrieval.optional": 1,
    "retrieval.library_warnings": 1,
    "retrieval.privacy": 1,
    "retrieval.hub": 1,
    "retrieval.index.rwlock": 1,
    # 2 imaging and the store
    "retrieval.imaging": 2,
    "retrieval.prepare": 2,
    "retrieval.store": 2,
    # 3 encoders and vector indexes, over the store
    "retrieval.encoders": 3,
    "retrieval.standin_hint": 3,
    "retrieval.index": 3,
    "retrieval.embed_cache": 3,
    # 4 sources, and what reads images back from them
    "retrieval.sources": 4,
    "retrieval.render": 4,
    "retrieval.viewing": 4,
    # 5 collection
    "retrieval.collection": 5,
    # 6 query, findings, reports, summaries, evaluation
    "retrieval.vocabulary": 6,
    "retrieval.query": 6,
    "retrieval.hybrid": 6,
    "retrieval.query_levels": 6,
    "retrieval.query_cases": 6,
    "retrieval.why_empty": 6,
    "retrieval.feedback": 6,
    "retrieval.duplicates": 6,
    "retrieval.findings": 6,
    "retrieval.summarize": 6,
    "retrieval.export": 6,
    "retrieval.evaluation": 6,
    "retrieval.eval_data": 6,
    "retrieval.eval_studies": 6,
    "retrieval.eval_chart": 6,
    "retrieval.eval_text": 6,
    "retrieval.labels": 6,
    "retrieval.reports": 6,
    "retrieval.context": 6,
    "retrieval.encoders.calibration": 5,  # the collection's own images: the collection layer (DESIGN.md)
    # 7 indexer
    "indexer": 7,
    # 8 api (and the page), then the CLI
    "api": 8,
    "static": 8,
    "retrieval.cli": 9,
}


def layer_of(module: str) -> int:
    """The layer of the longest declared prefix of `module`."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer: add its prefix to LAYERS")


def python_modules() -> dict[str, Path]:
    """Every module of the three packages by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def python_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports anywhere in its file (lazy and TYPE_CHECKING imports count)."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            # `from a.b import c` ties to a.b.c when c is a module, otherwise to a.b
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
                break
    return targets


JS_IMPORT = re.compile(r"""^\s*(?:import|export)\b[^;]*?\bfrom\s*["']\./([\w-]+)\.js["']""", re.M | re.S)
JS_DYNAMIC = re.compile(r"""\bimport\s*\(\s*["']\./([\w-]+)\.js["']\s*\)""")


def js_graph() -> dict[str, set[str]]:
    """The page's ES modules: `static.<name>` -> the modules its import statements name."""
    graph: dict[str, set[str]] = {}
    for path in sorted(STATIC.glob("*.js")):
        text = path.read_text()
        names = set(JS_IMPORT.findall(text)) | set(JS_DYNAMIC.findall(text))
        graph[f"static.{path.stem}"] = {f"static.{n}" for n in names}
    return graph


def python_graph() -> dict[str, set[str]]:
    modules = python_modules()
    known = set(modules)
    return {name: python_imports(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} (layer {layer_of(a)}) -> {b} (layer {layer_of(b)})"
        for a, targets in graph.items()
        for b in targets
        if layer_of(b) > layer_of(a)
    )


@pytest.mark.parametrize("graph", [python_graph, js_graph], ids=["python", "page"])
def test_no_import_cycles(graph) -> None:  # type: ignore[no-untyped-def]
    assert cycles(graph()) == []


def test_imports_point_down() -> None:
    assert upward(python_graph()) == []


def test_every_module_has_a_layer() -> None:
    for module in [*python_graph(), *js_graph()]:
        layer_of(module)


# the store is the one door to the database; the collection opens (and disposes of) the store's engine
DATABASE_DOORS = ("retrieval.store", "retrieval.collection")
# each of these is written in one file only: where it lives, and what it is
ONCE = {
    "2**63": "the image id check (store/models.py is_image_id)",
    "TagScore.score >=": "the tag rule (store/sql.py having_tags)",
    ".partitions(": "the streaming reader of stored vectors (store/sql.py stream_vectors)",
    "mkstemp(": "atomic writes (fsutil.py)",
    "PILImage.fromarray(": "rendering (render.py)",
}


def imports_of(path: Path) -> set[str]:
    """Top-level names of every module a file imports (anywhere in it)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_store_touches_the_database() -> None:
    outside = sorted(
        name
        for name, path in python_modules().items()
        if "sqlalchemy" in imports_of(path) and not any(name == d or name.startswith(d + ".") for d in DATABASE_DOORS)
    )
    assert outside == []


@pytest.mark.parametrize("text", list(ONCE))
def test_written_once(text: str) -> None:
    files = sorted(
        str(path.relative_to(ROOT))
        for path in python_modules().values()
        if "migrations" not in path.parts and text in path.read_text()
    )
    assert len(files) == 1, f"{ONCE[text]} is written in {files}"


def bare_codes(path: Path) -> list[str]:
    """String literals given as an error code (`code="..."`, `{"code": "..."}`) in a file."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        values: list[ast.expr] = []
        if isinstance(node, ast.keyword) and node.arg == "code":
            values = [node.value]
        elif isinstance(node, ast.Dict):
            values = [
                v
                for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant) and k.value == "code"
            ]
        found += [v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value]
    return found


def test_failure_codes_are_error_classes() -> None:
    # a failure or error code is a class of the vocabulary (retrieval/errors.py...); only the API's own codes,
    # declared once in api/errors.py's table, are written as strings
    from api.errors import API_ERRORS

    bare = {
        f"{name}: {code}"
        for name, path in python_modules().items()
        for code in bare_codes(path)
        if code not in API_ERRORS
    }
    assert sorted(bare) == []


def test_the_checker_sees_a_circle_and_an_upward_import() -> None:
    # the checker itself must be able to fail
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert upward({"retrieval.store.repo": {"retrieval.collection"}}) == [
        "retrieval.store.repo (layer 2) -> retrieval.collection (layer 5)"
    ]


def test_type_checking_imports_count(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from retrieval.collection import X\n")
    assert python_imports("retrieval.store.m", src, {"retrieval.collection"}) == {"retrieval.collection"}


# Who reads a source is the registry's business (retrieval/sources/registry.py): outside retrieval/sources nothing
# looks at a planned ref's kind or at a stored URI's scheme to decide how to read it.
SOURCE_BRANCH = re.compile(
    r"""\bref\.kind\b"""  # ref.kind, item.ref.kind, r.ref.kind ...
    r"""|\.kind\s*(?:==|!=|in\b|not\s+in\b)\s*[(\[{]?\s*["'](?:file|zip|tar|dicomweb|cstore)["']"""
    r"""|startswith\([^)]*["'](?:dicom:|https?:)"""
    r"""|["']://["']\s*(?:not\s+)?in\b"""
)


def source_branches(text: str) -> list[str]:
    """The lines of `text` that branch on a source's kind or URI scheme."""
    return [line.strip() for line in text.splitlines() if SOURCE_BRANCH.search(line)]


def test_only_sources_branch_on_a_source_kind() -> None:
    found = [
        f"{name}: {line}"
        for name, path in python_modules().items()
        if not name.startswith("retrieval.sources")
        for line in source_branches(path.read_text())
    ]
    assert found == []


def test_the_source_branch_check_sees_the_old_branches() -> None:
    # the lines this round took out of the decode stage, the Ray decode task, the plan stage and `remove`
    old = [
        'if data is None and item.ref.kind != "file":  # an archive member',
        "elif ref.kind in worker_reads:",
        'is_path = source is not None and not source.startswith(("/", "\\\\", "dicom:")) and "://" not in source',
        'if image.source_kind == "cstore":',
    ]
    assert source_branches("\n".join(old)) == [line.strip() for line in old[:3]]
    assert source_branches('if x.kind == "dicomweb":') == ['if x.kind == "dicomweb":']

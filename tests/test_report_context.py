"""Reference-case context and report snippets: findings counted from affirmed report words, shares weighted by
score, the query's words marked in each hit's report (never its negated mentions), at every level."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from rich.console import Console

from indexer.job import IndexOptions
from indexer.pipeline import run_index
from retrieval import query as engine
from retrieval.cli.context_view import snippet_text
from retrieval.collection import Collection
from retrieval.context import reference_context
from retrieval.hybrid import hybrid_search
from retrieval.query_levels import search_level_page
from retrieval.reports.findings_terms import findings_in
from retrieval.reports.imports import import_reports
from retrieval.reports.snippets import make_snippet
from retrieval.store.models import Image
from retrieval.store.repo import Filters
from retrieval.store.report_search import any_words, parse
from retrieval.store.reports import StoredReport
from tests.test_reports import _study_files

REPORTS = {
    "a": "Right lower lobe consolidation. No pneumothorax. Small pleural effusion.",
    "b": "Left lower lobe consolidation, no effusion. <b>Bold</b> [red]x[/red] noted.",
    "c": "Normal chest. No consolidation or pneumothorax is seen.",
}


def _marked(snippet_text_: str, highlights: list[tuple[int, int]]) -> list[str]:
    return [snippet_text_[s:e] for s, e in highlights]


def test_snippet_marks_terms_phrases_prefixes_but_not_negated_mentions() -> None:
    text = "No pneumothorax. Small left pleural effusion; the effusion is new. Pneumothorax on the right."
    negated = "pneumothorax"  # as stored: the negated phrases, one a line (the first mention only)
    found = make_snippet(text, negated, parse('pneumothorax OR "pleural effusion" OR effus*'))
    assert _marked(found.text, found.highlights) == ["pleural effusion", "effusion", "Pneumothorax"]
    assert not found.cut_start and not found.cut_end


def test_snippet_without_a_query_is_the_reports_start_and_a_long_one_is_cut_around_the_first_mark() -> None:
    text = "Findings. " + "Unremarkable mediastinum. " * 20 + "A spiculated nodule in the right upper lobe."
    plain = make_snippet(text)
    assert plain.text.startswith("Findings.") and plain.highlights == [] and plain.cut_end
    around = make_snippet(text, "", parse("nodule"))
    assert around.cut_start and _marked(around.text, around.highlights) == ["nodule"]
    assert len(around.text) <= 240


def test_findings_come_from_affirmed_words_the_longest_term_first() -> None:
    assert findings_in("Small left pleural effusion. Consolidation at the base.") == {
        "pleural effusion",
        "consolidation",
    }
    assert findings_in("Pericardial effusion.") == {"pericardial effusion"}  # not also "pleural effusion"
    assert findings_in("") == set()


def _hit(score: float, label: str | None, affirmed: str | None, tags: dict[str, float]) -> engine.Hit:
    report = None if affirmed is None else StoredReport(1, "1.2", "import", None, affirmed, False, 1, affirmed, "")
    return engine.Hit(rank=1, image=Image(label=label), score=score, tags=tags, stored_report=report)


def test_context_counts_and_weights_by_score() -> None:
    hits = [
        _hit(0.6, "pneumonia", "Right lower lobe consolidation.", {"opacity": 0.7}),
        _hit(0.3, "pneumonia", "Lobar consolidation and small effusion.", {}),
        _hit(0.1, "normal", None, {}),
        _hit(-0.2, None, "Clear lungs.", {}),  # a negative score weighs nothing
    ]
    hits[0].probes, hits[1].probes = {"effusion-probe": 0.2}, {"effusion-probe": 0.9}
    context = reference_context(hits)
    assert (context.hits, context.with_report) == (4, 3)
    first = context.findings[0]
    assert (first.name, first.count, first.of, first.share) == ("consolidation", 2, 4, 0.9)
    assert first.summary == "2 of 4 similar images: consolidation"
    assert [(i.name, i.count, i.share) for i in context.labels] == [("pneumonia", 2, 0.9), ("normal", 1, 0.1)]
    assert [(i.name, i.count) for i in context.tags] == [("opacity", 1)]
    assert [(i.name, i.count, i.share) for i in context.probes] == [("effusion-probe", 1, 0.3)]  # 0.9 >= 0.5 only
    assert "Not for diagnosis" in context.notice
    even = reference_context([_hit(0.0, "a", None, {}), _hit(0.0, "b", None, {})])  # no weight: all count alike
    assert [i.share for i in even.labels] == [0.5, 0.5]


def test_report_markup_is_printed_as_text_on_the_command_line() -> None:
    snippet = make_snippet(REPORTS["b"], "effusion", parse("consolidation"))
    console = Console(record=True, width=200)
    console.print(snippet_text(snippet))
    shown = console.export_text()
    assert "[red]x[/red]" in shown and "<b>Bold</b>" in shown


@pytest.mark.backends("sqlite-faiss", "postgres-faiss")
def test_searches_at_every_level_carry_snippets_and_context(collection: Collection, tmp_path: Path) -> None:
    studies = {name: _study_files(tmp_path / name, with_sr=False) for name in REPORTS}
    for name in REPORTS:  # one series each (the test file's series UID is the same in all three)
        ct = pydicom.dcmread(tmp_path / name / "ct.dcm")
        ct.SeriesInstanceUID = generate_uid()
        ct.save_as(tmp_path / name / "ct.dcm")
    path = tmp_path / "reports.csv"
    path.write_text("study_instance_uid,report\n" + "".join(f'{studies[n]},"{t}"\n' for n, t in REPORTS.items()))
    import_reports(collection, path)
    run_index(collection, [tmp_path / name for name in REPORTS], IndexOptions(workers=0, batch_size=8))
    query = engine.embed_text(collection, "chest")
    for level in ("image", "series", "study"):
        filters = Filters(report="consolidation")  # the three images are one CT: keep its copies apart
        hits, _ = search_level_page(collection, query, level=level, k=5, filters=filters, show_duplicates=True)
        by_study = {h.image.study_instance_uid: h for h in hits}
        assert set(by_study) == {studies["a"], studies["b"]}, level  # "c" negates it
        for hit in hits:
            assert hit.snippet is not None and _marked(hit.snippet.text, hit.snippet.highlights) == ["consolidation"]
        context = reference_context(hits)
        assert [(i.name, i.count) for i in context.findings][:1] == [("consolidation", 2)], level
        assert hits[0].as_dict()["snippet"] == hits[0].snippet.as_dict()
    plain, _ = search_level_page(collection, query, level="study", k=5)
    assert len(plain) == 3 and all(h.snippet and h.snippet.highlights == [] for h in plain)  # the report's start
    assert {h.snippet.text for h in plain if h.snippet} == set(REPORTS.values())
    mixed = hybrid_search(collection, query, "pneumothorax effusion", k=5)  # hybrid reads copies apart
    marks = {h.image.study_instance_uid: _marked(h.snippet.text, h.snippet.highlights) for h in mixed if h.snippet}
    assert marks == {studies["a"]: ["effusion"], studies["b"]: [], studies["c"]: []}  # negated mentions unmarked
    assert any_words("pneumothorax effusion") is not None

"""Reports: DICOM SRs and imported rows become de-identified, negation-aware reports that `--report` words filter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select, text

from indexer.job import IndexOptions
from indexer.pipeline import run_index
from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.errors import ReportQueryError
from retrieval.reports.imports import import_reports
from retrieval.store.models import Report, Source
from retrieval.store.repo import Filters
from tests.conftest import testdata_file

pytestmark = pytest.mark.backends("sqlite-faiss", "postgres-faiss")  # the words filter is SQL: both databases

# what the study's headers say (synthetic): none of it may reach the database, a log or an answer
HEADER = {
    "PatientName": "Quibble^Henrietta^Marguerite",
    "PatientID": "PID-884213",
    "PatientBirthDate": "19570412",
    "AccessionNumber": "ACC7731902",
    "ReferringPhysicianName": "Oyelaran^Babatunde",
    "NameOfPhysiciansReadingStudy": "Vasquez-Thornbury^Imelda",
    "InstitutionName": "Saint Wendeline Infirmary",
}
HEADER_VALUES = [
    "Quibble",
    "Henrietta",
    "Marguerite",
    "PID-884213",
    "ACC7731902",
    "Oyelaran",
    "Babatunde",
    "Vasquez-Thornbury",
    "Imelda",
    "Saint Wendeline Infirmary",
    "04/12/1957",
    "April 12, 1957",
]
SR_TEXT = (
    "Henrietta Quibble (ID PID-884213, accession ACC7731902), born April 12, 1957, referred by Dr Babatunde "
    "Oyelaran to Saint Wendeline Infirmary. No pneumothorax. Small left pleural effusion. "
    "Read by Imelda Vasquez-Thornbury."
)


def _study_files(folder: Path, *, with_sr: bool = True, study: str | None = None) -> str:
    """A CT image and (optionally) a Basic Text SR of one synthetic study, both naming HEADER's values."""
    study = study or generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    ct = pydicom.dcmread(testdata_file("CT_small.dcm"))
    sr = pydicom.dcmread(testdata_file("reportsi.dcm"))
    for ds, name in ((ct, "ct.dcm"), (sr, "sr.dcm")):
        for keyword, value in HEADER.items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID = study
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if name == "sr.dcm":
            if not with_sr:
                continue
            sr.ContentSequence[-1].ContentSequence[0].TextValue = SR_TEXT  # the "Report Text" item
        ds.save_as(folder / name, enforce_file_format=True)
    return study


def _stored_text(collection: Collection) -> str:
    """Everything the reports table holds, as one string (for leak counts)."""
    with collection.catalog.sessions() as session:
        rows = session.scalars(select(Report))
        return "\n".join(f"{r.text}\n{r.affirmed}\n{r.negated}\n{r.reference}" for r in rows)


def _leaks(haystack: str) -> list[str]:
    return [v for v in HEADER_VALUES if v.lower() in haystack.lower()]


@pytest.fixture
def indexed(collection: Collection, tmp_path: Path) -> Iterator[tuple[Collection, str]]:
    study = _study_files(tmp_path / "study")
    run_index(collection, [tmp_path / "study"], IndexOptions(workers=0, batch_size=8))
    yield collection, study


def test_an_sr_becomes_its_studys_report_scrubbed_and_searchable(
    indexed: tuple[Collection, str], caplog: pytest.LogCaptureFixture
) -> None:
    collection, study = indexed
    with collection.catalog.sessions() as session:
        statuses = {Path(s.uri).name: (s.status, s.sop_class) for s in session.scalars(select(Source))}
    assert statuses == {"ct.dcm": ("indexed", None), "sr.dcm": ("report", "Basic Text SR Storage")}
    stored = collection.catalog.reports.latest([study])[study]
    assert "Small left pleural effusion" in stored.text and "Section Heading" in stored.text  # headings kept
    assert _leaks(_stored_text(collection)) == []
    assert _leaks(caplog.text) == []
    vector = engine.embed_text(collection, "chest")
    for words, found in (
        ("pleural effusion", 1),
        ('"pleural effusion"', 1),
        ('"left pleural" AND effus*', 1),
        ("pneumothorax", 0),  # "No pneumothorax." is negated: it must not match
        ("pneumothorax OR effusion", 1),
        ('"effusion small"', 0),  # a phrase is words in order
        ("Quibble", 0),  # a scrubbed name is not searchable either
    ):
        hits = engine.search(collection, vector, k=5, filters=Filters(report=words))
        assert len(hits) == found, words
    composed = Filters(report="effusion", modality=["MR"])  # composes with every other filter
    assert engine.search(collection, vector, k=5, filters=composed) == []


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ('"pleural effusion', "never closed"),
        ("(effusion OR edema", "never closed"),
        ("effusion)", "without its '('"),
        ("AND effusion", "nothing before it"),
        ("effusion AND", "nothing after it"),
        ("effusion OR", "no words after OR"),
        ('""', "holds no letters"),
        ("x" * 501, "at most 500"),
    ],
)
def test_a_report_query_that_cannot_be_read_says_what_and_where(query: str, problem: str) -> None:
    from retrieval.store.report_search import parse

    with pytest.raises(ReportQueryError, match=problem.replace("(", r"\(")) as caught:
        parse(query)
    assert caught.value.status == 400


def test_queries_are_written_for_each_database() -> None:
    from retrieval.store.report_search import parse, to_fts5, to_tsquery

    node = parse('"pleural effusion" OR consolidat* AND NEAR:x')  # nothing typed is read as FTS5 syntax
    assert to_fts5(node) == '("pleural effusion" OR ("consolidat" * AND "near x"))'
    assert to_tsquery(node) == "(('pleural' <-> 'effusion') | (('consolidat':*) & ('near' <-> 'x')))"


def test_an_import_keyed_by_accession_or_study_is_scrubbed_and_deduplicated(
    indexed: tuple[Collection, str], tmp_path: Path
) -> None:
    collection, study = indexed
    rows = [
        {
            "accession_number": HEADER["AccessionNumber"],
            "report": SR_TEXT + " Amended: effusion resolving.",
            "date": "2030-01-02",
        },
        {"study_instance_uid": study, "report": "Henrietta Quibble: no acute findings.", "date": "2020-01-01"},
        {"study_instance_uid": study, "report": ""},
        {"accession_number": "NOPE-1", "report": "orphan"},
    ]
    path = tmp_path / "reports.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    summary = import_reports(collection, path)
    assert (summary.rows, summary.stored, summary.duplicates, summary.waiting) == (4, 2, 0, 0)
    assert [r for r, _ in summary.rejected] == [3, 4]
    again = import_reports(collection, path)  # the same file twice: nothing new
    assert (again.stored, again.duplicates) == (0, 2)
    everything = collection.catalog.reports.all_of(study)
    assert len(everything) == 3  # the SR and two imported: all kept
    latest = collection.catalog.reports.latest([study])[study]
    assert "Amended" in latest.text and latest.versions == 3  # latest by its own date wins
    through_orm = next(r for r in everything if r.id == latest.id)  # the plain-SQL read gives the ORM's values
    assert (latest.origin, latest.written_at, latest.text, latest.truncated, latest.affirmed, latest.negated) == (
        through_orm.origin,
        through_orm.written_at,
        through_orm.text,
        through_orm.truncated,
        through_orm.affirmed,
        through_orm.negated,
    )
    assert _leaks(_stored_text(collection)) == []


def test_a_report_before_its_images_waits_then_is_scrubbed_of_their_headers(
    collection: Collection, tmp_path: Path
) -> None:
    study = _study_files(tmp_path / "later", with_sr=False)
    path = tmp_path / "early.csv"
    body = "study_instance_uid,report\n" + f'{study},"Marguerite Quibble: right lower lobe consolidation."\n'
    path.write_bytes(body.encode("cp1252") + "Caf\xe9 note\n".encode("cp1252"))  # not UTF-8 (and a bad row)
    summary = import_reports(collection, path)
    assert (summary.stored, summary.waiting, summary.not_utf8) == (1, 1, True)
    assert "Quibble" in _stored_text(collection)  # the tool alone does not know this surname ...
    assert (collection.catalog.stats()["reports"], collection.catalog.stats()["reports_waiting"]) == (1, 1)
    run_index(collection, [tmp_path / "later"], IndexOptions(workers=0, batch_size=8))
    assert collection.catalog.stats()["reports_waiting"] == 0
    assert _leaks(_stored_text(collection)) == []  # ... the images' headers do
    vector = engine.embed_text(collection, "chest")
    assert len(engine.search(collection, vector, k=5, filters=Filters(report="consolidation"))) == 1


def test_a_huge_report_is_cut_and_recorded(collection: Collection, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("study_instance_uid,report\n1.2.3.4," + "effusion " * 600_000 + "\n")  # 5.4 MB
    summary = import_reports(collection, path)
    assert summary.truncated == 1
    with collection.catalog.sessions() as session:
        row = session.scalars(select(Report)).one()
    assert row.truncated and row.chars == len("effusion " * 600_000) - 1 and len(row.text) <= 200_000


def test_the_full_text_index_follows_the_table(collection: Collection, tmp_path: Path) -> None:
    """Rows stored are matched; a row's text replaced is matched by its new words only (the triggers/index)."""
    path = tmp_path / "r.csv"
    path.write_text("study_instance_uid,report\n1.2.3,atelectasis\n")
    import_reports(collection, path)
    with collection.catalog.sessions() as session:
        dialect = session.get_bind().dialect.name
        from retrieval.store.report_search import matching_studies

        assert list(session.scalars(matching_studies(dialect, "atelect*"))) == ["1.2.3"]
        (report_id,) = session.scalars(select(Report.id))
    collection.catalog.reports.replace_text(report_id, "edema", "edema", "", 0)
    with collection.catalog.sessions() as session:
        assert list(session.scalars(matching_studies(dialect, "atelect*"))) == []
        assert list(session.scalars(matching_studies(dialect, "edema"))) == ["1.2.3"]
        if dialect == "postgresql":  # the GIN expression index exists and serves the match
            assert session.scalar(text("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_reports_fts'")) == 1


def test_pydicoms_sr_test_files_become_reports(collection: Collection, tmp_path: Path) -> None:
    folder = tmp_path / "srs"
    folder.mkdir()
    for name in ("test-SR.dcm", "reportsi.dcm", "reportsi_with_empty_number_tags.dcm"):
        (folder / name).write_bytes(testdata_file(name).read_bytes())
    summary = run_index(collection, [folder], IndexOptions(workers=0, batch_size=8))
    assert (summary.reports, summary.failed, sum(summary.not_images.values())) == (3, 0, 0)
    with collection.catalog.sessions() as session:
        texts = list(session.scalars(select(Report.text)))
    assert len(texts) == 2  # the two reportsi files are one report (same study, same text)
    assert any("Diameter: 3 cm" in t for t in texts)


def test_a_malformed_sr_is_a_failure_with_a_reason(collection: Collection, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    empty = pydicom.dcmread(testdata_file("reportsi.dcm"))
    del empty.ContentSequence  # an SR with no text
    empty.save_as(folder / "empty.dcm", enforce_file_format=True)
    orphan = pydicom.dcmread(testdata_file("reportsi.dcm"))
    del orphan.StudyInstanceUID
    orphan.save_as(folder / "orphan.dcm", enforce_file_format=True)
    summary = run_index(collection, [folder], IndexOptions(workers=0, batch_size=8))
    reasons = sorted((Path(f.uri).name, f.code, f.reason) for f in summary.failures)
    assert [(name, code) for name, code, _ in reasons] == [("empty.dcm", "bad_report"), ("orphan.dcm", "bad_report")]
    assert "holds no text" in reasons[0][2] and "no StudyInstanceUID" in reasons[1][2]


def test_hybrid_fuses_the_embedding_rank_and_the_report_match(collection: Collection, tmp_path: Path) -> None:
    from retrieval.hybrid import hybrid_search

    with_effusion = _study_files(tmp_path / "a")
    with_consolidation = _study_files(tmp_path / "b", with_sr=False)
    path = tmp_path / "b.csv"
    path.write_text(f"study_instance_uid,report\n{with_consolidation},Right lower lobe consolidation.\n")
    import_reports(collection, path)
    run_index(collection, [tmp_path / "a", tmp_path / "b"], IndexOptions(workers=0, batch_size=8))
    for words, first in (("pleural effusion", with_effusion), ("lobe consolidation", with_consolidation)):
        query = engine.embed_text(collection, words)
        hits = hybrid_search(collection, query, words, k=5)
        assert len(hits) == 2 and hits[0].image.study_instance_uid == first, words
        assert hits[0].report_rank == 1 and hits[1].report_rank is None  # the other study's report has no such word
        assert {h.embedding_rank for h in hits} == {1, 2}  # both came from the embedding list too
        assert hits[0].as_dict()["report_rank"] == 1
    filtered = hybrid_search(collection, query, "consolidation", k=5, filters=Filters(modality=["MR"]))
    assert filtered == []  # the same filters bound both lists


@pytest.mark.slow  # indexes twice (make test-fast is at its budget)
def test_an_sr_whose_study_is_never_indexed_waits_and_matches_nothing(collection: Collection, tmp_path: Path) -> None:
    from retrieval.hybrid import hybrid_search

    study = _study_files(tmp_path / "both")
    (tmp_path / "sr-only").mkdir()
    (tmp_path / "both" / "sr.dcm").rename(tmp_path / "sr-only" / "sr.dcm")
    summary = run_index(collection, [tmp_path / "sr-only"], IndexOptions(workers=0, batch_size=8))
    assert (summary.reports, summary.failed) == (1, 0)  # a report, not a failure
    stats = collection.catalog.stats()
    assert (stats["reports"], stats["reports_waiting"], stats["images"]) == (1, 1, 0)
    assert _leaks(_stored_text(collection)) == []  # the SR's own headers name the patient: scrubbed already
    vector = engine.embed_text(collection, "chest")
    assert engine.search(collection, vector, k=5, filters=Filters(report="effusion")) == []
    assert hybrid_search(collection, vector, "pleural effusion", k=5) == []  # a report without images is no hit
    run_index(collection, [tmp_path / "both"], IndexOptions(workers=0, batch_size=8))  # its images come after all
    assert collection.catalog.stats()["reports_waiting"] == 0
    hits = engine.search(collection, vector, k=5, filters=Filters(report="effusion"))
    assert [h.image.study_instance_uid for h in hits] == [study]

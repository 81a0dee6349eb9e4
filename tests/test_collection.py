"""An explicit collection: opening migrates, checks the salt and reconciles; the model loads when asked."""

from __future__ import annotations

from pathlib import Path

from retrieval.collection import Collection, build_encoder
from retrieval.encoders.base import Encoder
from retrieval.labels import read_labels_table
from retrieval.settings import Settings
from tests.conftest import make_settings


def test_opening_does_not_load_the_model_and_load_encoder_does_once(tmp_path: Path, tiny_model: Path) -> None:
    loads: list[str] = []

    def factory(settings: Settings) -> Encoder:
        loads.append(settings.model)
        return build_encoder(settings)

    settings = make_settings(tmp_path / "data", tiny_model)
    fresh = Collection(settings, factory)
    try:
        assert loads == [] and fresh.index is None and fresh.reconcile_report is None
        assert (tmp_path / "data").is_dir() and len(fresh.salt) >= 32  # migrated store, salt made
        encoder = fresh.load_encoder()
        assert loads == [str(tiny_model)] and fresh.index is not None and fresh.index.width == encoder.fingerprint.width
        assert fresh.load_encoder() is encoder and fresh.encoder is encoder and len(loads) == 1
    finally:
        fresh.close()
    reopened = Collection(settings, factory)  # a model is recorded now: the index opens without loading it
    try:
        assert len(loads) == 1 and reopened.index is not None and reopened.reconcile_report is not None
        assert reopened.salt == fresh.salt
    finally:
        reopened.close()


def test_one_reader_serves_indexing_and_evaluation(tmp_path: Path) -> None:
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("Path,Label,Patient,SOPInstanceUID\na.dcm,chest,p1,\n,knee,,1.2.3\nsub/b.png,skull,,\n")
    table = read_labels_table(csv_file)
    assert table.columns == {"path", "label", "patient", "sopinstanceuid"}
    assert [r.line for r in table.rows] == [2, 3, 4]
    assert table.rows[0].uri == str((tmp_path / "a.dcm").resolve()) and table.rows[0].patient == "p1"
    assert table.rows[1].uri is None and table.rows[1].uid == "1.2.3" and table.rows[1].label == "knee"
    assert table.rows[2].uri == str((tmp_path / "sub" / "b.png").resolve())

"""Planning facts of received volume slices outlive their spooled bytes (a growing series is re-planned with them)."""

from __future__ import annotations

import json
from pathlib import Path

from retrieval.sources.base import SourceRef
from retrieval.sources.received import SpoolSource, received_uri
from retrieval.sources.received_headers import headers_path, kept_headers
from tests.conftest import testdata_file
from tests.phantoms import volume, write_series


def test_spool_source_keeps_volume_slice_headers_and_knows_them_once_the_files_are_gone(tmp_path: Path) -> None:
    series = write_series(tmp_path / "ct", volume("cube", 5, 16), shape="cube", seed=3, patient="SECRET-ID-42")
    single = tmp_path / "sc.dcm"
    single.write_bytes(testdata_file("SC_rgb.dcm").read_bytes())
    files = [*series.files, single]
    source = SpoolSource.one_copy_each(files, 1 << 30, tmp_path / "data")
    read = {ref.uri: source.header(ref) for ref in source.refs if isinstance(ref, SourceRef)}
    assert source.keep_headers(files) == len(series.files)  # the CT slices and localizer; not the single image
    for path in files:
        path.unlink()  # planned: the spooled bytes go

    kept = kept_headers(series.series_uid, tmp_path / "data")
    slices = {received_uri(series.study_uid, series.series_uid, h.sop_instance_uid or "") for h in kept.values()}
    assert slices == set(kept) and len(kept) == len(series.files)
    for uri, header in kept.items():
        assert header == read[uri]  # the same facts as read from the file, tuples and all
    stored = source.stored_ref(next(iter(kept)), 10, 1.0, "indexed")
    assert stored is not None and stored.location == ""  # known without bytes: kept or dropped, never read
    assert SpoolSource([], 1 << 30, tmp_path / "data").header(stored) == kept[stored.uri]
    assert source.stored_ref(next(iter(kept)), 10, 1.0, "sampled_out") is None  # its bytes are gone: left as is
    text = headers_path(series.series_uid, tmp_path / "data").read_text()
    assert "SECRET-ID-42" not in text and series.series_uid not in headers_path(series.series_uid, Path("x")).name
    assert json.loads(text)  # plain JSON

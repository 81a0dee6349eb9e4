"""`medsearch pull` against a real Orthanc (DICOMweb plugin, basic auth): complete, incremental, filtered."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.collection import Collection
from retrieval.errors import NotFoundError
from retrieval.render import cached_png
from retrieval.sources.dicomweb import instance_url
from tests.commands import run
from tests.conftest import make_settings, testdata_file
from tests.orthanc import Orthanc, encode, start_orthanc, with_new_uids

pytestmark = pytest.mark.peers  # starts Orthanc (not in `make test-fast`)

USER, PASSWORD = "radiology", "pull-test-password"
FIRST = ["CT_small.dcm", "MR_small_jp2klossless.dcm", "emri_small.dcm"]  # uncompressed, JPEG 2000, 10 frames
LATER = ["SC_rgb_rle_2frame.dcm", "693_J2KI.dcm"]
UPLOADED: list[tuple[str, str]] = []  # (file name, SOP Instance UID) of everything this module put in Orthanc


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    server = start_orthanc(tmp_path_factory.mktemp("orthanc-pull"), users={USER: PASSWORD})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("pull")
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
        "MEDSEARCH_DATA_DIR": str(root / "data"),
        "MEDSEARCH_MODEL": str(tiny_model),
        "MEDSEARCH_WORKERS": "0",
        "PACS_PASSWORD": PASSWORD,
    }


def _upload(orthanc: Orthanc, names: list[str]) -> dict[str, tuple[str, str, str]]:
    """Upload real files (fresh UIDs so each is its own study); returns {name: (study, series, sop)}."""
    uids = {}
    for name in names:
        ds = with_new_uids(testdata_file(name), study=None)
        orthanc.upload(encode(ds))
        uids[name] = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        UPLOADED.append((name, uids[name][2]))
    return uids


def _pull(orthanc: Orthanc, env: dict[str, str], *extra: str, check: bool = True) -> dict[str, object]:
    args = ["pull", "--dicomweb", orthanc.dicomweb, "--auth", "basic", "--user", USER]
    proc = run([*args, "--password-env", "PACS_PASSWORD", "--json", *extra], env, check=check)
    assert "Traceback" not in proc.stderr
    return dict(json.loads(proc.stdout))


def _indexed(env: dict[str, str], tiny_model: Path) -> dict[str, tuple[str | None, str | None, str]]:
    collection = Collection(make_settings(Path(env["MEDSEARCH_DATA_DIR"]), tiny_model))
    try:
        ids = [int(i) for i in collection.catalog.all_ids()]
        rows = collection.catalog.images(ids).values()
        return {str(r.sop_instance_uid): (r.study_instance_uid, r.series_instance_uid, r.source_uri) for r in rows}
    finally:
        collection.close()


def test_pull_everything_then_only_what_is_new(orthanc: Orthanc, env: dict[str, str], tiny_model: Path) -> None:
    first = _upload(orthanc, FIRST)
    report = _pull(orthanc, {**env, "MEDSEARCH_WORKERS": "1"})  # fetched bytes through a real decode process
    assert report["found"] == 3 and report["fetched"] == 3 and report["indexed"] == 3 and report["failed"] == 0
    indexed = _indexed(env, tiny_model)
    assert set(indexed) == {sop for _, _, sop in first.values()}
    for study, series, sop in first.values():
        assert indexed[sop] == (study, series, instance_url(orthanc.dicomweb, study, series, sop))

    again = _pull(orthanc, env)
    assert again["found"] == 3 and again["already_indexed"] == 3 and again["fetched"] == 0 and again["indexed"] == 0

    later = _upload(orthanc, LATER)
    third = _pull(orthanc, env)
    assert third["found"] == 5 and third["already_indexed"] == 3 and third["fetched"] == 2 and third["indexed"] == 2
    assert set(_indexed(env, tiny_model)) == {sop for _, _, sop in (first | later).values()}

    stats = json.loads(run(["stats", "--json"], env).stdout)
    assert stats["images"] == stats["index_vectors"] == 5 and stats["failures"] == 0


def test_filters_by_modality_and_study_date(
    orthanc: Orthanc, env: dict[str, str], tmp_path: Path, tiny_model: Path
) -> None:
    _upload(orthanc, ["MR_small_jp2klossless.dcm", "emri_small.dcm", "CT_small.dcm"])  # MR 2004, MR 2000, CT 2004
    expected = {sop for name, sop in UPLOADED if name == "MR_small_jp2klossless.dcm"}  # the only MR of 2004
    mine = {**env, "MEDSEARCH_DATA_DIR": str(tmp_path / "filtered")}
    report = _pull(orthanc, mine, "--modality", "CR,MR", "--since", "2004-01-01", "--until", "2004-12-31")
    assert report["found"] == report["indexed"] == len(expected) and report["failed"] == 0
    assert set(_indexed(mine, tiny_model)) == expected
    ct_env = {**mine, "MEDSEARCH_DATA_DIR": str(tmp_path / "ct")}
    only_ct = _pull(orthanc, ct_env, "--modality", "CT", "--until", "2004-02-01")
    assert only_ct["found"] == sum(1 for name, _ in UPLOADED if name == "CT_small.dcm")  # 693_J2KI has no date


def test_api_gives_retrieve_urls_and_renders_pulled_images_from_the_server(
    orthanc: Orthanc, env: dict[str, str], tiny_model: Path
) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.config import ServiceSettings

    study, series, sop = _upload(orthanc, ["MR_small_jp2klossless.dcm"])["MR_small_jp2klossless.dcm"]
    _pull(orthanc, env)
    wado = instance_url(orthanc.dicomweb, study, series, sop)
    data_dir = Path(env["MEDSEARCH_DATA_DIR"])
    pacs = {"dicomweb_auth": "basic", "dicomweb_user": USER, "dicomweb_password": PASSWORD}
    settings = ServiceSettings(data_dir=data_dir, model=str(tiny_model), dicomweb_url=orthanc.dicomweb, **pacs)
    with TestClient(create_app(settings)) as client:
        hits = client.post("/v1/search/text", json={"text": "brain", "k": 50}).json()["hits"]
        hit = next(h for h in hits if h["sop_instance_uid"] == sop)
        assert hit["retrieve_url"] == hit["source"] == wado
        assert client.get(f"/v1/images/{hit['id']}").json()["retrieve_url"] == wado
        preview = client.get(f"/v1/images/{hit['id']}/preview")  # rendered from a WADO-RS fetch, then cached
        assert preview.status_code == 200 and preview.content.startswith(b"\x89PNG")
    with_url = {**env, "MEDSEARCH_DICOMWEB_URL": orthanc.dicomweb}
    cli = json.loads(run(["search", "--id", str(hit["id"]), "-k", "50", "--json"], with_url).stdout)
    assert all(h["retrieve_url"] and h["retrieve_url"].startswith(orthanc.dicomweb + "/studies/") for h in cli["hits"])

    collection = Collection(make_settings(data_dir, tiny_model, dicomweb_url=orthanc.dicomweb, **pacs))
    try:
        image = collection.catalog.images([hit["id"]])[hit["id"]]
        image.id = -1  # nothing cached under this id: a fresh render must not follow a URL off the configured server
        image.source_uri = wado.replace(orthanc.dicomweb, "http://127.0.0.1:1/dicom-web")
        with pytest.raises(NotFoundError, match="not under the configured MEDSEARCH_DICOMWEB_URL"):
            cached_png(image, "thumbnail", collection.settings)
        with pytest.raises(NotFoundError, match="set MEDSEARCH_DICOMWEB_URL"):
            cached_png(image, "thumbnail", make_settings(data_dir, tiny_model))
    finally:
        collection.close()


def test_wrong_credentials_are_a_clear_error(orthanc: Orthanc, env: dict[str, str]) -> None:
    proc = run(
        ["pull", "--dicomweb", orthanc.dicomweb, "--auth", "basic", "--user", USER, "--password-env", "NOPE"],
        {**env, "NOPE": "wrong"},
        check=False,
    )
    assert proc.returncode == 1 and "HTTP 401" in proc.stderr and "--password-env" in proc.stderr
    missing = run(["pull", "--dicomweb", orthanc.dicomweb, "--auth", "basic", "--user", USER], env, check=False)
    assert missing.returncode == 1 and "needs a user and a password" in missing.stderr
    for p in (proc, missing):
        assert "Traceback" not in p.stderr + p.stdout and PASSWORD not in p.stderr + p.stdout

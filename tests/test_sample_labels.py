"""The demo's labels say what each sample shows: its modality, and the body region its header or picture shows."""

from __future__ import annotations

import csv

import pydicom
import pytest

from tests.conftest import SAMPLES

LABELS = {row["path"]: row for row in csv.DictReader((SAMPLES / "labels.csv").open())}
# words a sample's own header uses for the region, and what its label must then say
HEADER_REGIONS = {
    "SHOULDER": "shoulder",
    "CHEST": "chest",
    "THORAX": "chest",
    "EXTREMITY": "extremity",
    "HEAD": "head",
    "WHOLE BODY": "whole-body",
    "OBSTETRICAL": "obstetric",
    "SMALL PARTS": "lymph-node",
}
# what each sample shows, checked by rendering it to PNG and looking (the header alone does not say, for some)
LOOKED_AT = {
    "CT_small.dcm": "ct-chest",  # axial slice at thoracic level: vertebra, descending aorta, ribs (no skull)
    "693_J2KI.dcm": "ct-head",  # skull and brain
    "MR_small.dcm": "mr-head",  # 2 cm crop of a high-resolution T2 MR near the inner ear
    "emri_small.dcm": "mr-head",  # sagittal brain: gyri and corpus callosum on every frame
    "MR2_J2KI.dcm": "mr-shoulder",  # humeral head under the acromion and deltoid (the header says SHOULDER)
    "RG1_J2KI.dcm": "cr-chest",  # PA chest radiograph
    "RG3_J2KI.dcm": "cr-extremity",  # distal tibia and fibula, ankle
    "JPEG-LL.dcm": "nm-whole-body",  # whole-body bone scan
    "examples_jpeg2k.dcm": "us-lymph-node",  # power Doppler of a lymph node ("LYMPH NODE" burnt in)
    "examples_palette.dcm": "us-obstetric",  # OB preset ("Gen OB") sector scan
}


def test_every_sample_is_labelled_once_and_looked_at() -> None:
    assert sorted(LABELS) == sorted(p.name for p in SAMPLES.glob("*.dcm")) == sorted(LOOKED_AT)
    assert {name: row["label"] for name, row in LABELS.items()} == LOOKED_AT


@pytest.mark.parametrize("name", sorted(LOOKED_AT))
def test_a_label_agrees_with_the_file_header(name: str) -> None:
    header = pydicom.dcmread(SAMPLES / name, stop_before_pixels=True)
    label = LABELS[name]["label"]
    assert label.split("-")[0] == str(header.Modality).lower()
    said = " ".join(
        str(header.get(keyword, "") or "")
        for keyword in ("BodyPartExamined", "StudyDescription", "SeriesDescription", "ImageType")
    ).upper()
    for word, region in HEADER_REGIONS.items():
        if word in said:
            assert region in label, (name, word, label)

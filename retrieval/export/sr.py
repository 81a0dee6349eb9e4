"""Build the DICOM Comprehensive SR of one search's results (highdicom), in the query's study, in its own series.

Why Comprehensive SR and no DICOM template: no template describes similar-case retrieval. TID 1500 (Measurement
Report) is for measurements of tracked findings and would force each match into a measurement group with a
tracking identifier and a unit it does not have; Basic Text SR has no numbers, Enhanced SR no cross-study image
references. Comprehensive SR takes a CONTAINER of our own concepts (coding scheme 99MEDSEARCH, declared in the
Coding Scheme Identification Sequence) with NUM, TEXT, UIDREF and IMAGE items, and the matches' instances go into
the Pertinent Other Evidence Sequence, where every PACS and viewer looks for instances of other studies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

NOT_FOR_DIAGNOSIS = (
    "Not for diagnosis: images similar to the query by a machine-learning model, for research and decision support "
    "only. Similar is not the same diagnosis; a qualified clinician must read the images and reports themselves."
)
SCHEME = "99MEDSEARCH"
SERIES_NUMBER = 9901
SERIES_DESCRIPTION = "medsearch similar cases"
# the patient and study modules of the query: the only patient data the SR carries (read from the query's own header)
_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
)


@dataclass(frozen=True)
class Match:
    """One hit as the SR lists it; the UIDs are None when the export leaves them out (or the image has none)."""

    rank: int
    score: float
    level: str
    image_id: int
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    sop_class_uid: str | None = None
    frame: int | None = None


@dataclass(frozen=True)
class About:
    """What made the results: model, its fingerprint, the query kind (and region, when the query was one)."""

    model_id: str
    fingerprint: str
    query_kind: str
    region: str | None = None


def code(value: str, meaning: str) -> hd.sr.CodedConcept:
    """A concept of our own coding scheme."""
    return hd.sr.CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning)


def sr_uids(header: Dataset, matches: Sequence[Match], about: About) -> tuple[str, str]:
    """Series and SOP Instance UIDs derived from what the SR says: exporting the same results again gives the same
    instance, which a PACS stores once (a retry after a lost answer adds no second copy)."""
    listed = [f"{m.rank}:{m.image_id}:{m.score:.6f}:{m.level}:{m.sop_uid}" for m in matches]
    base = [str(header.StudyInstanceUID), str(header.SOPInstanceUID), about.fingerprint, about.query_kind]
    series = generate_uid(entropy_srcs=[*base[:1], "medsearch-sr-series"])
    sop = generate_uid(entropy_srcs=[*base, str(about.region), *listed])
    return series, sop


def _minimal(header: Dataset) -> Dataset:
    """The query as evidence: its UIDs and its patient/study modules, nothing else (no pixels, no other tags)."""
    ds = Dataset()
    for keyword in _COPIED:
        setattr(ds, keyword, header.get(keyword, ""))
    ds.SeriesInstanceUID = header.SeriesInstanceUID
    ds.SOPInstanceUID = header.SOPInstanceUID
    ds.SOPClassUID = header.SOPClassUID
    if "SpecificCharacterSet" in header:
        ds.SpecificCharacterSet = header.SpecificCharacterSet
    return ds


def _reference(study: str, series: str, sop: str, sop_class: str) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID = study, series, sop, sop_class
    return ds


def _match_items(match: Match) -> list[hd.sr.ContentItem]:
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    no_units = hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")
    items: list[hd.sr.ContentItem] = [
        hd.sr.NumContentItem(code("SCR-RANK", "Rank"), match.rank, no_units, relationship_type=contains),
        hd.sr.NumContentItem(
            code("SCR-SCORE", "Similarity score"), round(match.score, 6), no_units, relationship_type=contains
        ),
        hd.sr.TextContentItem(code("SCR-LEVEL", "Match level"), match.level, relationship_type=contains),
        hd.sr.TextContentItem(code("SCR-ID", "medsearch image id"), str(match.image_id), relationship_type=contains),
    ]
    if match.study_uid:
        items.append(hd.sr.UIDRefContentItem(codes.DCM.StudyInstanceUID, match.study_uid, relationship_type=contains))
    if match.series_uid:
        items.append(hd.sr.UIDRefContentItem(codes.DCM.SeriesInstanceUID, match.series_uid, relationship_type=contains))
    if match.frame and match.frame > 1:  # its own item: ReferencedFrameNumber is wrong for single-frame classes
        items.append(
            hd.sr.NumContentItem(code("SCR-FRAME", "Frame number"), match.frame, no_units, relationship_type=contains)
        )
    if match.sop_uid and match.sop_class_uid:
        items.append(
            hd.sr.ImageContentItem(
                code("SCR-IMAGE", "Similar image"),
                referenced_sop_class_uid=match.sop_class_uid,
                referenced_sop_instance_uid=match.sop_uid,
                relationship_type=contains,
            )
        )
    return items


def _container(items: list[hd.sr.ContentItem]) -> hd.sr.ContainerContentItem:
    item = hd.sr.ContainerContentItem(
        code("SCR-MATCH", "Similar case"), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    item.ContentSequence = hd.sr.ContentSequence(items)
    return item


def build_sr(header: Dataset, matches: Sequence[Match], about: About) -> Dataset:
    """The Comprehensive SR: patient and study from the query's header, one container per match."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not header.get(keyword):
            from retrieval.export.errors import ExportNeedsDicomError

            raise ExportNeedsDicomError(f"the query's DICOM header has no {keyword}: an SR cannot reference it")
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    query = _minimal(header)
    items: list[hd.sr.ContentItem] = [
        hd.sr.TextContentItem(codes.DCM.Comment, NOT_FOR_DIAGNOSIS, relationship_type=contains),
        hd.sr.TextContentItem(codes.DCM.AlgorithmName, about.model_id, relationship_type=contains),
        hd.sr.TextContentItem(codes.DCM.AlgorithmVersion, about.fingerprint, relationship_type=contains),
        hd.sr.TextContentItem(code("SCR-QKIND", "Query kind"), about.query_kind, relationship_type=contains),
        hd.sr.ImageContentItem(
            code("SCR-QIMG", "Query image"),
            referenced_sop_class_uid=str(header.SOPClassUID),
            referenced_sop_instance_uid=str(header.SOPInstanceUID),
            relationship_type=contains,
        ),
    ]
    if about.region:
        items.append(hd.sr.TextContentItem(code("SCR-ROI", "Query region"), about.region, relationship_type=contains))
    evidence = [query]
    seen = {str(header.SOPInstanceUID)}
    for match in matches:
        items.append(_container(_match_items(match)))
        listed = match.sop_uid and match.sop_class_uid and match.study_uid and match.series_uid
        if listed and match.sop_uid not in seen:
            seen.add(str(match.sop_uid))
            evidence.append(
                _reference(*map(str, (match.study_uid, match.series_uid, match.sop_uid, match.sop_class_uid)))
            )
    root = hd.sr.ContainerContentItem(code("SCR-RESULTS", "Similar case search results"))
    root.ContentSequence = hd.sr.ContentSequence(items)
    series_uid, sop_uid = sr_uids(header, matches, about)
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=root,
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer="medsearch",
        is_complete=True,
        series_description=SERIES_DESCRIPTION,
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "medsearch similar-case search concepts"
    scheme.CodingSchemeResponsibleOrganization = "medsearch"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr

"""What a DICOM object is, from its header alone: an image, a structured report, another non-image object."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]  # re-exported, not in __all__

# image: index it; structured_report: not an image (the ingest stage stores it as its study's report, a search
# upload of one is refused); non_image / directory: skip it with its SOP class named; unknown: no SOP class, a failure.
ObjectKind = Literal["image", "structured_report", "non_image", "directory", "unknown"]
SKIPPED_KINDS: frozenset[ObjectKind] = frozenset({"structured_report", "non_image", "directory"})
DIRECTORY = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage: a DICOMDIR
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class ObjectClass:
    """A DICOM object's kind and its SOP class (UID and the name people know it by)."""

    kind: ObjectKind
    sop_class_uid: str | None
    name: str

    @property
    def skipped(self) -> bool:
        """Not an image and not a failure: recorded as skipped under its SOP class name."""
        return self.kind in SKIPPED_KINDS


def sop_class_name(uid: str | None) -> str:
    """'Comprehensive SR Storage' for its UID; the UID itself when pydicom does not know it."""
    if not uid:
        return "no SOP class"
    entry = UID_dictionary.get(uid)
    return str(entry[0]) if entry else uid


def classify(
    sop_class_uid: str | None,
    *,
    has_pixel_data: bool,
    has_image_attributes: bool = False,
    media_class: str | None = None,
) -> ObjectClass:
    """Decide the kind of an object from its header: SOP Class UID, presence of pixel data, DICOMDIR media class.

    An image storage class without pixel data (or an object with Rows/Columns but no pixels) stays an "image":
    the decode stage then reports it as a truncated or stripped file, a failure, never a silent skip."""
    uid = sop_class_uid or media_class or None  # the file meta names the class when the dataset does not
    if DIRECTORY in (uid, media_class):
        return ObjectClass("directory", DIRECTORY, sop_class_name(DIRECTORY))
    name = sop_class_name(uid)
    if uid and "SR Storage" in name:
        return ObjectClass("structured_report", uid, name)
    if has_pixel_data or has_image_attributes or (uid and "Image Storage" in name):
        return ObjectClass("image", uid, name)
    if not uid:
        return ObjectClass("unknown", None, name)
    return ObjectClass("non_image", uid, name)


def classify_dataset(ds: Dataset) -> ObjectClass:
    """The kind of a parsed DICOM dataset (pixel data may be absent or left encoded)."""
    file_meta = getattr(ds, "file_meta", None)
    media = str(file_meta.get("MediaStorageSOPClassUID", "") or "") if file_meta is not None else ""
    try:
        uid = str(ds.get("SOPClassUID", "") or "").strip()
    except Exception:  # a malformed element: no class to go by
        uid = ""
    return classify(
        uid or None,
        has_pixel_data=any(tag in ds for tag in PIXEL_TAGS),
        has_image_attributes="Rows" in ds or "Columns" in ds,
        media_class=media or None,
    )


@cache
def storage_sop_classes() -> tuple[str, ...]:
    """Every storage SOP class a C-STORE SCP should accept: pynetdicom's list plus the retired ones pydicom names
    (Ultrasound Image Storage (Retired) and others), since `index` reads any of them."""
    from pynetdicom import AllStoragePresentationContexts

    found = {str(c.abstract_syntax) for c in AllStoragePresentationContexts if c.abstract_syntax}
    for uid, entry in UID_dictionary.items():
        name, kind = str(entry[0]), str(entry[1])
        if kind == "SOP Class" and "Storage" in name and "Commitment" not in name and uid != DIRECTORY:
            found.add(str(uid))
    return tuple(sorted(found, key=lambda u: [int(p) for p in u.split(".")]))

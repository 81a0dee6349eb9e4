"""What the audit log may say about a query's filters: which were used and their kinds, never free text."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel

from retrieval.vocabulary import filter_fields

# DICOM PS3.3 C.7.3.1.1.1 defined terms: a modality filter value that is one of these is a code, not free text
_CODES = (
    "AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS KER KO LEN LS MG MR "
    "M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT "
    "RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XC"
)
MODALITY_CODES = frozenset(_CODES.split())
CODE_LISTS = {"modality": MODALITY_CODES}  # list filters whose known codes may be logged as they are


_AUDIT_KIND = {
    "list": "list",
    "date": "date",
    "text": "text",
    "flag": "bool",
    "number": "number",
}  # vocabulary kind -> audit kind


# the filters and their audit kinds, in the vocabulary's order (read once: a query's audit line only looks them up)
_FILTERS = tuple((field["name"], _AUDIT_KIND[field["kind"]]) for field in filter_fields())


def audit_filters(params: BaseModel) -> dict[str, dict[str, Any]]:
    """The vocabulary's filters set in `params`: {name: {kind, value?}}; text values are never included, lists give
    their known codes (modality) and how many values were given."""
    out: dict[str, dict[str, Any]] = {}
    for name, kind in _FILTERS:
        value = getattr(params, name, None)
        if value is None or value == [] or value is False:
            continue
        entry: dict[str, Any] = {"kind": kind}
        if kind in ("date", "bool", "number"):
            entry["value"] = value.isoformat() if isinstance(value, date) else value
        elif kind == "list":
            entry["count"] = len(value)
            codes = CODE_LISTS.get(name)
            if codes is not None:
                entry["codes"] = sorted({str(v).upper() for v in value} & codes)
        out[name] = entry
    return out

"""Why a search came back empty: nothing indexed yet, or which filters match no image."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from retrieval.collection import Collection
from retrieval.store.repo import Filters

# how each restriction reads in a message (the others use their field name)
_NAMES = {"exclude_patient_hash": "exclude_same_patient", "exclude_study_uid": "exclude_same_study"}
_HIDDEN = {"exclude_patient_hash", "exclude_study_uid"}  # never print a patient hash or the query's UID


def active_filters(filters: Filters) -> dict[str, Any]:
    """The restrictions in use, by name, in a printable form (identifiers of the query hidden)."""
    active: dict[str, Any] = {}
    for item in fields(filters):
        value = getattr(filters, item.name)
        if value in (None, [], ""):
            continue
        name = _NAMES.get(item.name, item.name)
        if item.name in _HIDDEN:
            active[name] = True
        elif isinstance(value, list):
            active[name] = ",".join(map(str, value))
        else:
            active[name] = str(value)
    return active


def why_empty(collection: Collection, filters: Filters, offset: int = 0) -> str:
    """One sentence saying why a search with these filters has no hits."""
    index = collection.index
    if index is None or index.ntotal == 0:
        return "nothing indexed yet: add images with `medsearch index PATH` first"
    if filters.is_empty():
        more = f" after the first {offset}" if offset else ""
        return f"no other image to return{more}: the collection holds only {index.ntotal} image(s)"
    candidates = collection.catalog.candidate_ids(filters)
    if candidates is not None and len(candidates) > 0:
        more = f"after the first {offset} " if offset else ""
        return f"no further image {more}matches these filters ({_listing(active_filters(filters))})"
    empty_alone = []
    for item in fields(filters):
        value = getattr(filters, item.name)
        if value in (None, [], ""):
            continue
        alone = replace(Filters(), **{item.name: value})
        found = collection.catalog.candidate_ids(alone)
        if found is not None and len(found) == 0:
            empty_alone.append(_NAMES.get(item.name, item.name))
    active = active_filters(filters)
    verb = "matches" if len(empty_alone) == 1 else "each match"
    culprits = f"; on its own, {' and '.join(empty_alone)} {verb} nothing" if empty_alone else ""
    return f"no image matches these filters: {_listing(active)}{culprits}"


def _listing(active: dict[str, Any]) -> str:
    return ", ".join(name if value is True else f"{name}={value}" for name, value in active.items())

"""Queries of the API load benchmark: search-by-id, text (new and repeated) and uploads (repeated, indexed, new)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom

from retrieval import query as engine
from retrieval.collection import Collection

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "samples" / "CT_small.dcm"  # 128x128, uncompressed
TEXTS = (
    "chest x-ray showing right lower lobe consolidation",
    "normal chest radiograph",
    "ct of the abdomen with contrast",
    "mri brain t2 flair hyperintensity",
    "pleural effusion on the left side",
    "fracture of the distal radius",
    "ultrasound of the liver",
    "mammogram with calcifications",
    "pneumothorax",
    "cardiomegaly",
    "pulmonary nodule",
    "left lower lobe atelectasis with small effusion",
)


@dataclass
class Route:
    """One kind of query: its payload for request i, the bare library call and the HTTP request."""

    name: str
    payload: Callable[[int], object]
    library: Callable[[object], list[int]]
    api: Callable[[Any, object], list[int]]  # an httpx.Client or bench/lean_http.py's LeanClient


@lru_cache(maxsize=1)
def _sample() -> tuple[bytes, npt.NDArray[np.int16]]:
    ds = pydicom.dcmread(SAMPLE)
    return SAMPLE.read_bytes(), ds.pixel_array.copy()


def same_pixels(i: int) -> bytes:
    """The indexed sample with another Study Description: new bytes, the very same pixels."""
    ds = pydicom.dcmread(SAMPLE)
    ds.StudyDescription = f"variant {i}"
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def new_pixels(i: int) -> bytes:
    """The sample with its pixels shifted by i + 1 places: an image nobody indexed or asked for before."""
    ds = pydicom.dcmread(SAMPLE)
    pixels = _sample()[1]
    ds.PixelData = np.roll(pixels.ravel(), i % (pixels.size - 1) + 1).reshape(pixels.shape).tobytes()
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


# the routes' names, in the order they run (--route takes a name or its 1-based number); the published figures use them
ROUTE_NAMES = (
    "search-by-id",
    "text, new each time",
    "text, 12 repeated",
    "upload, repeated file",
    "upload, indexed pixels",
    "upload, new pixels",
)


def make_routes(collection: Collection, ids: npt.NDArray[np.int64], k: int) -> list[Route]:
    """Every route, each with its bare library call and its HTTP request."""

    def hit_ids(hits: list[engine.Hit]) -> list[int]:
        return [h.image.id for h in hits]

    def json_ids(resp: Any) -> list[int]:
        resp.raise_for_status()
        return [h["id"] for h in resp.json()["hits"]]

    def lib_id(image_id: object) -> list[int]:
        return hit_ids(engine.search(collection, engine.embed_id(collection, int(image_id)), k=k))  # type: ignore[call-overload]

    def api_id(client: Any, image_id: object) -> list[int]:
        return json_ids(client.get(f"/v1/images/{image_id}/similar", params={"k": k}))

    def lib_text(text: object) -> list[int]:
        return hit_ids(engine.search(collection, engine.embed_text(collection, str(text)), k=k))

    def api_text(client: Any, text: object) -> list[int]:
        return json_ids(client.post("/v1/search/text", json={"text": text, "k": k}))

    def lib_upload(data: object) -> list[int]:
        assert isinstance(data, bytes)
        return hit_ids(engine.search(collection, engine.embed_image(collection, data), k=k))

    def api_upload(client: Any, data: object) -> list[int]:
        assert isinstance(data, bytes)
        return json_ids(client.post("/v1/search/image", files={"file": ("q.dcm", data)}, data={"k": str(k)}))

    by_id, text_new, text_repeated, upload_repeated, upload_indexed, upload_new = ROUTE_NAMES
    return [
        Route(by_id, lambda i: int(ids[(i * 7919) % len(ids)]), lib_id, api_id),
        Route(text_new, lambda i: f"{TEXTS[i % len(TEXTS)]} ({i})", lib_text, api_text),
        Route(text_repeated, lambda i: TEXTS[i % len(TEXTS)], lib_text, api_text),
        Route(upload_repeated, lambda i: _sample()[0], lib_upload, api_upload),
        Route(upload_indexed, same_pixels, lib_upload, api_upload),
        Route(upload_new, new_pixels, lib_upload, api_upload),
    ]

"""Calibration frames for int8: a spread of the collection's own indexed images, preprocessed as they were indexed."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from retrieval.imaging.preprocess import ImageProcessor
from retrieval.settings import Settings

log = logging.getLogger(__name__)


def collection_frames(settings: Settings, processor: ImageProcessor, limit: int) -> list[npt.NDArray[np.float32]]:
    """Up to `limit` indexed frames, evenly spread over the collection, read from their sources and prepared by
    the indexing code path (same frame, CT window and limits). Sources that can no longer be read are skipped."""
    from retrieval.errors import MedsearchError
    from retrieval.imaging.types import DecodeLimits
    from retrieval.prepare import prepare_bytes
    from retrieval.sources.read import read_source
    from retrieval.store.repo import Catalog

    with Catalog.open(settings.resolved_database_url) as catalog:
        rows = catalog.frame_refs()
    if len(rows) > limit:
        rows = [rows[int(i * len(rows) / limit)] for i in range(limit)]
    frames: list[npt.NDArray[np.float32]] = []
    for uri, frame in rows:
        try:
            prepared = prepare_bytes(
                read_source(uri, settings),
                processor,
                frames=int(frame),
                limits=DecodeLimits.of(settings),
                ct_window=settings.ct_window,
                ct_channels=settings.ct_channels,
            )
        except (MedsearchError, OSError) as exc:
            log.info("calibration skips an image whose source cannot be read (%s)", type(exc).__name__)
            continue
        frames.extend(prepared.pixel_values)
    log.info("int8 calibration: %d frames from the collection", len(frames))
    return frames

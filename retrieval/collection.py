"""An opened data folder: metadata catalog, vector index, patient salt and the (lazily loaded) encoder."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from retrieval.encoders.base import Encoder
from retrieval.encoders.medsiglip import MedSigLIPEncoder
from retrieval.errors import IndexBusyError
from retrieval.index.base import ReconcileReport, VectorIndex
from retrieval.index.factory import build_vector_index
from retrieval.privacy import load_or_create_salt
from retrieval.settings import Settings
from retrieval.store.db import make_engine, session_factory
from retrieval.store.repo import Catalog

log = logging.getLogger(__name__)
LOCK_FILE = ".writer.lock"


def build_encoder(settings: Settings) -> Encoder:
    """The encoder named by the settings (MedSigLIP or any SigLIP folder), not yet loaded."""
    return MedSigLIPEncoder(settings.model, settings.device)


class Collection:
    """Everything a search or an indexing run works on. The encoder loads on first use only."""

    def __init__(self, settings: Settings, encoder_factory: Callable[[Settings], Encoder] = build_encoder) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.resolved_database_url)
        self.catalog = Catalog(session_factory(self.engine))
        self.salt = load_or_create_salt(settings.data_dir, settings.patient_salt)
        self._encoder_factory = encoder_factory
        self._encoder: Encoder | None = None
        self._index: VectorIndex | None = None
        self._lock = threading.Lock()
        self.reconcile_report: ReconcileReport | None = None
        self.reopen_index()

    def reopen_index(self) -> None:
        """Open (and reconcile) the index for the model recorded in this folder, if one is recorded yet."""
        stored = self.catalog.fingerprint()
        if stored is not None:
            self._open_index(stored.width)

    def _open_index(self, width: int) -> None:
        index = build_vector_index(self.settings, width)
        self.reconcile_report = index.reconcile(self.catalog)
        self._index = index

    @property
    def encoder(self) -> Encoder:
        """The encoder, loaded once; its fingerprint is checked against (or recorded in) the store."""
        with self._lock:
            if self._encoder is None:
                encoder = self._encoder_factory(self.settings)
                fingerprint = encoder.fingerprint
                self.catalog.check_or_record_fingerprint(fingerprint)
                if self._index is None or self._index.width != fingerprint.width:
                    self._open_index(fingerprint.width)
                self._encoder = encoder
            return self._encoder

    @property
    def index(self) -> VectorIndex | None:
        """The vector index (None until a model has been recorded for this collection)."""
        return self._index

    def require_index(self) -> VectorIndex:
        """The vector index, opening it with the encoder's width when the collection is new."""
        if self._index is None:
            _ = self.encoder
        assert self._index is not None
        return self._index

    def save_index(self) -> None:
        """Persist the index if it changed (an `auto` FAISS index first switches type once it outgrows exact)."""
        upgrade = getattr(self._index, "maybe_upgrade", None)
        if upgrade is not None and self._index is not None and self._index.dirty:
            upgrade(self.catalog)
        if self._index is not None and self._index.dirty:
            self._index.save()

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """One writer at a time per data folder (released by the OS even on SIGKILL)."""
        path = Path(self.settings.data_dir) / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise IndexBusyError(
                    f"another medsearch process is writing to {self.settings.data_dir}; wait for it to finish"
                ) from exc
            yield
        finally:
            os.close(fd)

    def close(self) -> None:
        """Dispose of database connections."""
        self.engine.dispose()

"""An opened data folder: metadata catalog, vector index, patient salt and the encoder once it is loaded."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from sqlalchemy import Engine

from retrieval.embed_cache import CachedEmbedding, EmbedCache
from retrieval.encoders.base import Encoder
from retrieval.encoders.calibration import collection_frames
from retrieval.encoders.factory import build_encoder as _build_encoder
from retrieval.errors import (
    IndexBusyError,
    ModelLoadError,
    PreprocessingMismatchError,
    SaltMismatchError,
    SaltRequiredError,
)
from retrieval.index.base import ReconcileReport, VectorIndex
from retrieval.index.cases import CaseIndexes
from retrieval.index.factory import build_vector_index
from retrieval.index.slot import IndexSlot
from retrieval.privacy import load_or_create_salt, salt_check
from retrieval.settings import Settings
from retrieval.settings_errors import prepare_data_dir
from retrieval.standin_hint import with_standin_hint
from retrieval.store.db import make_engine, session_factory
from retrieval.store.fingerprint import ModelFingerprint
from retrieval.store.repo import Catalog

log = logging.getLogger(__name__)
T = TypeVar("T")
LOCK_FILE = ".writer.lock"


def build_encoder(settings: Settings) -> Encoder:
    """The encoder named by the settings (MedSigLIP or any SigLIP folder, on torch or OpenVINO), not yet loaded."""
    return _build_encoder(settings, calibration=lambda processor, limit: collection_frames(settings, processor, limit))


class Collection:
    """Everything a search or an indexing run works on.

    Opening one runs three steps, in this order: migrate the store's schema to the newest revision, check
    (or create) the patient-hash key, and reconcile the vector index with the stored vectors (when a model
    is recorded). The model is not loaded until `load_encoder()` is called. Use it as a context manager
    (`with Collection(settings) as collection:`) so the index, the encoder and the database connections are
    released when the block ends.

    The current index lives in one `IndexSlot`: a new index is opened and reconciled aside, then swapped in
    at once; the old one is closed when the last reader holding it (`leased_index()`) is done.
    """

    def __init__(self, settings: Settings, encoder_factory: Callable[[Settings], Encoder] = build_encoder) -> None:
        self.settings = settings
        self._encoder_factory = encoder_factory
        self._encoder: Encoder | None = None
        self._slot = IndexSlot()
        self._lock = threading.Lock()  # one encoder load at a time
        self._opening = threading.Lock()  # one index open at a time (taken inside `_lock`, never around it)
        # Query-time model calls (not decoding, caches or searches) run one at a time: the encoder already uses
        # every core. In the caller's thread: handing each call to one dedicated model thread was measured 2-4x
        # slower for small calls on a loaded machine (two extra thread wake-ups per call; BENCHMARKS.md).
        self._model_lock = threading.Lock()
        self.embed_cache: EmbedCache[CachedEmbedding] = EmbedCache(settings.embed_cache_size)
        self.reconcile_report: ReconcileReport | None = None
        self._cases: CaseIndexes | None = None  # the series and study indexes, opened with the image index
        self.engine = self._migrate()
        self.catalog = Catalog(session_factory(self.engine))
        # with MEDSEARCH_MODEL unset, the model this collection was built with (`model_note` says which)
        self.settings, self.model_note = remembered_model(settings, self.catalog.fingerprint())
        self.salt = self._check_salt()
        try:
            self.reopen_index()
        except BaseException:
            self.engine.dispose()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _migrate(self) -> Engine:
        """Step 1: the data folder and the store, its schema migrated to the newest revision."""
        prepare_data_dir(self.settings.data_dir)
        return make_engine(self.settings.resolved_database_url)

    def _check_salt(self) -> bytes:
        """Step 2: the PatientID hashing key; every process sharing one database must use the same one."""
        settings = self.settings
        if self.engine.dialect.name != "sqlite" and not settings.patient_salt:
            self.engine.dispose()
            raise SaltRequiredError(
                "a shared database needs the same patient-hash key on every machine: set MEDSEARCH_PATIENT_SALT "
                "to one secret of 32 characters or more (e.g. `openssl rand -hex 32`) wherever medsearch runs"
            )
        salt = load_or_create_salt(settings.data_dir, settings.patient_salt)
        if self.catalog.record_once("patient_salt_check", salt_check(salt)) != salt_check(salt):
            self.engine.dispose()
            raise SaltMismatchError(
                "this collection's PatientIDs were hashed with another key than the one in use, so same-patient "
                "exclusion would silently fail: use the MEDSEARCH_PATIENT_SALT (or the patient-salt file) the "
                "collection was indexed with"
            )
        return salt

    def reopen_index(self) -> None:
        """Step 3: open and reconcile the index for the model recorded in this folder, if one is recorded yet."""
        stored = self.catalog.fingerprint()
        if stored is not None:
            self._open_index(stored.width)

    def _open_index(self, width: int) -> None:
        """Open and reconcile a new index aside (searches go on with the current one), then swap it in."""
        with self._opening:
            index = build_vector_index(self.settings, width, self.catalog)
            try:
                report = index.reconcile(self.catalog)
            except BaseException:
                index.close()
                raise
            cases = CaseIndexes(self.settings, width, self.catalog.cases)
            try:
                cases.open()
            except BaseException:
                index.close()
                cases.close()
                raise
            self._slot.swap(index)
            old, self._cases = self._cases, cases
            if old is not None:
                old.close()
            self.reconcile_report = report

    def load_encoder(self) -> Encoder:
        """Load the model (once): its fingerprint is checked against (or recorded in) the store, and the index
        is opened at its width when the collection is new. Later calls return the loaded encoder (without the lock:
        a quick search on the service's event loop must not wait behind another thread's model load)."""
        loaded = self._encoder
        if loaded is not None:
            return loaded
        with self._lock:
            if self._encoder is None:
                encoder = self._encoder_factory(self.settings)
                try:
                    fingerprint = encoder.fingerprint
                except ModelLoadError as exc:
                    raise with_standin_hint(exc, self.settings) from exc
                self.catalog.check_or_record_fingerprint(fingerprint)
                self._check_ct_channels()
                current = self._slot.current
                if current is None or current.width != fingerprint.width:
                    self._open_index(fingerprint.width)
                self._encoder = encoder
            return self._encoder

    def _check_ct_channels(self) -> None:
        """A collection's CT slices are all embedded with one channel recipe: another one is refused by name."""
        wanted = self.settings.ct_channels
        stored = self.catalog.check_or_record_setting("ct_channels", wanted, before="window")
        if stored != wanted:
            raise PreprocessingMismatchError(
                f"this collection's CT images were embedded with MEDSEARCH_CT_CHANNELS={stored}, but "
                f"MEDSEARCH_CT_CHANNELS={wanted} is set: a collection cannot mix the two. Set "
                f"MEDSEARCH_CT_CHANNELS={stored}, or use another MEDSEARCH_DATA_DIR for {wanted} and index there."
            )

    def run_model(self, call: Callable[[], T]) -> T:
        """Run a query's model call, one at a time per collection."""
        with self._model_lock:
            return call()

    @property
    def encoder(self) -> Encoder:
        """The loaded encoder; reading it never loads weights (call `load_encoder()` first)."""
        if self._encoder is None:
            raise RuntimeError("the model is not loaded: call Collection.load_encoder() first")
        return self._encoder

    @property
    def loaded_encoder(self) -> Encoder | None:
        """The encoder if the model is loaded, else None (never loads it)."""
        return self._encoder

    @property
    def index(self) -> VectorIndex | None:
        """The current vector index (None until a model has been recorded for this collection), for a single
        call; a reader making several calls on one index takes `leased_index()` instead."""
        return self._slot.current

    @property
    def case_indexes(self) -> CaseIndexes | None:
        """The series and study indexes (None until a model has been recorded for this collection)."""
        return self._cases

    def leased_index(self) -> AbstractContextManager[VectorIndex | None]:
        """The current index, kept open for the block even if a newer one is swapped in meanwhile."""
        return self._slot.lease()

    def searches_locally(self) -> bool:
        """Whether a search now reads only this machine's memory and files, with nothing to wait for: a FAISS index
        no change holds or waits for, over the SQLite store (a PostgreSQL or Milvus round trip could stall)."""
        index = self._slot.current
        return index is not None and index.searchable_now() and self.engine.dialect.name == "sqlite"

    def require_index(self) -> VectorIndex:
        """The vector index, opening it with the encoder's width when the collection is new."""
        if self._slot.current is None:
            self.load_encoder()
        index = self._slot.current
        assert index is not None
        return index

    def save_index(self) -> None:
        """Persist the index if it changed (an `auto` FAISS index first switches type once it outgrows exact)."""
        index = self._slot.current
        if index is not None and index.dirty:
            index.maybe_upgrade(self.catalog)
            index.save()
        if self._cases is not None:
            self._cases.save()

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
        """Release the vector backend (once its readers are done), the model and the database connections."""
        self._slot.swap(None)
        if self._cases is not None:
            self._cases.close()
            self._cases = None
        with self._lock:
            self._encoder = None  # the model's memory goes with the last reference to it
        self.engine.dispose()


def remembered_model(settings: Settings, recorded: ModelFingerprint | None) -> tuple[Settings, str | None]:
    """The settings to use, with the recorded model when MEDSEARCH_MODEL is unset, and a note saying which."""
    if "model" in settings.model_fields_set or recorded is None or recorded.model_id == settings.model:
        return settings, None
    ref = recorded.model_id
    if Path(ref).is_absolute() and not Path(ref).is_dir():
        return settings, (
            f"this collection was built with the model {ref!r}, which is gone; MEDSEARCH_MODEL is unset, so "
            f"{settings.model!r} is tried: set MEDSEARCH_MODEL to a copy of the model the collection was built with"
        )
    return settings.model_copy(update={"model": ref}), (
        f"model {ref!r}: the one this collection was built with (MEDSEARCH_MODEL is unset)"
    )

"""What the service holds while it runs: the collection, freshness tracking, the thread policy, the summarizer."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from api.config import ServiceSettings
from retrieval.collection import Collection
from retrieval.errors import MedsearchError
from retrieval.summarize.service import SummaryService
from retrieval.threads import ThreadPolicy

log = logging.getLogger("medsearch.api")
WITHOUT_MODEL = (
    "model unavailable: search by indexed image id, similar images, thumbnails, tags and stats work; search by "
    "uploaded image or by text answers 503 model_unavailable until the model is fixed and the service restarted."
)


@dataclass
class ServiceState:
    """Owned by the lifespan and kept on app.state; no module globals."""

    settings: ServiceSettings
    collection: Collection
    key_ids: dict[str, str]
    threads: ThreadPolicy = field(default_factory=ThreadPolicy)
    model_error: str | None = None
    model_ready: bool = False
    summaries: SummaryService = field(default_factory=lambda: SummaryService(None))
    summary_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=2, thread_name_prefix="summary")
    )
    _fresh_lock: threading.Lock = field(default_factory=threading.Lock)
    _last_check: float = 0.0
    _seen: tuple[int, int] = (-1, -1)

    def warm_model(self) -> None:
        """Load the encoder once at start-up so the first query is fast; remember why if it fails."""
        if self.collection.model_note:
            log.info("%s", self.collection.model_note)
        try:
            self.collection.load_encoder()
            self.model_ready = True
            return
        except MedsearchError as exc:
            error = str(exc)
        except Exception as exc:  # a broken model folder must not take the service down
            error = f"the model could not be loaded: {type(exc).__name__}: {exc}"
        # said at start, in one line, not first met as a 503 on someone's query (and before /readyz reports it)
        log.warning("%s %s", WITHOUT_MODEL, " ".join(error.split()))
        self.model_error = error

    def refresh_due(self) -> bool:
        """Whether the last look at the store is older than MEDSEARCH_REFRESH_SECONDS (`refresh` would read it)."""
        return time.monotonic() - self._last_check >= self.settings.refresh_seconds

    def refresh(self, force: bool = False) -> None:
        """Pick up images indexed by another process since the last look (cheap: count and max id).

        Runs in the request that finds the last look older than MEDSEARCH_REFRESH_SECONDS; requests arriving
        meanwhile search what is there without waiting. What changed is read without the index's exclusive lock
        (`VectorIndex.sync`), so searches in other requests go on until the short apply; a collection whose
        model was recorded by another process gets its index opened aside and swapped in."""
        now = time.monotonic()
        if not force and now - self._last_check < self.settings.refresh_seconds:
            return
        if not self._fresh_lock.acquire(blocking=force):
            return  # another request is refreshing right now
        try:
            self._last_check = now
            seen = self.collection.catalog.change_marker()
            if seen == self._seen:
                return
            with self.collection.leased_index() as index:
                if index is None:
                    if self.collection.catalog.fingerprint() is None:
                        return
                    self.collection.reopen_index()
                else:
                    index.sync(self.collection.catalog)
                    if self.collection.case_indexes is not None:
                        self.collection.case_indexes.catch_up()
            self._seen = seen
        finally:
            self._fresh_lock.release()

"""The summary front: the configured backend behind the cache, for the API and the CLI alike."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from retrieval.summarize.base import (
    NOTICE,
    Summarizer,
    SummarizerDisabledError,
    Summary,
    SummaryRequest,
)
from retrieval.summarize.cache import SummaryCache

DISABLED_HELP = (
    "summaries are off: set MEDSEARCH_SUMMARIZER=transformers (a local MedGemma) or "
    "MEDSEARCH_SUMMARIZER=openai with MEDSEARCH_SUMMARY_URL (a vLLM/TGI server); see docs/summaries.md"
)


@dataclass
class SummaryStream:
    """A summary on its way: the ids it compares (known before the first word), whether cached, the chunks."""

    compared_ids: list[int]
    model: str
    cached: bool
    chunks: Iterator[str]
    notice: str = NOTICE


class SummaryService:
    """Runs summaries through one backend (or refuses clearly when none is configured), caching results."""

    def __init__(self, summarizer: Summarizer | None, cache_size: int = 64, backend: str = "none") -> None:
        self.summarizer = summarizer
        self.backend = backend if summarizer is not None else "none"
        self.cache = SummaryCache(cache_size)

    @property
    def enabled(self) -> bool:
        return self.summarizer is not None

    def require(self) -> Summarizer:
        """The backend, or SummarizerDisabledError saying how to turn summaries on."""
        return self._backend()

    def _backend(self) -> Summarizer:
        if self.summarizer is None:
            raise SummarizerDisabledError(DISABLED_HELP)
        return self.summarizer

    def summarize(self, request: SummaryRequest) -> Summary:
        backend = self._backend()
        key = self.cache.key(request.query_key, request.match_ids, backend.model)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        summary = backend.summarize(request)
        self.cache.put(key, summary)
        return summary

    def stream(self, request: SummaryRequest) -> SummaryStream:
        """Everything that can fail before the first word (disabled, budget, connection) fails here."""
        backend = self._backend()
        key = self.cache.key(request.query_key, request.match_ids, backend.model)
        hit = self.cache.get(key)
        if hit is not None:
            return SummaryStream(hit.compared_ids, hit.model, True, iter([hit.text]))
        fitted = backend.fit(request)
        chunks = backend.stream(fitted)
        compared = fitted.match_ids

        def relay() -> Iterator[str]:
            parts: list[str] = []
            try:
                for chunk in chunks:
                    parts.append(chunk)
                    yield chunk
            finally:  # closing the relay (the reader left) closes the backend's stream, which stops generating
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            # only a complete summary is cached (an error or a cancel above never gets here)
            self.cache.put(key, Summary(text="".join(parts).strip(), compared_ids=compared, model=backend.model))

        return SummaryStream(compared, backend.model, False, relay())

    def close(self) -> None:
        """Release the backend's connections (the OpenAI-compatible client), if it holds any."""
        close = getattr(self.summarizer, "close", None)
        if close is not None:
            close()

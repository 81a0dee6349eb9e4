"""The Summarizer protocol, its request and answer types, the fixed notice and the summary errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image as PILImage

from retrieval.errors import MedsearchError

NOTICE = (
    "Not for diagnosis: a machine-written comparison of similar prior cases, for research and decision support "
    "only. It can be wrong or incomplete; a qualified clinician must read the images and reports themselves."
)


class SummarizerDisabledError(MedsearchError):
    """No summarizer is configured (MEDSEARCH_SUMMARIZER=none)."""

    code = "summarizer_disabled"
    status = 501
    title = "Summaries are off"


class SummaryUnavailableError(MedsearchError):
    """The summary model cannot be loaded, or the summary server is down or refuses the request."""

    code = "summarizer_unavailable"
    status = 503
    title = "Summarizer unavailable"


class SummaryTimeoutError(MedsearchError):
    """The summary did not arrive within MEDSEARCH_SUMMARY_TIMEOUT_SECONDS."""

    code = "summary_timeout"
    status = 504
    title = "Summary timed out"


class SummaryBadReplyError(MedsearchError):
    """The summary server answered with something that is not a chat completion (bad JSON, broken stream)."""

    code = "summary_bad_reply"
    status = 502
    title = "Summarizer gave a bad reply"


class SummaryTooLongError(MedsearchError):
    """Even the query and one match do not fit the model's context."""

    code = "summary_too_long"
    status = 400
    title = "Summary request too long"


@dataclass
class SummaryCase:
    """One image in the prompt: the picture plus what the prompt says about it (no patient identifiers)."""

    picture: PILImage.Image
    image_id: int | None = None
    score: float | None = None
    modality: str | None = None
    body_part: str | None = None
    study_date: str | None = None
    label: str | None = None
    report: str | None = None


@dataclass
class SummaryRequest:
    """The query (an image and/or a text) and its top matches, best first; `query_key` identifies the query."""

    matches: list[SummaryCase]
    query_key: str
    query: SummaryCase | None = None
    query_text: str | None = None

    @property
    def match_ids(self) -> list[int]:
        return [m.image_id for m in self.matches if m.image_id is not None]

    def shrinking(self) -> Iterator[SummaryRequest]:
        """This request, then with one match fewer each time, down to one match (for fitting a token budget)."""
        for n in range(len(self.matches), 0, -1):
            yield SummaryRequest(
                matches=self.matches[:n], query_key=self.query_key, query=self.query, query_text=self.query_text
            )


@dataclass
class Summary:
    """The model's answer, the cases it compared (ids, in prompt order) and the fixed notice."""

    text: str
    compared_ids: list[int]
    model: str
    notice: str = NOTICE
    cached: bool = False
    prompt_tokens: int | None = None
    dropped_ids: list[int] = field(default_factory=list)


class Summarizer(Protocol):
    """A backend that writes a comparative summary; `stream` yields text chunks as they are generated."""

    @property
    def model(self) -> str: ...

    def fit(self, request: SummaryRequest) -> SummaryRequest:
        """The request trimmed (matches dropped from the end) to the model's token budget."""
        ...

    def summarize(self, request: SummaryRequest) -> Summary: ...

    def stream(self, request: SummaryRequest) -> Iterator[str]: ...

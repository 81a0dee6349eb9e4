"""De-identification of report text: the values the study's headers name, then Microsoft Presidio's recognizers
(offline: a blank spaCy tokenizer, no NER model) with house patterns for names after titles, addresses and IDs."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from retrieval.imaging.sr_text import Identifiers

log = logging.getLogger(__name__)
# what Presidio finds that we replace (its other recognizers, e.g. US_BANK_NUMBER on any 8 digits, are noise here)
ENTITIES: tuple[str, ...] = ("PERSON", "PHONE_NUMBER", "EMAIL_ADDRESS", "DATE_TIME", "URL", "US_SSN", "IP_ADDRESS")
ENTITIES += ("CREDIT_CARD", "IBAN_CODE", "MEDICAL_ID", "STREET_ADDRESS", "ZIP_CODE", "TITLED_NAME")
MIN_SCORE = 0.3
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
_NAME = r"[A-Z][A-Za-z'-]+"
_ID = r"[A-Z0-9-]*\d[A-Z0-9-]*\b"
_STREET = r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Square)"
# (entity, name, regex, score): house patterns Presidio runs beside its own
HOUSE_PATTERNS = (
    ("DATE_TIME", "month name date", rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b", 0.6),
    ("DATE_TIME", "day month year", rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\s+\d{{4}}\b", 0.6),
    ("DATE_TIME", "numeric date", r"\b\d{1,4}[/.-]\d{1,2}[/.-]\d{2,4}\b", 0.5),
    (
        "MEDICAL_ID",
        "labelled id",
        r"(?i)\b(?:MRN|ID|acc(?:ession)?(?:\s+(?:no|number))?|record)\s*[:#.]?\s*[A-Z0-9-]*\d[A-Z0-9-]*\b",
        0.6,
    ),
    ("MEDICAL_ID", "long number", r"\b\d{6,}\b", 0.4),
    ("STREET_ADDRESS", "street", rf"\b\d{{1,5}}\s+(?:[A-Z][a-z]+\s+){{1,3}}{_STREET}\b\.?", 0.6),
    ("ZIP_CODE", "state and zip", r"\b[A-Z]{2}\s+\d{5}(?:-\d{4})?\b", 0.6),
    (
        "TITLED_NAME",
        "title and name",
        r"\b(?:Dr|Mr|Mrs|Ms|Miss|Prof)\.?\s+[A-Z][A-Za-z'-]+(?:\s+[A-Z][A-Za-z'-]+)?",
        0.6,
    ),
    (
        "TITLED_NAME",
        "labelled name",
        r"(?:Patient|Name|Signed|Dictated by|Read by)\s*:\s*[A-Z][A-Za-z'-]+(?:\s+[A-Z][A-Za-z'-]+){0,2}",
        0.6,
    ),
)
HEADER_LABELS = {"names": "[NAME]", "ids": "[ID]", "places": "[PLACE]", "dates": "[DATE]"}


@dataclass(frozen=True)
class Scrubbed:
    """De-identified text and how many spans were replaced."""

    text: str
    replaced: int


def scrub(text: str, known: Identifiers | None = None) -> Scrubbed:
    """`text` with the header-known values, then everything the tool recognises, replaced by [KIND] placeholders."""
    count = 0
    if known is not None:
        text, count = scrub_known(text, known)
    spans = _engine().find(text)
    for start, end, entity in sorted(spans, reverse=True):
        text = text[:start] + f"[{entity}]" + text[end:]
    return Scrubbed(text, count + len(spans))


def scrub_known(text: str, known: Identifiers) -> tuple[str, int]:
    """Replace each header-known value (whole words, any case, any spacing) by its kind's placeholder."""
    total = 0
    for kind, label in HEADER_LABELS.items():
        values: Iterable[str] = getattr(known, kind)
        pattern = _alternatives(values)
        if pattern is not None:
            text, n = pattern.subn(label, text)
            total += n
    return text, total


def _alternatives(values: Iterable[str]) -> re.Pattern[str] | None:
    words = sorted({v.strip() for v in values if v and v.strip()}, key=len, reverse=True)  # longest first
    if not words:
        return None
    parts = [r"\s+".join(re.escape(w) for w in value.split()) for value in words]
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


class _Engine:
    """Presidio's AnalyzerEngine on a blank spaCy tokenizer, made once per process (about a second)."""

    def __init__(self) -> None:
        import presidio_analyzer as analyzer
        import presidio_analyzer.nlp_engine as nlp_engines
        import spacy

        _offline_tldextract()

        class BlankEngine(nlp_engines.SpacyNlpEngine):  # type: ignore[misc]
            """A tokenizer only: Presidio would otherwise download a spaCy NER model."""

            def load(self) -> None:
                self.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]

        nlp = BlankEngine(models=[{"lang_code": "en", "model_name": "blank"}])
        nlp.load()
        registry = analyzer.RecognizerRegistry()
        presidio_log = logging.getLogger("presidio-analyzer")
        level = presidio_log.level
        presidio_log.setLevel(logging.ERROR)  # one warning per recognizer of another language: noise, not news
        try:
            registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp)
        finally:
            presidio_log.setLevel(level)
        for entity, name, regex, score in HOUSE_PATTERNS:
            pattern = analyzer.Pattern(name=name, regex=regex, score=score)
            registry.add_recognizer(analyzer.PatternRecognizer(supported_entity=entity, patterns=[pattern]))
        self.analyzer: Any = analyzer.AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=["en"])

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping (start, end, entity) spans to replace."""
        if not text.strip():
            return []
        results = self.analyzer.analyze(text=text, language="en", entities=list(ENTITIES), score_threshold=MIN_SCORE)
        spans = sorted(((r.start, r.end, str(r.entity_type)) for r in results), key=lambda s: (s[0], -s[1]))
        kept: list[tuple[int, int, str]] = []
        for start, end, entity in spans:  # widest first at each start; drop spans inside a kept one
            if kept and start < kept[-1][1]:
                if end > kept[-1][1]:
                    kept[-1] = (kept[-1][0], end, kept[-1][2])
                continue
            kept.append((start, end, entity))
        return kept


def _offline_tldextract() -> None:
    """Presidio's e-mail check calls tldextract, which fetches the public suffix list on first use: use its
    bundled snapshot instead (nothing may be downloaded at run time)."""
    import tldextract.tldextract as tld

    tld.TLD_EXTRACTOR = tld.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


_ENGINE: list[_Engine] = []
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    with _ENGINE_LOCK:
        if not _ENGINE:
            _ENGINE.append(_Engine())
        return _ENGINE[0]

"""Negated findings in report text: negspacy's NegEx (its clinical term set, on a blank spaCy tokenizer with a
sentencizer: no model download) marks every word in a negation's scope; words match only the affirmed rest."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

SPAN_KEY = "medsearch_words"
# radiology's after-the-finding negations ("Pneumothorax is not seen."), added to negspacy's clinical term set
FOLLOWING = [
    f"{verb} {what}"
    for verb in ("is not", "are not", "not")
    for what in ("seen", "identified", "present", "demonstrated", "visualized", "evident", "appreciated")
]
FOLLOWING += ["is absent", "are absent", "is excluded", "are excluded", "ruled out", "has resolved", "have resolved"]


@dataclass(frozen=True)
class Negation:
    """A report split for matching: the text less the negated words, and the negated phrases (one per line)."""

    affirmed: str
    negated: str


def split_negated(text: str) -> Negation:
    """Which words of `text` a negation covers ("No pneumothorax or effusion." covers both findings)."""
    if not text.strip():
        return Negation("", "")
    return _pipeline().split(text)


class _Pipeline:
    def __init__(self) -> None:
        import negspacy.negation  # noqa: F401  # registers the "negex" factory
        import negspacy.termsets as termsets
        import spacy

        self.nlp: Any = spacy.blank("en")
        self.sentencizer = self.nlp.add_pipe("sentencizer")
        terms: Any = termsets.termset("en_clinical")  # type: ignore[no-untyped-call]
        terms.add_patterns({"following_negations": FOLLOWING})
        patterns = terms.get_patterns()
        self.negex = self.nlp.add_pipe("negex", config={"neg_termset": patterns, "span_keys": [SPAN_KEY]})
        self.lock = threading.Lock()  # spaCy components are not documented as thread-safe

    def split(self, text: str) -> Negation:
        with self.lock:
            doc = self.sentencizer(self.nlp.make_doc(text))
            doc.spans[SPAN_KEY] = [doc[i : i + 1] for i, token in enumerate(doc) if token.is_alpha or token.is_digit]
            self.negex(doc)
            negated = {span.start for span in doc.spans[SPAN_KEY] if span._.negex}
        affirmed: list[str] = []
        phrases: list[list[str]] = []
        for token in doc:
            if token.i not in negated:
                affirmed.append(token.text_with_ws)
                continue
            if token.i - 1 not in negated or not phrases:
                phrases.append([])
            phrases[-1].append(token.text)
            affirmed.append(" ")
        return Negation(" ".join("".join(affirmed).split()), "\n".join(" ".join(p) for p in phrases))


_PIPELINE: list[_Pipeline] = []
_PIPELINE_LOCK = threading.Lock()


def _pipeline() -> _Pipeline:
    with _PIPELINE_LOCK:
        if not _PIPELINE:
            _PIPELINE.append(_Pipeline())
        return _PIPELINE[0]

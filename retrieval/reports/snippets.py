"""A hit's report snippet: the stored (de-identified) text around the report query's words, their places marked
(character ranges, never markup: whoever shows it escapes the text), negated mentions left unmarked."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from retrieval.store.report_search import Node, Term

WIDTH = 240  # characters of report a snippet shows
LEAD = 60  # of them, at most this many before the first marked word
_WORD = re.compile(r"[^\W_]+")  # the words the full-text index sees (report_search's rule, FTS5 unicode61's)


@dataclass(frozen=True)
class Snippet:
    """Part of a report (`text`), the [start, end) character ranges of the query's words in it, and whether the
    report goes on before and after it."""

    text: str
    highlights: list[tuple[int, int]] = field(default_factory=list)
    cut_start: bool = False
    cut_end: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "highlights": [list(pair) for pair in self.highlights],
            "cut_start": self.cut_start,
            "cut_end": self.cut_end,
        }


def terms_of(node: Node | None) -> list[Term]:
    """Every term of a report query (its AND/OR structure aside: each mention of any of them is marked)."""
    if node is None:
        return []
    if isinstance(node, Term):
        return [node]
    return [term for part in node.parts for term in terms_of(part)]


def make_snippet(text: str, negated: str = "", query: Node | None = None, width: int = WIDTH) -> Snippet:
    """The snippet of a report: around the first affirmed mention of a query term (marked with the others in the
    window), else the report's first `width` characters. `negated` is the stored negated phrases (one a line):
    a mention inside one ("No pneumothorax") is not marked, as it did not match."""
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]
    marks = _marks(words, _negated_words(words, negated), terms_of(query))
    start = 0
    if marks:
        start = max(0, marks[0][0] - LEAD)
        if start:  # begin at a word (or sentence) start, not inside one
            sentence = text.rfind(". ", start, marks[0][0])
            start = sentence + 2 if sentence >= 0 else next((s for s, _, _ in words if s >= start), start)
    end = min(len(text), start + width)
    if end < len(text):  # end after a whole word
        end = max((e for _, e, _ in words if start < e <= end), default=end)
    shown = [(s - start, e - start) for s, e in marks if s >= start and e <= end]
    return Snippet(text[start:end], shown, start > 0, end < len(text))


def _negated_words(words: list[tuple[int, int, str]], negated: str) -> set[int]:
    """Indexes of the report's words that the stored negated phrases cover, each phrase found in order."""
    out: set[int] = set()
    cursor = 0
    for line in negated.splitlines():
        phrase = [w.lower() for w in _WORD.findall(line)]
        if not phrase:
            continue
        at = _find(words, phrase, cursor, prefix=False)
        if at is None:
            at = _find(words, phrase, 0, prefix=False)
        if at is not None:
            out.update(range(at, at + len(phrase)))
            cursor = at + len(phrase)
    return out


def _find(words: list[tuple[int, int, str]], phrase: list[str], begin: int, *, prefix: bool) -> int | None:
    for at in range(begin, len(words) - len(phrase) + 1):
        if _matches(words, at, phrase, prefix):
            return at
    return None


def _matches(words: list[tuple[int, int, str]], at: int, phrase: list[str], prefix: bool) -> bool:
    for offset, wanted in enumerate(phrase):
        word = words[at + offset][2]
        last = offset == len(phrase) - 1
        if not (word == wanted or (prefix and last and word.startswith(wanted))):
            return False
    return True


def _marks(words: list[tuple[int, int, str]], negated: set[int], terms: list[Term]) -> list[tuple[int, int]]:
    """Character ranges of every affirmed mention of a term (a phrase as one range), in text order."""
    found: set[tuple[int, int]] = set()
    for term in terms:
        size = len(term.words)
        for at in range(len(words) - size + 1):
            covered = range(at, at + size)
            if _matches(words, at, list(term.words), term.prefix) and not negated.intersection(covered):
                found.add((words[at][0], words[at + size - 1][1]))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):  # "pleural effusion" and effusion* mark one range, not two overlapping
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged

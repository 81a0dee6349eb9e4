"""Reference-case context: among a search's hits, the score-weighted share of each label, tag, positive probe
and report finding ("6 of 10 similar cases: consolidation"), read from what the hits already carry (no query)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from retrieval.query import Hit
from retrieval.reports.findings_terms import findings_in

NOTICE = (
    "Not for diagnosis: what similar prior cases were labelled, tagged and reported, weighted by their similarity "
    "to the query, for research and decision support only. Similar is not the same diagnosis."
)
WEIGHTING = (
    "each hit weighs its score (cosine, below 0 counted as 0; all hits equal when every score is 0); share = the "
    "weight of the hits with the item / the weight of all hits"
)
PROBE_POSITIVE = 0.5  # a probe's outcome is positive at this probability or above
MAX_ITEMS = 10  # of each kind, the most frequent


@dataclass(frozen=True)
class ContextItem:
    """One label, tag, probe or finding: in how many hits (`count` of `of`) and its score-weighted share."""

    name: str
    count: int
    of: int
    share: float
    summary: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "count": self.count, "of": self.of, "share": self.share, "summary": self.summary}


@dataclass(frozen=True)
class Context:
    """The context block of a search answer."""

    hits: int
    with_report: int  # hits whose study has a stored report (findings are counted among all hits)
    labels: list[ContextItem] = field(default_factory=list)
    tags: list[ContextItem] = field(default_factory=list)
    probes: list[ContextItem] = field(default_factory=list)
    findings: list[ContextItem] = field(default_factory=list)
    notice: str = NOTICE
    weighting: str = WEIGHTING

    def as_dict(self) -> dict[str, object]:
        return {
            "hits": self.hits,
            "with_report": self.with_report,
            "labels": [item.as_dict() for item in self.labels],
            "tags": [item.as_dict() for item in self.tags],
            "probes": [item.as_dict() for item in self.probes],
            "findings": [item.as_dict() for item in self.findings],
            "notice": self.notice,
            "weighting": self.weighting,
        }


def reference_context(hits: Sequence[Hit]) -> Context:
    """The context of these hits (a search's answer): labels, tags, positive probe outcomes and the findings of
    their studies' latest reports, each with its count and score-weighted share, the most frequent first."""
    weights = [max(hit.score, 0.0) for hit in hits]
    if not any(weights):
        weights = [1.0] * len(hits)
    total = sum(weights) or 1.0
    what = _noun(hits)

    def items(of_hit: Callable[[Hit], Iterable[str]]) -> list[ContextItem]:
        count: dict[str, int] = {}
        weight: dict[str, float] = {}
        for hit, w in zip(hits, weights, strict=True):
            for name in set(of_hit(hit)):
                count[name] = count.get(name, 0) + 1
                weight[name] = weight.get(name, 0.0) + w
        ordered = sorted(count, key=lambda name: (-weight[name], -count[name], name))[:MAX_ITEMS]
        of = len(hits)
        return [
            ContextItem(name, count[name], of, round(weight[name] / total, 4), f"{count[name]} of {of} {what}: {name}")
            for name in ordered
        ]

    return Context(
        hits=len(hits),
        with_report=sum(1 for hit in hits if hit.stored_report is not None),
        labels=items(lambda hit: [hit.image.label] if hit.image.label else []),
        tags=items(lambda hit: hit.tags),
        probes=items(lambda hit: [name for name, p in hit.probes.items() if p >= PROBE_POSITIVE]),
        findings=items(lambda hit: findings_in(hit.stored_report.affirmed) if hit.stored_report else ()),
    )


def _noun(hits: Sequence[Hit]) -> str:
    level = hits[0].case.level if hits and hits[0].case else "image"
    return {"image": "similar images", "series": "similar series", "study": "similar studies"}[level]

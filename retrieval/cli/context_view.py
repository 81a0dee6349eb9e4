"""The context block and report snippets under the hits table (report text printed as text, never as markup)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text

from retrieval.context import Context

HIGHLIGHT = "bold reverse"


def snippet_text(snippet: Any) -> Text:
    """A snippet with its marked words styled (the report's own characters are never read as rich markup)."""
    text = Text(("… " if snippet.cut_start else "") + snippet.text + (" …" if snippet.cut_end else ""))
    shift = 2 if snippet.cut_start else 0
    for start, end in snippet.highlights:
        text.stylize(HIGHLIGHT, start + shift, end + shift)
    return text


def snippet_lines(hits: Sequence[Any]) -> list[Text]:
    """'#1 report: …' for each hit with a report snippet."""
    lines: list[Text] = []
    for hit in hits:
        if hit.snippet is not None:
            lines.append(Text(f"#{hit.rank} report: ", style="dim") + snippet_text(hit.snippet))
    return lines


def context_lines(context: Context) -> list[Text]:
    """The context block: findings, labels, tags and positive probes (count of hits, weighted share), and the
    not-for-diagnosis notice."""
    lines = [Text(f"Context of these {context.hits} hits ({context.with_report} with a report):", style="bold")]
    for title, items in (
        ("findings", context.findings),
        ("labels", context.labels),
        ("tags", context.tags),
        ("probes", context.probes),
    ):
        if items:
            parts = [f"{item.summary} ({item.share:.0%})" for item in items]
            lines.append(Text(f"  {title}: " + "; ".join(parts)))
    lines.append(Text(context.notice, style="yellow"))
    return lines

"""The `duplicates` command: sets of near-duplicate images (practically identical vectors)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from retrieval.cli.common import DataDir, app, fail, open_collection, out, say
from retrieval.cli.tables import file_name
from retrieval.errors import MedsearchError


@app.command()
def duplicates(
    threshold: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Cosine from which images are copies (default MEDSEARCH_DUPLICATE_THRESHOLD)."
        ),
    ] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Whole source paths.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the sets as JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """List sets of near-duplicate images (the copies search results fold into one hit)."""
    from retrieval.duplicates import find_sets

    try:
        collection = open_collection(data_dir)
        limit = collection.settings.duplicate_threshold if threshold is None else threshold
        index = collection.index
        sets = [] if index is None or index.ntotal == 0 else find_sets(collection.catalog, index, limit)
        rows = collection.catalog.images([i for s in sets for i in s.ids])
    except MedsearchError as exc:
        fail(exc)
        return
    sources = [[rows[i].source_uri for i in s.ids if i in rows] for s in sets]
    report = [
        {"ids": s.ids, "min_cosine": round(s.min_cosine, 6), "sources": where}
        for s, where in zip(sets, sources, strict=True)
    ]
    if as_json:
        out.print_json(json.dumps({"threshold": limit, "sets": report}))
        return
    if not sets:
        say(f"no near-duplicates (cosine >= {limit}) among {index.ntotal if index is not None else 0} images")
        return
    table = Table(title=f"{len(sets)} sets of near-duplicates (cosine >= {limit})")
    for column in ("set", "ids", "cosine", "sources"):
        table.add_column(column, no_wrap=column != "sources", overflow="fold")
    for number, (item, where) in enumerate(zip(sets, sources, strict=True), start=1):
        shown = where if wide else [file_name(s) for s in where]
        table.add_row(str(number), ", ".join(map(str, item.ids)), f"{item.min_cosine:.4f}", "\n".join(shown))
    out.print(table)
    say(f"{sum(len(s.ids) - 1 for s in sets)} copies in {len(sets)} sets; search folds them unless --show-duplicates")

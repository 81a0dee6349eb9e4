"""The demo job: pick the model (real or offline stand-in), index the samples, run two queries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from indexer.pipeline import IndexOptions, IndexSummary, Progress, run_index
from retrieval import query as engine
from retrieval.collection import Collection, build_encoder
from retrieval.encoders.base import Encoder
from retrieval.encoders.standin import build_standin_model
from retrieval.errors import ModelLoadError
from retrieval.labels import load_labels
from retrieval.settings import Settings

DEMO_IMAGE = "RG1_J2KI.dcm"
DEMO_TEXT = "chest x-ray"


@dataclass
class DemoResult:
    """What the demo did, for the CLI to print."""

    model: str
    fallback_reason: str | None
    data_dir: Path
    summary: IndexSummary
    image_query: Path
    image_hits: list[engine.Hit]
    text_query: str
    text_hits: list[engine.Hit]


def choose_model(settings: Settings) -> tuple[Settings, Encoder | None, str | None]:
    """The configured model, loaded, if it loads; otherwise a stand-in built in the data folder (and why)."""
    try:
        encoder = build_encoder(settings)
        encoder.fingerprint  # noqa: B018  # loads the model: does it load here?
        return settings, encoder, None
    except ModelLoadError as exc:
        folder = settings.data_dir / "standin-model"
        if not (folder / "config.json").exists():
            build_standin_model(folder)
        return settings.model_copy(update={"model": str(folder)}), None, str(exc)


def run_demo(samples: Path, settings: Settings, progress: Progress | None = None) -> DemoResult:
    """Index `samples` into a demo collection and query it by image and by text."""
    chosen, loaded, reason = choose_model(settings)
    demo_dir = settings.data_dir / ("demo-standin" if reason else "demo")
    chosen = chosen.model_copy(update={"data_dir": demo_dir})
    # the model loaded to check it is available is the one the collection uses: never load it twice
    collection = Collection(chosen) if loaded is None else Collection(chosen, lambda _settings: loaded)
    labels_file = samples / "labels.csv"
    options = IndexOptions(
        workers=chosen.workers,
        batch_size=chosen.batch_size,
        labels=load_labels(labels_file) if labels_file.exists() else None,
    )
    summary = run_index(collection, [samples], options, progress)
    image_path = samples / DEMO_IMAGE
    if not image_path.exists():
        image_path = next(p for p in sorted(samples.iterdir()) if p.suffix.lower() == ".dcm")
    image_hits = engine.search(collection, engine.embed_image(collection, image_path.read_bytes()), k=5)
    text_hits = engine.search(collection, engine.embed_text(collection, DEMO_TEXT), k=5)
    return DemoResult(chosen.model, reason, demo_dir, summary, image_path, image_hits, DEMO_TEXT, text_hits)

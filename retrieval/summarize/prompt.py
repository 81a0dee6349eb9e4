"""The summary prompt: a system text and one user turn interleaving the query, each match and its record."""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image as PILImage

from retrieval.summarize.base import SummaryCase, SummaryRequest

SYSTEM = (
    "You are an experienced radiologist assisting a colleague. You compare a query image with similar prior "
    "cases retrieved by an image search engine. Be careful and concise; say when something cannot be judged "
    "from the images. Never give a diagnosis for the query: describe, compare and point out caveats."
)
TASK = (
    "Write a short comparison in three parts: 1. Common findings shared by the query and the prior cases. "
    "2. Differences between the query and each prior case (refer to them as Case 1, Case 2, ...). "
    "3. Caveats: image quality, missing information, how far the prior cases' labels and reports can be trusted."
)
MAX_REPORT_CHARS = 1200
MAX_QUERY_TEXT_CHARS = 500

Part = tuple[str, str | PILImage.Image]  # ("text", str) or ("image", picture)


def fit_picture(picture: PILImage.Image, size: int) -> PILImage.Image:
    """An RGB square of size x size: the picture zero-padded to a centred square, then resized (aspect kept)."""
    rgb = picture.convert("RGB")
    side = max(rgb.size)
    square = PILImage.new("RGB", (side, side))
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    return square if side == size else square.resize((size, size), PILImage.Resampling.BICUBIC)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def describe(case: SummaryCase) -> str:
    """The record of one case as prompt text (score, modality, body part, date, label, report)."""
    items = []
    if case.score is not None:
        items.append(f"similarity {case.score:.3f}")
    items.append(f"modality {case.modality or 'unknown'}")
    if case.body_part:
        items.append(f"body part {case.body_part}")
    items.append(f"study date {case.study_date or 'unknown'}")
    items.append(f"label {case.label!r}" if case.label else "no label")
    line = ", ".join(items) + "."
    if case.report:
        line += f" Report: {_clip(case.report, MAX_REPORT_CHARS)}"
    else:
        line += " No report."
    return line


def build_parts(request: SummaryRequest, image_size: int) -> list[Part]:
    """The user turn as text and image parts, in order: query, then each match with its record, then the task."""
    parts: list[Part] = []
    if request.query is not None:
        parts.append(("text", "Query image:"))
        parts.append(("image", fit_picture(request.query.picture, image_size)))
        if request.query.modality or request.query.study_date:
            parts.append(("text", "Query record: " + describe(request.query)))
    if request.query_text:
        parts.append(("text", f"The colleague is looking for: {_clip(request.query_text, MAX_QUERY_TEXT_CHARS)}"))
    parts.append(("text", f"{len(request.matches)} similar prior cases follow, most similar first."))
    for number, case in enumerate(request.matches, start=1):
        parts.append(("text", f"Case {number}:"))
        parts.append(("image", fit_picture(case.picture, image_size)))
        parts.append(("text", describe(case)))
    parts.append(("text", TASK))
    return parts


def transformers_messages(request: SummaryRequest, image_size: int) -> list[dict[str, Any]]:
    """Chat messages for a processor's own chat template ({"type": "image"} items carry the picture)."""
    content: list[dict[str, Any]] = []
    for kind, value in build_parts(request, image_size):
        content.append({"type": "image", "image": value} if kind == "image" else {"type": "text", "text": value})
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": content},
    ]


def png_data_url(picture: PILImage.Image) -> str:
    """A picture as a base64 PNG data URL (how OpenAI-compatible servers take images)."""
    buf = io.BytesIO()
    picture.save(buf, format="PNG", compress_level=1)  # lossless; fast to encode (it runs per request)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def openai_messages(request: SummaryRequest, image_size: int) -> list[dict[str, Any]]:
    """Chat-completions messages with images as base64 `image_url` parts."""
    content: list[dict[str, Any]] = []
    for kind, value in build_parts(request, image_size):
        if kind == "image":
            assert isinstance(value, PILImage.Image)
            content.append({"type": "image_url", "image_url": {"url": png_data_url(value)}})
        else:
            content.append({"type": "text", "text": value})
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


def image_count(request: SummaryRequest) -> int:
    """How many images the prompt holds."""
    return len(request.matches) + (1 if request.query is not None else 0)

"""Zero-shot tags: a vocabulary of prompts scored against every stored image with MedSigLIP's calibrated probability."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from retrieval.collection import Collection
from retrieval.findings.common import NAME, NAME_RULE, ApplyReport, apply_scorer, findings_store, model_key
from retrieval.findings.errors import BadVocabularyError, UnknownTagError
from retrieval.findings.scoring import Scorer
from retrieval.store.models import Tag

DEFAULT_THRESHOLD = 0.5
MAX_TAGS = 200
MAX_PROMPT_CHARS = 2000
# a prompt needs one visible character: not a control character, not whitespace. The class is spelled out so the
# OpenAPI pattern (ECMA regex), pydantic (Rust regex) and this module (Python) agree; `\S` differs between them
# (Python's str.strip() also strips the controls \x1c-\x1f, which `\S` in the schema accepted)
PROMPT_PATTERN = r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
VOCABULARY_KEYS = frozenset({"tag", "prompt", "threshold"})  # a JSONL row with any other key is refused


@dataclass(frozen=True)
class TagSpec:
    """One line of a vocabulary: the tag's name, its prompt, and the probability from which an image has it."""

    tag: str
    prompt: str
    threshold: float = DEFAULT_THRESHOLD


@dataclass
class TagInfo:
    """A stored tag and how many images have it."""

    tag: str
    prompt: str
    threshold: float
    images: int


def check_vocabulary(specs: list[TagSpec]) -> list[TagSpec]:
    """Names allowed, prompts present, thresholds in [0, 1], at most MAX_TAGS (a tag given twice: the last wins)."""
    if not specs:
        raise BadVocabularyError("the vocabulary has no tags")
    if len(specs) > MAX_TAGS:
        raise BadVocabularyError(f"the vocabulary has {len(specs)} tags; at most {MAX_TAGS} at once")
    for spec in specs:
        if not NAME.fullmatch(spec.tag):
            raise BadVocabularyError(f"tag name {spec.tag!r} is not allowed: {NAME_RULE}")
        if not re.search(PROMPT_PATTERN, spec.prompt) or len(spec.prompt) > MAX_PROMPT_CHARS:
            raise BadVocabularyError(
                f"tag {spec.tag!r}: the prompt must have a visible character and at most {MAX_PROMPT_CHARS} characters"
            )
        if not (math.isfinite(spec.threshold) and 0.0 <= spec.threshold <= 1.0):
            raise BadVocabularyError(f"tag {spec.tag!r}: the threshold must be a probability between 0 and 1")
    return specs


def unique_tags(specs: list[TagSpec]) -> list[TagSpec]:
    """The vocabulary with each tag once: a tag given twice is defined by its last line."""
    return list({s.tag: s for s in specs}.values())


def read_vocabulary(path: Path) -> list[TagSpec]:
    """A vocabulary file: CSV with a header, or JSONL; columns `tag`, `prompt` and optionally `threshold`."""
    if not path.is_file():
        raise BadVocabularyError(f"vocabulary file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadVocabularyError(f"{path} is not a UTF-8 CSV or JSONL file: {exc}") from exc
    rows: list[tuple[int, dict[str, object]]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BadVocabularyError(f"{path}:{number}: not JSON ({exc})") from exc
                if not isinstance(item, dict):
                    raise BadVocabularyError(f"{path}:{number}: not a JSON object")
                unknown = sorted(k for k in item if str(k).strip().lower() not in VOCABULARY_KEYS)
                if unknown:
                    raise BadVocabularyError(
                        f"{path}:{number}: unknown key {', '.join(map(repr, unknown))} "
                        "(a row takes tag, prompt, threshold)"
                    )
                rows.append((number, item))
    else:
        reader = csv.DictReader(text.splitlines())
        rows = [(number, dict(row)) for number, row in enumerate(reader, start=2)]
    specs = []
    for number, row in rows:
        values = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        tag, prompt, threshold = values.get("tag"), values.get("prompt"), values.get("threshold")
        if not isinstance(tag, str) or not isinstance(prompt, str) or not tag.strip():
            raise BadVocabularyError(f"{path}:{number}: needs a `tag` and a `prompt`")
        try:
            value = DEFAULT_THRESHOLD if threshold in (None, "") else float(threshold)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise BadVocabularyError(f"{path}:{number}: threshold {threshold!r} is not a number") from exc
        specs.append(TagSpec(tag.strip(), prompt.strip(), value))
    names = [s.tag for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BadVocabularyError(f"{path}: tag {', '.join(twice)} is in the vocabulary more than once")
    return check_vocabulary(specs)


def apply_tags(
    collection: Collection,
    specs: list[TagSpec],
    chunk: int = 8192,
    vectors: npt.NDArray[np.float32] | None = None,
) -> ApplyReport:
    """Embed the prompts (unless their `vectors` are given), store the tags (replacing any of the same name) and
    score every stored image. From then on the write stage also scores each newly indexed image against them."""
    specs = unique_tags(check_vocabulary(specs))
    if vectors is not None and len(vectors) != len(specs):
        raise ValueError(f"{len(vectors)} prompt vectors for {len(specs)} distinct tags")
    encoder = collection.load_encoder()
    if vectors is None:
        vectors = encoder.encode_texts([s.prompt for s in specs])
    store = findings_store(collection)
    store.save_tags(
        [(s.tag, s.prompt, s.threshold, v) for s, v in zip(specs, vectors, strict=True)],
        encoder.fingerprint.key,
    )
    tags = store.tags([s.tag for s in specs])
    return apply_scorer(collection, Scorer.build(tags, [], encoder.text_scores), chunk)


def list_tags(collection: Collection) -> list[TagInfo]:
    """Every stored tag with the number of images that have it."""
    store = findings_store(collection)
    counts = store.tag_counts()
    return [TagInfo(t.name, t.prompt, t.threshold, counts.get(t.name, 0)) for t in store.tags()]


def remove_tags(collection: Collection, names: list[str]) -> int:
    """Forget tags and their scores; an unknown name is an error (nothing is removed then)."""
    store = findings_store(collection)
    known = {t.name for t in store.tags(names)}
    missing = sorted(set(names) - known)
    if missing:
        raise UnknownTagError(f"no tag named {', '.join(missing)}; `medsearch tags list` shows the tags")
    return store.remove_tags(names)


def usable_tags(collection: Collection) -> list[Tag]:
    """Stored tags made with the collection's model (the ones new images are scored against)."""
    key = model_key(collection)
    return [t for t in findings_store(collection).tags() if t.fingerprint == key]

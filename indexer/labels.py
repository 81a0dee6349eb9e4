"""Kept for imports from before the move: the labels reader lives in retrieval/labels.py."""

from __future__ import annotations

from retrieval.labels import LabelEntry, Labels, load_labels

__all__ = ["LabelEntry", "Labels", "load_labels"]

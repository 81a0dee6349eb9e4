"""Quarantine of received instances that could not be indexed: their spooled bytes plus the reason, kept."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from retrieval.fsutil import atomic_write_bytes, fsync_dir, private_dir

FOLDER = "quarantine"  # inside the spool folder: same file system, so moves are atomic renames
SUFFIX = ".dcm"
REASON_SUFFIX = ".json"


@dataclass(frozen=True)
class Quarantined:
    """One kept instance: its bytes, the source URI its failure is recorded under, and why."""

    path: Path
    uri: str
    code: str
    reason: str
    recorded_at: str


class Quarantine:
    """A folder next to the spool holding `NAME.dcm` (bytes as received) and `NAME.json` (uri, code, reason)."""

    def __init__(self, spool_folder: Path) -> None:
        self.folder = spool_folder / FOLDER

    def keep(self, path: Path, uri: str, code: str, reason: str) -> Path | None:
        """Move a spooled file here with its reason (reason first, so a kept file always has one); never over a
        file already kept: a name in use gets a fresh suffix, so every copy that failed keeps its own bytes."""
        private_dir(self.folder)  # kept instances carry patient names
        note = {"uri": uri, "code": code, "reason": reason, "recorded_at": datetime.now(UTC).isoformat()}
        while True:
            target = _free_name(self.folder, path.name)
            atomic_write_bytes(target.with_suffix(REASON_SUFFIX), json.dumps(note).encode())
            try:
                os.link(path, target)
                break
            except FileExistsError:  # taken since we looked: try another name
                continue
            except FileNotFoundError:  # another worker consumed it meanwhile
                target.with_suffix(REASON_SUFFIX).unlink(missing_ok=True)
                return None
        path.unlink(missing_ok=True)
        fsync_dir(self.folder)
        fsync_dir(path.parent)
        return target

    def entries(self) -> list[Quarantined]:
        """Every kept instance, oldest first."""
        if not self.folder.is_dir():
            return []
        out = []
        for data in sorted(self.folder.glob(f"*{SUFFIX}"), key=lambda p: (p.stat().st_mtime, p.name)):
            try:
                note = json.loads(data.with_suffix(REASON_SUFFIX).read_text())
            except (OSError, ValueError):
                note = {}
            out.append(
                Quarantined(
                    data,
                    str(note.get("uri", f"spool:{data.name}")),
                    str(note.get("code", "unknown")),
                    str(note.get("reason", "reason file missing")),
                    str(note.get("recorded_at", "")),
                )
            )
        return out

    def release(self, entries: Iterable[Quarantined], spool_folder: Path) -> int:
        """Move kept instances back into the spool (the listener's worker indexes them again), never over a
        spooled file; returns how many."""
        moved = 0
        for entry in entries:
            if not _link_to_free_name(entry.path, spool_folder):
                continue
            entry.path.unlink(missing_ok=True)
            entry.path.with_suffix(REASON_SUFFIX).unlink(missing_ok=True)
            moved += 1
        if moved:
            fsync_dir(spool_folder)
            fsync_dir(self.folder)
        return moved


def _link_to_free_name(source: Path, folder: Path) -> bool:
    """Hard-link `source` into `folder` under its name or a fresh one; False when `source` is gone."""
    while True:
        try:
            os.link(source, _free_name(folder, source.name))
            return True
        except FileExistsError:  # taken since we looked: try another name
            continue
        except FileNotFoundError:
            return False


def _free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/STEM.RANDOM.dcm` when that (or its reason file) is taken."""
    target = folder / name
    while target.exists() or target.with_suffix(REASON_SUFFIX).exists():
        target = folder / f"{Path(name).stem}.{uuid.uuid4().hex[:12]}{SUFFIX}"
    return target

"""Patient privacy: PatientID is only ever stored as a keyed hash (HMAC-SHA256); names never."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SALT_FILE = "patient-salt"


def load_or_create_salt(data_dir: Path, configured: str | None = None) -> bytes:
    """The secret key for patient hashing: configured, or kept (0600) in the data folder."""
    if configured:
        return configured.encode()
    path = data_dir / SALT_FILE
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, value)
        os.fsync(fd)
    finally:
        os.close(fd)
    return value


def hash_patient_id(patient_id: str | None, salt: bytes) -> str | None:
    """Keyed hash of a PatientID (None stays None); equal IDs give equal hashes within one deployment."""
    if patient_id is None or not patient_id.strip():
        return None
    return hmac.new(salt, patient_id.strip().encode(), hashlib.sha256).hexdigest()

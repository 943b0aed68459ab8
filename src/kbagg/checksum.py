"""File checksums shared by the writers (provenance, the SOMA journal)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes as stored (equals ``sha256sum PATH``), in hex."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()

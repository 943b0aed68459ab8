"""Provenance for the aggregate: `uns['kbagg']` says how and from what it was made.

It records the workflow version (`git describe` when the clone is a git checkout), the
versions of kbagg, kb-python, kallisto, bustools, anndata and snakemake, the config and the
sample sheet used, and for every input file its path, size and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def sha256(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def workflow_version() -> str:
    """`git describe` of the kbagg clone, else the installed package version."""
    try:
        described = subprocess.run(
            ["git", "describe", "--tags", "--always", "--dirty"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        if described:
            return f"git {described}"
    except (OSError, subprocess.SubprocessError):
        pass
    return metadata.version("kbagg")


def tool_versions() -> dict[str, str]:
    from kb_python.utils import get_bustools_version, get_kallisto_version

    versions = {
        name: metadata.version(dist)
        for name, dist in (
            ("kbagg", "kbagg"),
            ("kb_python", "kb-python"),
            ("anndata", "anndata"),
            ("snakemake", "snakemake"),
        )
    }
    for name, get in (("kallisto", get_kallisto_version), ("bustools", get_bustools_version)):
        found = get()
        versions[name] = ".".join(map(str, found)) if found else "unknown"
    return versions


def file_record(path: str | Path) -> dict[str, str | int]:
    path = Path(path)
    return {"path": str(path), "size": path.stat().st_size, "sha256": sha256(path)}


def collect(
    inputs: Mapping[str, str | Path], config: Mapping, sample_sheet: Mapping
) -> dict[str, object]:
    """The `uns['kbagg']` record. Config and sheet are kept as JSON text: h5ad cannot store
    None or ragged lists, and text round-trips exactly."""
    return {
        "workflow_version": workflow_version(),
        "versions": tool_versions(),
        "config": json.dumps(config, sort_keys=True),
        "sample_sheet": json.dumps(sample_sheet),
        "inputs": {name: file_record(path) for name, path in inputs.items()},
    }

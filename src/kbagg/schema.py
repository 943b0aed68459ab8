"""Defaults read from the config schema (``workflow/schemas/config.schema.yaml``), the one
place they are written: the concat options (`kbagg.concat.options`) and the jobs' memory
(`kbagg.count`) take theirs from here."""

from __future__ import annotations

import functools
from pathlib import Path

# The schema, where the workflow validates its config; kbagg ships a link to it
# (src/kbagg/config.schema.yaml, package data) for installs that are not a clone.
SCHEMA_PATHS = (
    Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml",
    Path(__file__).resolve().parent / "config.schema.yaml",
)


@functools.cache
def _schema() -> dict:
    import yaml

    for path in SCHEMA_PATHS:
        if path.is_file():
            return yaml.safe_load(path.read_text())
    raise FileNotFoundError(f"the config schema is not at {' or '.join(map(str, SCHEMA_PATHS))}")


def schema_default(*keys: str):
    """The schema's default of a config key, given as its path (``"aggregate", "join"``;
    ``"resources", "kb_count", "mem_mb"``)."""
    node = _schema()
    for key in keys:
        node = node["properties"][key]
    return node["default"]

"""Defaults live in one place, the schema; config/README.md documents every key with that
default, and the shipped config/config.yaml restates none of them."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import REPO

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
DOCS = (REPO / "config" / "README.md").read_text().split("## Keys", 1)[1]


def leaves(properties: dict, prefix: str = ""):
    for key, spec in properties.items():
        path = prefix + key
        if spec.get("type") == "object" and "properties" in spec:
            yield from leaves(spec["properties"], path + ".")
        else:
            yield path, spec


def shown(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if value == "":
        return '""'
    return json.dumps(value) if not isinstance(value, str) else value


def docs_row(key: str) -> str:
    rows = [line for line in DOCS.splitlines() if line.startswith(f"| `{key}`")]
    assert rows, f"config/README.md has no row for `{key}`"
    return rows[0]


KEYS = [(p, s) for p, s in leaves(SCHEMA["properties"]) if not p.startswith("resources.")]


@pytest.mark.parametrize(("key", "spec"), KEYS, ids=[k for k, _ in KEYS])
def test_every_key_is_documented_with_the_schema_default(key, spec):
    if key.startswith("reference."):
        assert f"`{key}`" in DOCS
        return
    row = docs_row(key)
    if "default" in spec:
        default_cell = row.split("|")[2].strip()
        assert default_cell == f"`{shown(spec['default'])}`", (key, default_cell)


def test_resource_defaults_are_documented():
    for rule, spec in SCHEMA["properties"]["resources"]["properties"].items():
        defaults = {k: v["default"] for k, v in spec["properties"].items()}
        cells = [c.strip() for c in docs_row(f"resources.{rule}").split("|")[2:5]]
        assert cells == [str(defaults[k]) for k in ("threads", "mem_mb", "runtime")], rule


def test_the_shipped_config_restates_no_default():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    defaults = dict(leaves(SCHEMA["properties"]))
    for key, value in leaves_of(config):
        spec = defaults.get(key) or defaults.get(re.sub(r"\.[^.]+$", "", key))
        default = spec.get("default") if spec else None
        if key.startswith("resources."):
            rule, field = key.split(".")[1:]
            default = SCHEMA["properties"]["resources"]["properties"][rule]["properties"][field][
                "default"
            ]
        assert value != default, f"config/config.yaml restates the default of {key}"


def leaves_of(config: dict, prefix: str = ""):
    for key, value in config.items():
        if isinstance(value, dict):
            yield from leaves_of(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value

"""Provenance record of the aggregate (uns['kbagg'])."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from conftest import REPO

from kbagg.provenance import collect, tool_versions


def test_record_names_every_input_with_its_checksum(tmp_path):
    inputs = {}
    for name, payload in (("a", b"first"), ("b", b"second file")):
        inputs[name] = tmp_path / f"{name}.h5ad"
        inputs[name].write_bytes(payload)
    config = {"workflow": "standard", "filter": {"threshold": None}}
    record = collect(inputs, config, {"sample": ["a", "b"]})
    assert record["inputs"]["b"] == {
        "path": str(inputs["b"]),
        "size": 11,
        "sha256": hashlib.sha256(b"second file").hexdigest(),
    }
    assert json.loads(record["config"]) == config
    assert json.loads(record["sample_sheet"]) == {"sample": ["a", "b"]}


def test_versions_of_the_tools_that_made_the_counts():
    versions = tool_versions()
    assert versions["kb_python"] == "0.30.2"
    assert versions["kallisto"] == "0.52.0" and versions["bustools"] == "0.45.1"
    assert set(versions) >= {"kbagg", "anndata", "snakemake"}


def test_cli_writes_json(tmp_path):
    (tmp_path / "x.h5ad").write_bytes(b"x")
    out = tmp_path / "prov.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "provenance.py"),
            "--config",
            "{}",
            "--sample-sheet",
            "{}",
            "-o",
            str(out),
            f"x={tmp_path / 'x.h5ad'}",
        ],
        check=True,
    )
    record = json.loads(out.read_text())
    assert record["inputs"]["x"]["sha256"] == hashlib.sha256(b"x").hexdigest()
    assert record["workflow_version"]

"""Provenance record of the aggregate (uns['kbagg'])."""

from __future__ import annotations

import hashlib
import json

from kbagg.aggregate.provenance import collect, package_versions


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
    assert record["config"] == config  # JSON objects, not JSON text inside JSON
    assert record["sample_sheet"] == {"sample": ["a", "b"]}


def test_versions_come_from_what_kb_recorded(tmp_path):
    def kb_info(name: str, kallisto: str) -> str:
        path = tmp_path / f"{name}_kb_info.json"
        info = {
            "version": "0.30.2",
            "kallisto": {"version": kallisto},
            "bustools": {"version": "0.45.1"},
            "call": f"kb count -o {name}",
        }
        path.write_text(json.dumps(info))
        return str(path)

    inputs = {name: tmp_path / f"{name}.h5ad" for name in ("a", "b")}
    for path in inputs.values():
        path.write_bytes(b"x")
    same = collect(inputs, {}, {}, {"a": kb_info("a", "0.52.0"), "b": kb_info("b", "0.52.0")})
    assert same["versions"]["kallisto"] == "0.52.0" and same["versions"]["kb_python"] == "0.30.2"
    assert same["inputs"]["b"]["kb"]["call"] == "kb count -o b"
    mixed = collect(inputs, {}, {}, {"a": kb_info("a", "0.52.0"), "b": kb_info("b", "0.51.1")})
    assert mixed["versions"]["kallisto"] == "mixed: 0.51.1, 0.52.0"
    assert set(package_versions()) == {"kbagg", "anndata", "snakemake"}


def test_record_written_once_reads_back_the_same(tmp_path):
    """Rule provenance writes the record once; every writer attaches what it reads back."""
    from kbagg.aggregate.provenance import read_provenance, write_provenance

    (tmp_path / "a.h5ad").write_bytes(b"first")
    record = collect({"a": tmp_path / "a.h5ad"}, {"workflow": "standard"}, {"sample": ["a"]})
    write_provenance(record, tmp_path / "filtered.provenance.json")
    assert read_provenance(tmp_path / "filtered.provenance.json") == record


def test_record_in_uns_reads_back_as_the_same_objects(tmp_path):
    """uns['kbagg'] holds the record's dicts as h5ad groups; lists come back as arrays, and
    only a list h5ad cannot hold as one array (None, dicts, mixed types) is JSON text."""
    import anndata as ad
    import numpy as np

    from kbagg.aggregate.provenance import to_uns

    (tmp_path / "a.h5ad").write_bytes(b"first")
    config = {"filter": {"threshold": None}, "extra": {"odd": [1, None], "ints": [1, 2]}}
    sheet = {"metadata": {"sample": ["a"], "age": [3]}}
    lane = {"sample": "a", "lane": 1, "reads": 2, "r1": {"sha256": "x"}}
    cells = {"method": "bustools", "warnings": [], "doublets": {"threshold": None}}
    record = collect(
        {"a": tmp_path / "a.h5ad"}, config, sheet, fastqs={"a": {"rna_lane1": lane}},
        cells={"a": cells},
    )  # fmt: skip
    ad.AnnData(uns={"kbagg": to_uns(record)}).write_h5ad(tmp_path / "agg.h5ad")
    uns = ad.read_h5ad(tmp_path / "agg.h5ad").uns["kbagg"]
    assert uns["config"]["filter"] == {"threshold": None}
    assert json.loads(uns["config"]["extra"]["odd"]) == [1, None]
    assert list(uns["config"]["extra"]["ints"]) == [1, 2]
    assert list(uns["sample_sheet"]["metadata"]["sample"]) == ["a"]
    assert uns["inputs"]["a"]["fastqs"]["rna_lane1"] == lane
    assert uns["inputs"]["a"]["cells"]["doublets"] == {"threshold": None}
    assert len(uns["inputs"]["a"]["cells"]["warnings"]) == 0
    assert uns["inputs"]["a"]["sha256"] == record["inputs"]["a"]["sha256"]
    assert isinstance(uns["sample_sheet"]["metadata"]["age"], np.ndarray)

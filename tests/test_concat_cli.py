"""The command-line contract of kbagg-concat (run as a child process)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from concat_helpers import assert_matches_reference, read_quiet, reference_concat, run_cli


def _write(path, barcodes, genes=("g1", "g2", "g3"), seed=0):
    rng = np.random.default_rng(seed)
    x = sp.random(len(barcodes), len(genes), density=0.5, format="csr", random_state=rng)
    a = ad.AnnData(
        X=x.astype(np.float32),
        obs=pd.DataFrame(index=list(barcodes)),
        var=pd.DataFrame(index=list(genes)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_h5ad(path)
    return path


@pytest.fixture
def two_inputs(tmp_path):
    return (
        _write(tmp_path / "first.h5ad", ["AAA-1", "CCC-1"], seed=1),
        _write(tmp_path / "second.h5ad", ["AAA-1", "GGG-1", "TTT-1"], seed=2),
    )


def _assert_clean_error(proc, *needles):
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert str(needle) in proc.stderr, (needle, proc.stderr)


def test_name_equals_path_sets_label_and_suffix(tmp_path, two_inputs):
    a, b = two_inputs
    out = tmp_path / "out.h5ad"
    proc = run_cli("-o", out, "--quiet", f"pbmcA={a}", f"pbmcB={b}", check=True)
    assert proc.stderr == ""  # --quiet: no progress bar
    res = read_quiet(out)
    assert res.obs_names.tolist() == ["AAA-1-pbmcA", "CCC-1-pbmcA"] + [
        f"{bc}-pbmcB" for bc in ["AAA-1", "GGG-1", "TTT-1"]
    ]
    assert res.obs["sample"].cat.categories.tolist() == ["pbmcA", "pbmcB"]
    assert_matches_reference(out, reference_concat({"pbmcA": a, "pbmcB": b}))


def test_bare_path_uses_stem_and_custom_label_and_separator(tmp_path, two_inputs):
    a, b = two_inputs
    out = tmp_path / "out.h5ad"
    run_cli("-o", out, "--label", "batch", "--index-unique", "_", a, b, check=True)
    res = read_quiet(out)
    assert res.obs["batch"].tolist() == ["first"] * 2 + ["second"] * 3
    assert res.obs_names[0] == "AAA-1_first"
    ref = reference_concat({"first": a, "second": b}, label="batch", index_unique="_")
    assert_matches_reference(out, ref)


def test_progress_bar_goes_to_stderr(tmp_path, two_inputs):
    proc = run_cli("-o", tmp_path / "out.h5ad", *two_inputs, check=True)
    assert "concat" in proc.stderr and proc.stdout == ""


def test_outer_join_flag(tmp_path):
    a = _write(tmp_path / "a.h5ad", ["x"], genes=("g1", "g2"))
    b = _write(tmp_path / "b.h5ad", ["y"], genes=("g2", "g3"))
    run_cli("-o", tmp_path / "o.h5ad", "--join", "outer", a, b, check=True)
    assert read_quiet(tmp_path / "o.h5ad").var_names.tolist() == ["g1", "g2", "g3"]
    run_cli("-o", tmp_path / "i.h5ad", a, b, check=True)
    assert read_quiet(tmp_path / "i.h5ad").var_names.tolist() == ["g2"]


def test_obs_metadata_adds_categorical_columns(tmp_path, two_inputs):
    table = tmp_path / "samples.tsv"
    table.write_text("sample\tdonor\tage\nsecond\td2\t40\nfirst\td1\t31\nunused\td9\t1\n")
    out = tmp_path / "out.h5ad"
    run_cli("-o", out, "--obs-metadata", table, *two_inputs, check=True)
    obs = read_quiet(out).obs
    assert obs["donor"].tolist() == ["d1"] * 2 + ["d2"] * 3
    assert obs["age"].tolist() == ["31"] * 2 + ["40"] * 3
    for col in ("donor", "age"):
        assert isinstance(obs[col].dtype, pd.CategoricalDtype)
    assert obs["donor"].cat.categories.tolist() == ["d1", "d2"]


def test_obs_metadata_keyed_by_label_column(tmp_path, two_inputs):
    table = tmp_path / "samples.tsv"
    table.write_text("batch\tdonor\nfirst\td1\nsecond\td2\n")
    out = tmp_path / "out.h5ad"
    run_cli("-o", out, "--label", "batch", "--obs-metadata", table, *two_inputs, check=True)
    assert read_quiet(out).obs["donor"].tolist() == ["d1"] * 2 + ["d2"] * 3


def test_sample_missing_from_metadata_is_an_error(tmp_path, two_inputs):
    table = tmp_path / "samples.tsv"
    table.write_text("sample\tdonor\nfirst\td1\n")
    out = tmp_path / "out.h5ad"
    proc = run_cli("-o", out, "--obs-metadata", table, *two_inputs)
    _assert_clean_error(proc, "second", table)
    assert not out.exists()
    assert not list(tmp_path.glob(".out.h5ad.tmp-*"))


def test_duplicate_obs_names_suggest_index_unique(tmp_path, two_inputs):
    out = tmp_path / "out.h5ad"
    proc = run_cli("-o", out, "--index-unique", "", *two_inputs)
    _assert_clean_error(proc, "--index-unique", "AAA-1")
    assert not out.exists()


def test_empty_index_unique_keeps_barcodes(tmp_path):
    a = _write(tmp_path / "a.h5ad", ["x"])
    b = _write(tmp_path / "b.h5ad", ["y"])
    run_cli("-o", tmp_path / "o.h5ad", "--index-unique", "", a, b, check=True)
    assert read_quiet(tmp_path / "o.h5ad").obs_names.tolist() == ["x", "y"]


def test_corrupt_input_error_names_the_file(tmp_path, two_inputs):
    bad = tmp_path / "corrupt.h5ad"
    bad.write_bytes(b"this is not hdf5" * 100)
    out = tmp_path / "out.h5ad"
    proc = run_cli("-o", out, two_inputs[0], bad)
    _assert_clean_error(proc, bad)
    assert not out.exists()


def test_missing_input_error_names_the_file(tmp_path, two_inputs):
    missing = tmp_path / "nope.h5ad"
    proc = run_cli("-o", tmp_path / "out.h5ad", two_inputs[0], f"x={missing}")
    _assert_clean_error(proc, missing, "does not exist")


def test_non_anndata_hdf5_error_names_the_file(tmp_path, two_inputs):
    import h5py

    odd = tmp_path / "odd.h5ad"
    with h5py.File(odd, "w") as f:
        f["something"] = np.arange(3)
    proc = run_cli("-o", tmp_path / "out.h5ad", two_inputs[0], odd)
    _assert_clean_error(proc, odd)


def test_duplicate_sample_names_are_an_error(tmp_path, two_inputs):
    a, b = two_inputs
    proc = run_cli("-o", tmp_path / "out.h5ad", f"s={a}", f"s={b}")
    _assert_clean_error(proc, "duplicate sample names", "s")


def test_usage_error_exit_code(tmp_path):
    proc = run_cli("--join", "sideways", "-o", tmp_path / "o.h5ad", "a.h5ad")
    assert proc.returncode == 2


def test_existing_output_is_replaced_only_on_success(tmp_path, two_inputs):
    out = tmp_path / "out.h5ad"
    out.write_bytes(b"old")
    proc = run_cli("-o", out, two_inputs[0], tmp_path / "missing.h5ad")
    assert proc.returncode == 1 and out.read_bytes() == b"old"
    run_cli("-o", out, *two_inputs, check=True)
    assert read_quiet(out).n_obs == 5


def test_uns_json_is_stored_in_the_output(tmp_path):
    import json

    path = tmp_path / "s1.h5ad"
    ad.AnnData(np.ones((2, 3), dtype=np.float32)).write_h5ad(path)
    record = {"version": "1.0", "inputs": {"s1": {"size": 5, "sha256": "ab"}}}
    (tmp_path / "prov.json").write_text(json.dumps(record))
    out = tmp_path / "out.h5ad"
    run_cli(
        "-o", out, "--quiet", "--uns", f"kbagg={tmp_path / 'prov.json'}", f"s1={path}", check=True
    )
    uns = ad.read_h5ad(out).uns["kbagg"]
    assert uns["version"] == "1.0" and uns["inputs"]["s1"]["sha256"] == "ab"
    assert int(uns["inputs"]["s1"]["size"]) == 5


def test_uns_must_be_key_and_json_object(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    proc = run_cli("-o", tmp_path / "o.h5ad", "--uns", f"k={tmp_path / 'list.json'}", "x.h5ad")
    assert proc.returncode == 2 and "must hold a JSON object" in proc.stderr

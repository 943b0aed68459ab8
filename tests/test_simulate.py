"""The demo simulator: deterministic to the byte, and consistent with the shipped sheet."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import anndata as ad
import pandas as pd
from conftest import REPO

from kbagg.simulate.demo import write_demo
from kbagg.simulate.spec import DEMO, demo_outputs


def digests(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_two_runs_write_identical_bytes(tmp_path):
    # The second run in another process: temp names hold the pid, and must not leak into
    # the bytes (gzip headers store a file name unless told not to).
    write_demo(tmp_path / "one")
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from kbagg.simulate.demo import write_demo; write_demo(sys.argv[1])",
            str(tmp_path / "two"),
        ],
        check=True,
        capture_output=True,
    )
    first, second = digests(tmp_path / "one"), digests(tmp_path / "two")
    assert first == second
    declared = {
        str(p.relative_to(tmp_path / "one"))
        for ps in demo_outputs(tmp_path / "one").values()
        for p in ps
    }
    assert set(first) == declared  # exactly the files the rule declares, no temp leftovers


def test_truth_marks_cells_and_empty_droplets(tmp_path):
    files = write_demo(tmp_path)
    for spec, path in zip(DEMO.samples, files["truth"][: len(DEMO.samples)], strict=True):
        truth = ad.read_h5ad(path)
        assert truth.obs["is_cell"].sum() == spec.n_cells
        assert truth.n_obs == spec.n_cells + spec.n_empty
        umis = truth.X.sum(axis=1).A1
        assert (
            umis[truth.obs["is_cell"].to_numpy()].min()
            > umis[~truth.obs["is_cell"].to_numpy()].max()
        )


def test_shipped_sample_sheet_lists_the_demo_fastqs():
    sheet = pd.read_csv(REPO / "config" / "samples.tsv", sep="\t", dtype=str)
    fastqs = {str((REPO / "config" / p).resolve()) for p in (*sheet["fastq_1"], *sheet["fastq_2"])}
    expected = {str(p.resolve()) for p in demo_outputs(REPO / "resources" / "demo")["fastq"]}
    assert fastqs == expected
    assert list(sheet.drop_duplicates("sample")["sample"]) == [s.name for s in DEMO.samples]

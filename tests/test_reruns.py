"""Reruns driven by config and sample sheet: Snakemake redoes exactly what changed.

Each case starts from a copy of the finished demo (outputs, their timestamps and Snakemake's
metadata) and checks which jobs a dry run plans; adding a sample is also run for real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import run_snakemake

pytestmark = pytest.mark.slow

EVERYTHING_AFTER_THE_CELLS = {
    "cells": 3,
    "count_features": 2,  # feature counts are kept for the called cells
    "hashtag_qc": 1,
    "sample_h5mu": 2,
    "aggregate": 2,
    "aggregate_h5mu": 1,
    "soma_register": 1,
    "soma_write": 3,  # one job per sample: the store's writers run in parallel
    "soma": 1,
    "qc_sample": 3,
    "qc_summary": 1,
    "multiqc": 1,
}
EVERYTHING_AFTER_THE_REFERENCE = {"reference": 1, "kb_count": 3, **EVERYTHING_AFTER_THE_CELLS}
THE_AGGREGATES = {
    "aggregate": 2,
    "aggregate_h5mu": 1,
    "soma_register": 1,
    "soma_write": 3,
    "soma": 1,
}


@pytest.fixture
def finished_demo(demo_run, tmp_path) -> Path:
    copy = tmp_path / "kbagg"
    shutil.copytree(demo_run, copy, symlinks=True)  # copy2: keeps modification times
    return copy


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count from a dry run, without the `all` target."""
    proc = run_snakemake(workdir, "--dry-run", *args, snakefile=workdir / "workflow" / "Snakefile")
    if "Nothing to be done" in proc.stdout + proc.stderr:
        return {}
    lines = proc.stdout.split("Job stats:", 1)[1].splitlines()
    counts = {}
    for line in lines[3:]:
        fields = line.split()
        if len(fields) != 2 or fields[0] == "total":
            break
        counts[fields[0]] = int(fields[1])
    counts.pop("all", None)
    return counts


def edit_config(workdir: Path, change) -> None:
    path = workdir / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))


def test_e_nothing_changed_nothing_runs(finished_demo):
    assert planned_jobs(finished_demo) == {}


def test_d_changing_the_join_reruns_only_the_aggregates(finished_demo):
    edit_config(finished_demo, lambda c: c["aggregate"].update(join="inner"))
    # The SOMA store always holds every gene (an outer join): the join does not touch it.
    assert planned_jobs(finished_demo) == {"aggregate": 2, "aggregate_h5mu": 1}


def test_b_changing_sample_metadata_reruns_only_the_aggregate_side(finished_demo):
    sheet_path = finished_demo / "config" / "samples.tsv"
    sheet = pd.read_csv(sheet_path, sep="\t", dtype=str)
    sheet.loc[sheet["sample"] == "pbmc_b", "donor"] = "d9"
    sheet.to_csv(sheet_path, sep="\t", index=False)
    assert planned_jobs(finished_demo) == THE_AGGREGATES


def test_b_renaming_a_metadata_column_reruns_the_aggregates(finished_demo):
    sheet_path = finished_demo / "config" / "samples.tsv"
    sheet = pd.read_csv(sheet_path, sep="\t", dtype=str).rename(columns={"condition": "treatment"})
    sheet.to_csv(sheet_path, sep="\t", index=False)
    assert planned_jobs(finished_demo) == THE_AGGREGATES


def test_c_changing_the_reference_reruns_everything_downstream(finished_demo):
    gtf = finished_demo / "resources" / "demo" / "genes.gtf"
    gtf.write_text(gtf.read_text() + "# edited annotation\n")
    assert planned_jobs(finished_demo) == EVERYTHING_AFTER_THE_REFERENCE


def test_c_pointing_at_another_reference_file_reruns_everything(finished_demo):
    demo = finished_demo / "resources" / "demo"
    shutil.copy2(demo / "genes.gtf", finished_demo / "other.gtf")
    edit_config(finished_demo, lambda c: c["reference"].update(gtf="other.gtf"))
    assert planned_jobs(finished_demo) == EVERYTHING_AFTER_THE_REFERENCE


def test_a_adding_a_sample_counts_only_that_sample(finished_demo):
    fastq_dir = finished_demo / "resources" / "demo" / "fastq"
    for read in (1, 2):
        shutil.copy(
            fastq_dir / f"pbmc_a_S1_L001_R{read}_001.fastq.gz",
            finished_demo / f"extra_R{read}.fastq.gz",
        )
    sheet_path = finished_demo / "config" / "samples.tsv"
    with sheet_path.open("a") as sheet:
        sheet.write(
            "pbmc_d\t../extra_R1.fastq.gz\t../extra_R2.fastq.gz\t10xv2\tGene Expression"
            "\tcontrol\td3\n"
        )
    assert planned_jobs(finished_demo) == {
        "fastq_check": 1,
        "kb_count": 1,
        "cells": 1,
        **THE_AGGREGATES,
        "soma_write": 4,  # the new sample's writer, and the others' (they write nothing)
        "qc_sample": 1,
        "qc_summary": 1,
        "multiqc": 1,
    }

    samples = finished_demo / "results" / "samples"
    before = {p: p.stat().st_mtime_ns for p in samples.glob("*/*.h5ad")}
    run_snakemake(finished_demo, snakefile=finished_demo / "workflow" / "Snakefile")
    assert {p: p.stat().st_mtime_ns for p in before} == before, "existing samples were recounted"
    assert (samples / "pbmc_d" / "filtered.h5ad").exists()
    assert planned_jobs(finished_demo) == {}
    # The SOMA store got the new sample's cells appended; the others were not rewritten.
    manifest = json.loads((finished_demo / "results/aggregate/soma_manifest.json").read_text())
    assert manifest["action"] == "appended" and manifest["appended"] == ["pbmc_d"]


def test_changing_the_cell_calling_method_recalls_cells_but_does_not_recount(finished_demo):
    edit_config(finished_demo, lambda c: c.setdefault("filter", {}).update(method="emptydrops"))
    assert planned_jobs(finished_demo) == EVERYTHING_AFTER_THE_CELLS


def test_turning_doublet_scores_off_redoes_the_cells_only(finished_demo):
    edit_config(finished_demo, lambda c: c.setdefault("qc", {}).update(doublets=False))
    assert planned_jobs(finished_demo) == EVERYTHING_AFTER_THE_CELLS


def test_changing_memory_reruns_nothing(finished_demo):
    """Resources are not results: more memory (also what a retry gets) changes no output."""
    edit_config(
        finished_demo, lambda c: c["resources"].setdefault("aggregate", {}).update(mem_mb=8000)
    )
    edit_config(finished_demo, lambda c: c["resources"]["kb_count"].update(mem_mb=8000))
    assert planned_jobs(finished_demo) == {}


def test_zarr_compressed_and_gene_major_aggregates_equal_the_h5ad(finished_demo):
    """aggregate.format/compression/gene_major: only the aggregate side reruns, and every
    output holds the same values, obs and var as the uncompressed h5ad aggregate."""
    import anndata as ad
    import h5py
    import numpy as np

    expected = ad.read_h5ad(finished_demo / "results" / "aggregate" / "filtered.h5ad")
    edit_config(finished_demo, lambda c: c["aggregate"].update(format="zarr", compression="zstd:3"))
    # the MuData aggregate reruns too: its provenance records the config it ran with
    assert planned_jobs(finished_demo) == {"aggregate": 2, "aggregate_h5mu": 1}
    run_snakemake(
        finished_demo,
        "results/aggregate/filtered.zarr",
        snakefile=finished_demo / "workflow" / "Snakefile",
    )
    got = ad.read_zarr(finished_demo / "results" / "aggregate" / "filtered.zarr")
    edit_config(
        finished_demo,
        lambda c: c["aggregate"].update(format="h5ad", compression="gzip:1", gene_major=True),
    )
    assert planned_jobs(finished_demo) == {
        "aggregate": 2,
        "aggregate_gene_major": 2,
        "aggregate_h5mu": 1,
    }
    run_snakemake(
        finished_demo,
        "results/aggregate/filtered.by_gene.h5ad",
        snakefile=finished_demo / "workflow" / "Snakefile",
    )
    by_gene = ad.read_h5ad(finished_demo / "results" / "aggregate" / "filtered.by_gene.h5ad")
    with h5py.File(finished_demo / "results" / "aggregate" / "filtered.by_gene.h5ad") as f:
        assert f["X"].attrs["encoding-type"] == "csc_matrix"
        assert f["X"]["data"].compression == "gzip"
    gzipped = ad.read_h5ad(finished_demo / "results" / "aggregate" / "filtered.h5ad")
    for result in (got, by_gene, gzipped):
        assert list(result.obs_names) == list(expected.obs_names)
        assert list(result.var_names) == list(expected.var_names)
        np.testing.assert_array_equal(result.X.toarray(), expected.X.toarray())
        assert set(result.layers) == set(expected.layers)
        for name in expected.layers:
            np.testing.assert_array_equal(
                result.layers[name].toarray(), expected.layers[name].toarray()
            )
        pd.testing.assert_frame_equal(result.obs, expected.obs)
        pd.testing.assert_frame_equal(result.var, expected.var)


def test_changing_the_soma_layout_rebuilds_the_store_in_it(finished_demo):
    """aggregate.soma.layout reruns the store's rules only (the h5ad aggregates' provenance
    leaves aggregate.soma out); the run rebuilds the default two_arrays store (a gene-major
    copy of each layer) in gene_query, without the copies, and its manifest says why."""
    store = finished_demo / "results" / "aggregate" / "filtered.soma"
    soma = pytest.importorskip("tiledbsoma")
    with soma.Experiment.open(str(store)) as exp:
        arrays = set(exp.ms["RNA"].X)
    base = {name for name in arrays if not name.endswith("_by_gene")}
    assert "counts" in base and arrays == base | {f"{name}_by_gene" for name in base}
    edit_config(finished_demo, lambda c: c["aggregate"]["soma"].update(layout="gene_query"))
    assert planned_jobs(finished_demo) == {"soma_register": 1, "soma_write": 3, "soma": 1}
    run_snakemake(finished_demo, snakefile=finished_demo / "workflow" / "Snakefile")
    manifest = json.loads((finished_demo / "results/aggregate/soma_manifest.json").read_text())
    assert manifest["action"] == "rebuilt" and manifest["layout"] == "gene_query"
    assert manifest["reason"] == "layout changed from 'two_arrays' to 'gene_query'"
    with soma.Experiment.open(str(store)) as exp:
        assert set(exp.ms["RNA"].X) == base
    assert planned_jobs(finished_demo) == {}

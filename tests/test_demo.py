"""The shipped demo, end to end: `snakemake --cores 2` in a fresh copy of the repository.

Counts are compared with the simulator's truth, exactly: every read maps to one gene, UMIs are
unique within a barcode, barcodes are on the on-list and at least 3 mismatches apart, and
there are no sequencing errors, so kb has nothing to guess.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import anndata as ad
import mudata
import numpy as np
import pandas as pd
import pytest
import yaml

from kbagg.concat.engine import concat_on_disk
from kbagg.config import hashtag_samples
from kbagg.feature_types import MODALITY
from kbagg.simulate.spec import DEMO

pytestmark = pytest.mark.slow

SAMPLES = [s.name for s in DEMO.samples]


def dense(matrix) -> np.ndarray:
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)


def truth(demo_run, sample: str) -> ad.AnnData:
    return ad.read_h5ad(demo_run / "resources" / "demo" / "truth" / f"{sample}.h5ad")


def sample_matrix(demo_run, sample: str, kind: str) -> ad.AnnData:
    return ad.read_h5ad(demo_run / "results" / "samples" / sample / f"{kind}.h5ad")


def test_aggregate_has_every_sample_metadata_and_gene_annotation(demo_run):
    agg = ad.read_h5ad(demo_run / "results" / "aggregate" / "filtered.h5ad")
    sheet = pd.read_csv(demo_run / "config" / "samples.tsv", sep="\t", dtype=str)

    assert set(agg.obs["sample"]) == set(SAMPLES)
    assert agg.obs_names.is_unique
    for column in ("condition", "donor"):
        assert column in agg.obs, f"metadata column {column} missing from obs"
        expected = sheet.drop_duplicates("sample").set_index("sample")[column]
        got = agg.obs.groupby("sample", observed=True)[column].agg(lambda v: set(v.astype(str)))
        assert got.to_dict() == {s: {expected[s]} for s in SAMPLES}
    assert agg.var.index.name == "gene_id"
    assert agg.var_names.str.startswith("SIMG").all()
    assert (agg.var["gene_name"] == "Sim" + agg.var_names.str[4:].astype(int).astype(str)).all()
    # obs names are <barcode>-<sample>
    barcodes = agg.obs_names.str.rsplit("-", n=1).str[0]
    assert (barcodes.str.len() == 16).all()


@pytest.mark.parametrize("sample", SAMPLES)
def test_raw_matrix_equals_truth_for_every_barcode(demo_run, sample):
    expected = truth(demo_run, sample)
    raw = sample_matrix(demo_run, sample, "raw")
    assert set(raw.obs_names) == set(expected.obs_names)
    got = dense(raw[expected.obs_names, expected.var_names].X)
    np.testing.assert_array_equal(got, dense(expected.X))


@pytest.mark.parametrize("sample", SAMPLES)
def test_filter_keeps_exactly_the_true_cells_with_their_counts(demo_run, sample):
    expected = truth(demo_run, sample)
    cells = expected[expected.obs["is_cell"].to_numpy()]
    filtered = sample_matrix(demo_run, sample, "filtered")
    assert sorted(filtered.obs_names) == sorted(cells.obs_names)
    got = dense(filtered[cells.obs_names, cells.var_names].X)
    np.testing.assert_array_equal(got, dense(cells.X))


def test_sample_with_silent_genes_has_zero_counts_there(demo_run):
    spec = next(s for s in DEMO.samples if s.silent_genes)
    filtered = sample_matrix(demo_run, spec.name, "filtered")
    silent = [f"SIMG{g + 1:05d}" for g in spec.silent_genes]
    assert dense(filtered[:, silent].X).sum() == 0
    assert dense(filtered.X).sum() > 0


@pytest.mark.parametrize("kind", ["filtered", "raw"])
def test_aggregate_blocks_equal_per_sample_matrices(demo_run, kind):
    agg = ad.read_h5ad(demo_run / "results" / "aggregate" / f"{kind}.h5ad")
    for sample in SAMPLES:
        per_sample = sample_matrix(demo_run, sample, kind)
        block = agg[(agg.obs["sample"] == sample).to_numpy()]
        assert list(block.obs_names) == [f"{b}-{sample}" for b in per_sample.obs_names]
        got = dense(block[:, per_sample.var_names].X)
        np.testing.assert_array_equal(got, dense(per_sample.X))


def test_workflow_aggregate_equals_anndata_concat(demo_run):
    """The workflow's own output (config join: outer) against anndata.concat."""
    agg = ad.read_h5ad(demo_run / "results" / "aggregate" / "filtered.h5ad")
    inputs = {s: sample_matrix(demo_run, s, "filtered") for s in SAMPLES}
    expected = ad.concat(inputs, join="outer", label="sample", index_unique="-", merge="same")
    assert_same_matrix_and_obs(agg, expected)
    assert list(agg.var_names) == list(expected.var_names)


@pytest.mark.parametrize("join", ["inner", "outer"])
def test_concat_engine_on_demo_matrices_equals_anndata_concat(demo_run, tmp_path, join):
    paths = {s: demo_run / "results" / "samples" / s / "filtered.h5ad" for s in SAMPLES}
    # Drop the silent genes from one sample so inner and outer joins really differ.
    spec = next(s for s in DEMO.samples if s.silent_genes)
    trimmed = ad.read_h5ad(paths[spec.name])
    trimmed = trimmed[:, ~trimmed.var_names.isin([f"SIMG{g + 1:05d}" for g in spec.silent_genes])]
    paths[spec.name] = tmp_path / f"{spec.name}.h5ad"
    trimmed.copy().write_h5ad(paths[spec.name])

    out = tmp_path / f"{join}.h5ad"
    concat_on_disk(paths, out, join=join, label="sample", index_unique="-", progress=False)
    got = ad.read_h5ad(out)
    expected = ad.concat(
        {s: ad.read_h5ad(p) for s, p in paths.items()},
        join=join,
        label="sample",
        index_unique="-",
        merge="same",
    )
    assert_same_matrix_and_obs(got, expected)
    assert list(got.var_names) == list(expected.var_names)
    n_genes = DEMO.n_genes - (len(spec.silent_genes) if join == "inner" else 0)
    assert got.n_vars == n_genes


def test_fastq_checks_count_every_read_and_match_sha256sum(demo_run):
    """The fastq_check records: reads as written by the simulator, checksums as sha256sum."""
    for spec in DEMO.samples:
        for lane in range(1, spec.lanes + 1):
            record = json.loads(
                (
                    demo_run
                    / "results"
                    / "samples"
                    / spec.name
                    / "fastq_check"
                    / f"rna_lane{lane}.json"
                ).read_text()
            )
            assert (record["sample"], record["lane"]) == (spec.name, lane)
            assert len(record["files"]) == 2  # fastq_1, fastq_2
            for read in record["files"].values():
                path = demo_run / read["path"]
                n_lines = len(gzip.decompress(path.read_bytes()).splitlines())
                assert read["reads"] == n_lines // 4 == record["reads"]
                sha = subprocess.run(
                    ["sha256sum", str(path)], capture_output=True, text=True, check=True
                ).stdout.split()[0]
                assert read["sha256"] == sha
        run_info = json.loads(
            (demo_run / "results" / "samples" / spec.name / "kb" / "run_info.json").read_text()
        )
        checked = sum(
            json.loads(p.read_text())["reads"]
            for p in (demo_run / "results" / "samples" / spec.name / "fastq_check").glob(
                "rna_*.json"
            )
        )
        assert run_info["n_processed"] == checked


def test_kb_ref_gets_the_rules_threads(demo_run):
    schema = yaml.safe_load((demo_run / "workflow" / "schemas" / "config.schema.yaml").read_text())
    reference = schema["properties"]["resources"]["properties"]["reference"]["properties"]
    threads = reference["threads"]["default"]  # the demo config keeps the default
    assert f"$ kb ref -t {threads} " in (demo_run / "logs" / "reference.log").read_text()


def assert_same_matrix_and_obs(got: ad.AnnData, expected: ad.AnnData) -> None:
    assert list(got.obs_names) == list(expected.obs_names)
    assert got.X.dtype == expected.X.dtype
    np.testing.assert_array_equal(dense(got.X), dense(expected.X))
    pd.testing.assert_series_equal(got.obs["sample"], expected.obs["sample"])


@pytest.mark.parametrize("kind", ["filtered", "raw"])
def test_aggregate_records_provenance_of_every_input(demo_run, kind):
    uns = ad.read_h5ad(demo_run / "results" / "aggregate" / f"{kind}.h5ad").uns["kbagg"]
    assert set(uns["inputs"]) == set(SAMPLES)
    for sample, record in uns["inputs"].items():
        path = demo_run / record["path"]
        assert path == demo_run / "results" / "samples" / sample / f"{kind}.h5ad"
        assert int(record["size"]) == path.stat().st_size
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert record["kb"]["call"].startswith(str(Path(sys.executable).with_name("kb")))
        assert f"results/samples/{sample}/kb.attempt-" in record["kb"]["call"]
        lanes = list(record["fastqs"].values())  # every library's lanes (rna, prot, hashtag)
        sheet = pd.read_csv(demo_run / "config" / "samples.tsv", sep="\t", dtype=str)
        assert len(lanes) == (sheet["sample"] == sample).sum()
        assert {lane["files"]["fastq_1"]["sha256"] for lane in lanes} == {
            hashlib.sha256((demo_run / "config" / p).read_bytes()).hexdigest()
            for p in sheet.loc[sheet["sample"] == sample, "fastq_1"]
        }
    versions = uns["versions"]
    assert versions["kb_python"] == "0.30.2" and versions["kallisto"] == "0.52.0"
    assert versions["bustools"] == "0.45.1" and versions["anndata"] == metadata.version("anndata")
    assert uns["workflow_version"]
    config = uns["config"]
    assert config["aggregate"]["join"] == "outer"
    assert "resources" not in config and "qc" not in config
    sheet = uns["sample_sheet"]
    assert list(sheet["metadata"]["sample"]) == SAMPLES
    rows = pd.read_csv(demo_run / "config" / "samples.tsv", sep="\t", dtype=str)
    assert len(sheet["lanes"]["fastq_1"]) == len(rows)  # gene expression and feature lanes


# --- feature-barcode libraries: CITE-seq antibodies (pbmc_b), hashtags (pbmc_c) ------------
FEATURE_SAMPLES = [(s.name, t) for s in DEMO.samples for t in s.feature_libraries]


@pytest.mark.parametrize(("sample", "feature_type"), FEATURE_SAMPLES)
def test_feature_counts_equal_the_truth_for_every_cell(demo_run, sample, feature_type):
    modality = MODALITY[feature_type]
    got = ad.read_h5ad(demo_run / "results" / "samples" / sample / f"{modality}.h5ad")
    cells = ad.read_h5ad(demo_run / "results" / "samples" / sample / "filtered.h5ad")
    assert list(got.obs_names) == list(cells.obs_names)  # the gene-expression cells
    truth = ad.read_h5ad(demo_run / "resources" / "demo" / "truth" / f"{sample}_{modality}.h5ad")
    expected = truth[got.obs_names, got.var_names]
    np.testing.assert_array_equal(dense(got.X), dense(expected.X))
    assert (got.var["feature_type"] == feature_type).all()


def test_hashtags_are_demultiplexed_as_simulated(demo_run):
    sample = next(s for s, t in FEATURE_SAMPLES if t == "Multiplexing Capture")
    got = ad.read_h5ad(demo_run / "results" / "samples" / sample / "hashtag.h5ad").obs
    truth = ad.read_h5ad(demo_run / "resources" / "demo" / "truth" / f"{sample}_hashtag.h5ad")
    truth = truth.obs.loc[got.index]
    singlets = (truth["hashtag_class"] == "singlet").to_numpy()
    right = got["hashtag"].astype(str).to_numpy() == truth["hashtag"].astype(str).to_numpy()
    assert right[singlets].mean() >= 0.99
    for kind in ("doublet", "negative"):
        wanted = (truth["hashtag_class"] == kind).to_numpy()
        assert wanted.any() and (got["hashtag_class"].astype(str).to_numpy()[wanted] == kind).all()
    config = yaml.safe_load((demo_run / "config" / "config.yaml").read_text())
    mapping = hashtag_samples(config)[sample]
    expected = truth["hashtag"].astype(str).map(mapping).where(singlets)
    pd.testing.assert_series_equal(
        got["hashtag_sample"].astype(object), expected.astype(object), check_names=False
    )
    table = pd.read_csv(demo_run / "results" / "qc" / sample / "hashtags.tsv", sep="\t")
    assert table.set_index("call")["cells"].sum() == len(got)
    assert (demo_run / "results" / "qc" / sample / "hashtags.png").stat().st_size > 10_000


def test_mudata_aggregate_rna_equals_the_h5ad_aggregate_and_cells_carry_their_sample(demo_run):
    mdata = mudata.read_h5mu(demo_run / "results" / "aggregate" / "filtered.h5mu")
    agg = ad.read_h5ad(demo_run / "results" / "aggregate" / "filtered.h5ad")
    rna = mdata.mod["rna"]
    assert list(rna.obs_names) == list(agg.obs_names)
    np.testing.assert_array_equal(dense(rna.X), dense(agg.X))
    pd.testing.assert_frame_equal(rna.obs, agg.obs)
    pd.testing.assert_frame_equal(rna.var, agg.var)
    assert set(mdata.mod) == {"rna", "prot", "hashtag"}
    assert set(mdata.mod["prot"].obs["sample"]) == {"pbmc_b"}
    # pbmc_c's cells are labelled with their hashtag's sample; doublets and negatives not.
    obs = mdata.obs
    pooled = obs["library"] == "pbmc_c"
    hashtags = mdata.mod["hashtag"].obs["hashtag_sample"].reindex(obs.index[pooled])
    pd.testing.assert_series_equal(
        obs.loc[pooled, "sample"].astype(object), hashtags.astype(object), check_names=False
    )
    assert (obs.loc[~pooled, "sample"].astype(str) == obs.loc[~pooled, "library"].astype(str)).all()
    # and with the metadata config hashtags gives them (donor), else the sheet's (condition)
    config = yaml.safe_load((demo_run / "config" / "config.yaml").read_text())
    donors = {e["sample"]: e["donor"] for e in config["hashtags"]["pbmc_c"].values()}
    expected = obs.loc[pooled, "sample"].astype(object).map(donors)
    assigned = expected.notna()
    assert (obs.loc[pooled, "donor"][assigned].astype(str) == expected[assigned]).all()
    assert (obs.loc[pooled, "donor"][~assigned].astype(str) == "pool").all()
    assert (obs.loc[pooled, "condition"].astype(str) == "treated").all()
    per_sample = mudata.read_h5mu(demo_run / "results" / "samples" / "pbmc_b" / "filtered.h5mu")
    assert set(per_sample.mod) == {"rna", "prot"}


def assert_h5mu_agrees_with_h5ad(workdir: Path) -> None:
    """The .h5mu's global obs and the h5ad aggregate tell the same story for every cell.

    `library` is the h5ad's `sample`. `sample` is the h5ad's too, except for the cells of a
    pool with a hashtag map: theirs is their hashtag's sample (missing for doublets and
    negatives), a name no sample of the sheet has and no other pool uses. So each sample
    name means one set of cells in both files. The sheet's metadata are the h5ad's, except
    where config hashtags gives a demultiplexed sample its own value."""
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    agg = ad.read_h5ad(workdir / "results" / "aggregate" / "filtered.h5ad").obs
    obs = mudata.read_h5mu(workdir / "results" / "aggregate" / "filtered.h5mu").obs
    assert sorted(obs.index) == sorted(agg.index)
    obs = obs.loc[agg.index]
    library, sample = obs["library"].astype(str), obs["sample"].astype(object)
    pd.testing.assert_series_equal(library, agg["sample"].astype(str), check_names=False)
    maps = config.get("hashtags") or {}
    sheet_samples = set(agg["sample"].astype(str))
    for name in sheet_samples:
        in_h5mu, in_h5ad = set(obs.index[sample == name]), set(agg.index[agg["sample"] == name])
        expected = set() if maps.get(name) else in_h5ad
        assert in_h5mu == expected, f"sample '{name}': other cells in the .h5mu than the h5ad"
    renamed = sample.notna() & (sample != library)
    assert library[renamed].isin(list(maps)).all()
    assert not sample[renamed].isin(sheet_samples).any()
    assert (
        sample[renamed].to_frame().join(library).groupby("sample")["library"].nunique() == 1
    ).all()
    own = {
        entry["sample"]: entry
        for entries in maps.values()
        for entry in entries.values()
        if isinstance(entry, dict)
    }
    metadata = [c for c in agg.columns if c in obs.columns and c not in ("sample", "library")]
    assert metadata, "no sheet metadata to compare"
    for column in metadata:
        expected = agg[column].astype(object).copy()
        for name, entry in own.items():
            if column in entry:
                expected[(sample == name).to_numpy()] = str(entry[column])
        pd.testing.assert_series_equal(
            obs[column].astype(object), expected, check_names=False, obj=column
        )


def test_h5mu_and_h5ad_aggregate_agree_on_sample_and_metadata_of_every_cell(demo_run):
    assert_h5mu_agrees_with_h5ad(demo_run)


def test_soma_store_equals_the_aggregate(demo_run):
    """The demo keeps a TileDB-SOMA store (aggregate.soma.enabled): read back, it holds the
    outer-join aggregate's cells, genes, counts and obs, plus the run that added each cell."""
    from kbagg.soma.store import read_store

    store = read_store(demo_run / "results" / "aggregate" / "filtered.soma")
    agg = ad.read_h5ad(demo_run / "results" / "aggregate" / "filtered.h5ad")
    store = store[agg.obs_names, agg.var_names]
    np.testing.assert_array_equal(dense(store.X), dense(agg.X))
    assert store.obs["kbagg_run"].str.startswith("kbagg ").all()
    for column in agg.obs.columns:
        pd.testing.assert_series_equal(
            store.obs[column], agg.obs[column], check_categorical=False, check_names=False
        )
    assert (store.var["gene_name"] == agg.var["gene_name"]).all()
    manifest = json.loads((demo_run / "results/aggregate/soma_manifest.json").read_text())
    assert manifest["action"] == "created"
    assert list(manifest["samples"]) == SAMPLES

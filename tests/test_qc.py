"""QC: metric functions on hand-made matrices (fast), the demo's metrics against the
simulator's truth, warnings through the workflow, and the `snakemake --report` HTML."""

from __future__ import annotations

import base64
import gzip
import json
import re
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from conftest import REPO, run_snakemake

from kbagg.qc import metrics as qc
from kbagg.qc.plots import knee_data
from kbagg.qc.run import run_sample_qc, run_summary
from kbagg.simulate.spec import DEMO

SAMPLES = [s.name for s in DEMO.samples]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_adata(counts, gene_names=None, barcodes=None, with_gene_name=True) -> ad.AnnData:
    counts = np.asarray(counts, dtype=float)
    n_obs, n_vars = counts.shape
    var = pd.DataFrame(index=pd.Index([f"G{i}" for i in range(n_vars)], name="gene_id"))
    if with_gene_name:
        var["gene_name"] = gene_names or [f"Gene{i}" for i in range(n_vars)]
    obs = pd.DataFrame(index=barcodes or [f"BC{i}" for i in range(n_obs)])
    return ad.AnnData(sp.csr_matrix(counts), obs=obs, var=var)


# --- unit tests: hand-made AnnData -------------------------------------------------------
RAW_COUNTS = [
    [10, 0, 5, 5],  # cell: 20 UMIs, 3 genes
    [0, 8, 0, 2],  # cell: 10 UMIs, 2 genes
    [3, 3, 3, 3],  # cell: 12 UMIs, 4 genes
    [1, 0, 0, 0],  # empty droplet
    [0, 0, 0, 1],  # empty droplet
    [0, 0, 0, 0],  # barcode with no UMI
]
CELLS = 3
RUN_INFO = {"n_processed": 1000, "n_pseudoaligned": 850, "n_unique": 600}


def test_umis_and_genes_per_barcode():
    adata = make_adata(RAW_COUNTS)
    np.testing.assert_array_equal(qc.umis_per_barcode(adata), [20, 10, 12, 1, 1, 0])
    np.testing.assert_array_equal(qc.genes_per_barcode(adata), [3, 2, 4, 1, 1, 0])


def test_pct_mito_counts_MT_and_mt_gene_names():
    adata = make_adata(RAW_COUNTS, gene_names=["MT-CO1", "mt-Nd1", "ACTB", "MTOR"])
    # MT-CO1 + mt-Nd1 = 14 + 11 of 44 UMIs; MTOR (no dash) is not mitochondrial
    assert qc.pct_mito(adata) == pytest.approx(100 * 25 / 44)


def test_pct_mito_is_na_without_mito_gene_names():
    assert qc.pct_mito(make_adata(RAW_COUNTS)) is None
    # no gene_name column: var_names are used
    assert qc.pct_mito(make_adata(RAW_COUNTS, with_gene_name=False)) is None
    no_umis = make_adata(np.zeros((2, 2)), gene_names=["MT-CO1", "ACTB"])
    assert qc.pct_mito(no_umis) is None


# The shipped defaults, from the one place that holds them: the config schema.
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
DEFAULTS = qc.Thresholds(
    **{
        k: v["default"]
        for k, v in SCHEMA["properties"]["qc"]["properties"].items()
        if k in qc.Thresholds.__dataclass_fields__
    }
)


@pytest.mark.parametrize(
    ("pct", "cells", "expected"),
    [
        (29.9, 10, ["pseudoaligned"]),
        (30.0, 10, []),
        (30.0, 9, ["cells called"]),
        (5.0, 0, ["pseudoaligned", "cells called"]),
        (100.0, None, []),  # no filter: no cell count to judge
        (None, 50, []),
    ],
)
def test_warning_thresholds(pct, cells, expected):
    found = qc.qc_warnings({"pct_pseudoaligned": pct, "cells_called": cells}, DEFAULTS)
    assert len(found) == len(expected)
    for warning, what in zip(found, expected, strict=True):
        assert what in warning


def test_thresholds_are_configurable():
    metrics = {"pct_pseudoaligned": 85.0, "cells_called": 3}
    assert qc.qc_warnings(metrics, qc.Thresholds(min_pct_pseudoaligned=90, min_cells=2))
    assert not qc.qc_warnings(metrics, qc.Thresholds(min_pct_pseudoaligned=80, min_cells=3))


def test_sample_metrics_from_hand_made_matrices():
    raw = make_adata(RAW_COUNTS, gene_names=["MT-CO1", "B", "C", "D"])
    row = qc.sample_metrics("s1", RUN_INFO, {}, raw, raw[:CELLS].copy(), DEFAULTS)
    assert row == {
        "sample": "s1",
        "reads_processed": 1000,
        "pct_pseudoaligned": pytest.approx(85.0),
        "pct_unique": pytest.approx(60.0),
        "barcodes_seen": 6,
        "cells_called": 3,
        "median_umis_per_cell": 12.0,
        "median_genes_per_cell": 3.0,
        "fraction_umis_in_cells": pytest.approx(42 / 44),
        "pct_mito": pytest.approx(100 * 13 / 42),
        "pct_doublets": None,  # no predicted_doublet column
        "pct_ambient": None,  # ambient.method none
        "warnings": "only 3 cells called (< 10): check the filter threshold and the knee plot",
    }


def test_pct_doublets_counts_only_cells_with_a_call():
    cells = make_adata(RAW_COUNTS[:4], gene_names=["MT-CO1", "B", "C", "D"])
    cells.obs["predicted_doublet"] = pd.array([True, False, None, False], dtype="boolean")
    assert qc.pct_doublets(cells) == pytest.approx(100 / 3)
    cells.obs["predicted_doublet"] = pd.array([None] * 4, dtype="boolean")
    assert qc.pct_doublets(cells) is None


def test_sample_metrics_without_filter_has_na_cell_metrics():
    raw = make_adata(RAW_COUNTS)
    row = qc.sample_metrics(
        "s1", {"n_processed": 10, "n_pseudoaligned": 1}, {}, raw, None, DEFAULTS
    )
    assert row["barcodes_seen"] == 6
    for key in ("cells_called", "median_umis_per_cell", "fraction_umis_in_cells"):
        assert row[key] is None
    assert "pseudoaligned" in row["warnings"] and "cells" not in row["warnings"]


def test_knee_data_threshold_is_smallest_cell_umi_count():
    raw = make_adata(RAW_COUNTS)
    knee = knee_data(raw, raw[:CELLS].copy())
    np.testing.assert_array_equal(knee.umis, [20, 12, 10, 1, 1, 0])
    assert knee.threshold == 10 and knee.cells == CELLS
    assert knee_data(raw, None).threshold is None


def test_sample_and_summary_files(tmp_path):
    """The scripts' functions end to end: TSVs round-trip, PNGs and HTML are written, warnings
    survive into the summary, no temporary file is left behind."""
    raw = make_adata(RAW_COUNTS)
    run_info = tmp_path / "run_info.json"
    run_info.write_text(json.dumps(RUN_INFO))
    inspect = tmp_path / "inspect.json"
    inspect.write_text("{}")
    paths = {}
    for sample, n_cells in (("good", 3), ("few", 2)):
        raw_path, filtered_path = tmp_path / f"{sample}_raw.h5ad", tmp_path / f"{sample}_f.h5ad"
        raw.write_h5ad(raw_path)
        raw[:n_cells].copy().write_h5ad(filtered_path)
        paths[sample] = tmp_path / "qc" / sample / "metrics.tsv"
        run_sample_qc(
            sample,
            run_info,
            inspect,
            raw_path,
            filtered_path,
            paths[sample],
            tmp_path / "qc" / sample / "knee.png",
            qc.Thresholds(min_pct_pseudoaligned=30, min_cells=3),
        )
    out = tmp_path / "qc"
    summary = run_summary(
        list(paths.values()),
        out / "summary.tsv",
        out / "summary.png",
        out / "summary.html",
        qc.Thresholds(min_pct_pseudoaligned=30, min_cells=3),
    )
    table = pd.read_csv(out / "summary.tsv", sep="\t", keep_default_na=False)
    assert list(table.columns) == qc.COLUMNS
    assert table["sample"].tolist() == ["good", "few"]
    assert table["cells_called"].tolist() == [3, 2]
    assert table["warnings"].tolist() == ["", summary["warnings"][1]]
    assert "only 2 cells called (< 3)" in table["warnings"][1]
    assert table["pct_mito"].tolist() == ["NA", "NA"]
    for png in (out / "summary.png", out / "good" / "knee.png", out / "few" / "knee.png"):
        assert png.read_bytes().startswith(PNG_MAGIC)
    page = (out / "summary.html").read_text()
    assert page.count("<tr class=bad>") == 1 and "only 2 cells called" in page
    assert not list(out.rglob(".*tmp*")), "temporary files left behind"


# --- the demo, through the workflow ------------------------------------------------------
def fastq_reads(path: Path) -> int:
    with gzip.open(path, "rb") as handle:
        return sum(1 for _ in handle) // 4


def read_metrics(run: Path, sample: str) -> dict:
    table = pd.read_csv(run / "results" / "qc" / sample / "metrics.tsv", sep="\t")
    assert len(table) == 1
    return table.iloc[0].to_dict()


@pytest.mark.slow
@pytest.mark.parametrize("sample", SAMPLES)
def test_demo_metrics_match_the_truth(demo_run, sample):
    truth = ad.read_h5ad(demo_run / "resources" / "demo" / "truth" / f"{sample}.h5ad")
    cells = truth[truth.obs["is_cell"].to_numpy()]
    umis = np.asarray(cells.X.sum(axis=1)).ravel()
    genes = np.asarray((cells.X > 0).sum(axis=1)).ravel()
    sheet = pd.read_csv(demo_run / "config" / "samples.tsv", sep="\t")
    gex = (sheet["sample"] == sample) & (sheet["feature_type"] == "Gene Expression")
    r1 = [demo_run / "config" / p for p in sheet.loc[gex, "fastq_1"]]

    got = read_metrics(demo_run, sample)
    assert got["sample"] == sample
    assert got["reads_processed"] == sum(fastq_reads(p) for p in r1)
    assert got["pct_pseudoaligned"] == 100.0
    assert 0 < got["pct_unique"] <= 100
    assert got["barcodes_seen"] == truth.n_obs
    assert (
        got["cells_called"]
        == cells.n_obs
        == next(s.n_cells for s in DEMO.samples if s.name == sample)
    )
    assert got["median_umis_per_cell"] == np.median(umis)
    assert got["median_genes_per_cell"] == np.median(genes)
    assert got["fraction_umis_in_cells"] == pytest.approx(umis.sum() / truth.X.sum(), abs=1e-4)
    assert np.isnan(got["pct_mito"]), "demo genes are Sim<N>: no mitochondrial names"
    assert pd.isna(got["warnings"]), f"unexpected warning: {got['warnings']}"
    knee = demo_run / "results" / "qc" / sample / "knee.png"
    assert knee.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.slow
def test_demo_summary_has_one_row_per_sample(demo_run):
    qc_dir = demo_run / "results" / "qc"
    summary = pd.read_csv(qc_dir / "summary.tsv", sep="\t")
    assert summary["sample"].tolist() == SAMPLES
    assert list(summary.columns) == qc.COLUMNS
    for sample in SAMPLES:
        row = summary.set_index("sample").loc[sample].to_dict()
        assert row == pytest.approx(
            {k: v for k, v in read_metrics(demo_run, sample).items() if k != "sample"}, nan_ok=True
        )
    assert (qc_dir / "summary.png").read_bytes().startswith(PNG_MAGIC)
    assert "All 3 samples pass" in (qc_dir / "summary.html").read_text()


def snakemake_in(run: Path, *args: str):
    """Snakemake on a copy of the demo run, with the copy's own Snakefile."""
    return run_snakemake(run, *args, snakefile=run / "workflow" / "Snakefile")


def report_results(report: Path) -> dict:
    """The report's embedded results: {path: {name, labels, caption, data_uri, ...}}."""
    match = re.search(r"var results = (\{.*?\});\s*</script>", report.read_text(), re.S)
    assert match, "no results in the report"
    return json.loads(match.group(1))


def embedded_bytes(entry: dict) -> bytes:
    return base64.b64decode(entry["data_uri"].split("base64,", 1)[1])


@pytest.fixture(scope="module")
def report_run(demo_run, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("report") / "kbagg"
    shutil.copytree(demo_run, run, symlinks=True)
    snakemake_in(run, "--report", str(run / "report.html"))
    return run


@pytest.mark.slow
def test_report_has_every_sample_metrics_table_and_knee_plot(report_run):
    results = report_results(report_run / "report.html")
    for sample in SAMPLES:
        for name, label in (("metrics.tsv", "metrics table"), ("knee.png", "knee plot")):
            path = f"results/qc/{sample}/{name}"
            assert path in results, f"{path} not in the report: {sorted(results)}"
            entry = results[path]
            assert entry["labels"] == {"sample": sample, "result": label}
            assert sample in entry["caption"]
            assert embedded_bytes(entry) == (report_run / path).read_bytes()
    for name in ("summary.tsv", "summary.html", "summary.png", "multiqc_report.html"):
        path = f"results/qc/{name}"
        assert embedded_bytes(results[path]) == (report_run / path).read_bytes()
    assert results["results/qc/summary.html"]["mime_type"] == "text/html"


@pytest.mark.slow
def test_multiqc_report_lists_every_sample(demo_run):
    """MultiQC's own tables: every sample, named as in the sheet, from both sources."""
    data = demo_run / "results" / "qc" / "multiqc_data"
    general = pd.read_csv(data / "multiqc_general_stats.txt", sep="\t")
    assert sorted(general["Sample"]) == sorted(SAMPLES)
    assert any(c.startswith("bustools") for c in general.columns)
    kbagg = [c for c in general.columns if c.startswith("custom_content_kbagg_qc")]
    cells = general.set_index("Sample")[
        next(c for c in kbagg if c.endswith("cells_called"))
    ].to_dict()
    assert cells == {s.name: s.n_cells for s in DEMO.samples}
    report = (demo_run / "results" / "qc" / "multiqc_report.html").read_text()
    assert all(sample in report for sample in SAMPLES)


@pytest.mark.slow
def test_bad_samples_get_warnings_not_failures(demo_run, tmp_path):
    """Raise the thresholds above the demo's values: every sample warns, in metrics.tsv,
    summary.tsv, the job logs, Snakemake's output and the report; the run still succeeds."""
    run = tmp_path / "kbagg"
    shutil.copytree(demo_run, run, symlinks=True)
    config = run / "config" / "config.yaml"
    settings = yaml.safe_load(config.read_text())
    settings["qc"] = {"min_pct_pseudoaligned": 100, "min_cells": 35}
    config.write_text(yaml.safe_dump(settings))
    dry = snakemake_in(run, "--dry-run").stdout
    planned = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.split("Job stats:", 1)[1], re.M))
    assert planned == {
        "all": "1",
        "qc_sample": "3",
        "qc_summary": "1",
        "multiqc": "1",
        "total": "6",
    }, dry
    proc = snakemake_in(run)

    # 100.0% pseudoaligned is not < 100: only the cell count warns, and only below 35
    few = {s.name for s in DEMO.samples if s.n_cells < 35}
    assert few == {"pbmc_b"}
    summary = pd.read_csv(run / "results" / "qc" / "summary.tsv", sep="\t", keep_default_na=False)
    for sample in SAMPLES:
        warning = read_metrics(run, sample)["warnings"]
        log = (run / "logs" / "qc" / f"{sample}.log").read_text()
        if sample in few:
            assert "cells called (< 35)" in warning
            assert summary.set_index("sample").loc[sample, "warnings"] == warning
            assert f"WARNING: sample '{sample}': only" in log
            assert f"WARNING: sample '{sample}'" in proc.stderr
        else:
            assert pd.isna(warning) and "WARNING" not in log
    snakemake_in(run, "--report", str(run / "report.html"))
    results = report_results(run / "report.html")
    page = embedded_bytes(results["results/qc/summary.html"]).decode()
    assert page.count("<tr class=bad>") == 1 and "1 of 3 samples have warnings" in page

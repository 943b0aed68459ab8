"""Cell calling through the real workflow on the simulator's hard cases, against its truth.

The HARD sample holds normal cells, small cells at 1/5 of their depth, doublets and 2,000
empty droplets of ambient RNA, 10% of them ambient-rich (median 150 UMIs), so that ~170
empty droplets are above EmptyDrops' `lower` and are tested. With `filter.method:
emptydrops`, kb's bustools knee still runs (its calls are in `obs['bustools_cell']` of
raw.h5ad), so one run measures both methods:

- EmptyDrops recalls >= 90% of the small cells at >= 99% precision, on data where the
  bustools knee recovers fewer than half of them and "every barcode above `lower` is a
  cell" has a precision ~0.55: EmptyDrops must beat that by >= 0.3 and keep its recall;
- Scrublet's doublet score ranks the simulated doublets first (AUC >= 0.85) on doublets
  downsampled to a singlet's depth, where total UMIs rank them little better than chance
  (< 0.7). Genes detected keeps some signal (two cells' programmes in one droplet, and
  EmptyDrops misses the shallowest doublets): Scrublet must beat both rankings by >= 0.05.
  Only ~14 doublets are called here; test_doublets holds the larger margin on 70;
- every called cell has the QC columns, with the right dtypes.

The figures are printed (pytest -s) for the table in docs/workflow.md.
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run_snakemake

from kbagg.simulate.demo import write_demo
from kbagg.simulate.spec import HARD, fastq_path

pytestmark = pytest.mark.slow


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties half."""
    ranks = pd.Series(scores).rank().to_numpy()
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.fixture(scope="module")
def hard_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("hard_data")
    write_demo(data, HARD)
    (sample,) = HARD.samples
    workdir = tmp_path_factory.mktemp("hard_run")
    lanes = [
        [
            sample.name,
            str(fastq_path(data, sample.name, lane, 1)),
            str(fastq_path(data, sample.name, lane, 2)),
            sample.technology,
        ]
        for lane in range(1, sample.lanes + 1)
    ]
    (workdir / "samples.tsv").write_text(
        "\n".join(
            "\t".join(row) for row in [["sample", "fastq_1", "fastq_2", "technology"], *lanes]
        )
        + "\n"
    )
    config = {
        "samples": "samples.tsv",
        "reference": {"fasta": str(data / "genome.fa"), "gtf": str(data / "genes.gtf")},
        "filter": {"method": "emptydrops"},
        "qc": {"multiqc": False},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--configfile", str(workdir / "config.yaml"))
    truth = ad.read_h5ad(data / "truth" / f"{sample.name}.h5ad")
    samples = workdir / "results" / "samples" / sample.name
    return (
        truth,
        ad.read_h5ad(samples / "raw.h5ad"),
        ad.read_h5ad(samples / "filtered.h5ad"),
        workdir,
    )


def precision_recall(called: pd.Index, truth: ad.AnnData, kinds) -> tuple[float, float]:
    real = truth.obs_names[truth.obs["kind"] != "empty"]
    wanted = truth.obs_names[truth.obs["kind"].isin(kinds)]
    precision = len(called.intersection(real)) / max(len(called), 1)
    return precision, len(called.intersection(wanted)) / len(wanted)


def cell_calling_figures(truth: ad.AnnData, methods: dict[str, pd.Index]) -> dict[str, tuple]:
    """(called, precision, recall of all real droplets, recall of small cells) per method."""
    figures = {}
    for name, called in methods.items():
        precision, small = precision_recall(called, truth, ["small_cell"])
        _, everything = precision_recall(called, truth, ["cell", "small_cell", "doublet"])
        figures[name] = (len(called), precision, everything, small)
    print("\nmethod | called | precision | recall (all real) | recall (small cells)")
    for name, (n, p, r_all, r_small) in figures.items():
        print(f"{name} | {n} | {p:.3f} | {r_all:.3f} | {r_small:.3f}")
    return figures


def assert_emptydrops_beats_the_baselines(figures: dict[str, tuple], n_empty_tested: int) -> None:
    """EmptyDrops against the knee and against "every barcode above `lower`"."""
    assert n_empty_tested >= 100, "empty droplets above lower must be tested"
    _, precision, recall, small = figures["emptydrops"]
    _, above_precision, above_recall, above_small = figures["above lower"]
    assert figures["bustools"][3] < 0.5, "the knee must miss most small cells here"
    assert above_precision < 0.7, "calling everything above lower must not be precise here"
    assert precision >= 0.99 and precision >= above_precision + 0.3
    assert small >= 0.9 and small >= above_small - 0.1
    assert recall >= 0.95 and recall >= above_recall - 0.05


def test_emptydrops_finds_small_cells_the_knee_misses(hard_run):
    truth, raw, filtered, _ = hard_run
    bustools = raw.obs_names[raw.obs["bustools_cell"].to_numpy(dtype=bool)]
    emptydrops = raw.obs_names[raw.obs["emptydrops_cell"].to_numpy(dtype=bool)]
    assert list(filtered.obs_names) == list(emptydrops)
    lower = json.loads(filtered.uns["kbagg_cells"])["params"]["lower"]
    above_lower = raw.obs_names[np.asarray(raw.X.sum(axis=1)).ravel() > lower]
    empty = truth.obs_names[truth.obs["kind"] == "empty"]
    figures = cell_calling_figures(
        truth, {"bustools": bustools, "emptydrops": emptydrops, "above lower": above_lower}
    )
    assert_emptydrops_beats_the_baselines(figures, len(above_lower.intersection(empty)))


def test_scrublet_scores_rank_doublets_first(hard_run):
    truth, _, filtered, _ = hard_run
    kinds = truth.obs["kind"].reindex(filtered.obs_names)
    scored = filtered.obs["doublet_score"].notna().to_numpy()
    is_doublet = (kinds == "doublet").to_numpy()
    value = auc(filtered.obs["doublet_score"].to_numpy()[scored], is_doublet[scored])
    # The trivial rankings on the same cells: by total UMIs, by genes detected.
    umis = auc(filtered.obs["n_umis"].to_numpy()[scored], is_doublet[scored])
    genes = auc(filtered.obs["n_genes"].to_numpy()[scored], is_doublet[scored])
    print(
        f"\nAUC on {is_doublet.sum()} simulated doublets: Scrublet {value:.3f}, "
        f"total UMIs {umis:.3f}, genes detected {genes:.3f}"
    )
    assert umis < 0.7, "depth-matched doublets: total UMIs alone must not find them"
    assert value >= 0.85 and value >= max(umis, genes) + 0.05


def test_cells_carry_qc_columns_and_the_method_record(hard_run):
    truth, _, filtered, workdir = hard_run
    obs = filtered.obs
    assert obs["n_umis"].dtype == np.int64 and obs["n_genes"].dtype == np.int64
    assert obs["pct_mito"].isna().all()  # the simulated genes have no MT- names
    assert obs["doublet_score"].dtype == np.float64
    assert isinstance(obs["predicted_doublet"].dtype, pd.BooleanDtype)
    expected = np.asarray(truth[obs.index].X.sum(axis=1)).ravel()
    np.testing.assert_array_equal(obs["n_umis"].to_numpy(), expected)
    record = json.loads(filtered.uns["kbagg_cells"])
    assert record["method"] == "emptydrops" and record["params"]["seed"] == 0
    assert record["params"]["fdr"] == 0.001 and record["n_cells"] == filtered.n_obs
    agg = ad.read_h5ad(workdir / "results" / "aggregate" / "filtered.h5ad")
    assert isinstance(agg.obs["predicted_doublet"].dtype, pd.BooleanDtype)
    cells = agg.uns["kbagg"]["inputs"]["hard_a"]["cells"]
    assert cells["method"] == "emptydrops"
    knee = workdir / "results" / "qc" / "hard_a" / "knee.png"
    assert knee.stat().st_size > 10_000

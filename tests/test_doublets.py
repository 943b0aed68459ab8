"""Doublet scores (scrublet via scanpy) and per-cell QC (kbagg.cells.doublets)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from kbagg.cells.doublets import MIN_CELLS, score_doublets, threshold_minimum
from kbagg.cells.metrics import cell_qc
from kbagg.simulate.cells import simulate_droplets
from kbagg.simulate.spec import HardCells


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (sklearn's when installed, else the rank-sum formula)."""
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        from scipy.stats import rankdata

        ranks = rankdata(scores)
        n_pos, n_neg = positive.sum(), (~positive).sum()
        return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(roc_auc_score(positive, scores))


@pytest.fixture(scope="module")
def cells_with_doublets():
    """800 singlets of 7 types (200 of them small) and ~8% doublets, no empty droplets.

    The doublets are depth-matched (`doublet_umis="singlet"`): their UMIs are distributed
    like the singlets', so neither total UMIs nor genes detected finds them."""
    hard = HardCells(200, doublet_umis="singlet")
    droplets = simulate_droplets(np.random.default_rng(1), 2000, 600, 0, hard)
    adata = ad.AnnData(droplets.counts.astype(np.float32), obs=droplets.obs)
    return adata, score_doublets(adata, seed=0)


# --- QC ------------------------------------------------------------------------------------
def test_cell_qc_equals_a_hand_computation():
    counts = np.array([[3, 0, 1, 6], [0, 0, 0, 0], [0, 2, 0, 0], [1, 1, 1, 1]])
    var = pd.DataFrame({"gene_name": ["MT-CO1", "Actb", "mt-Nd1", "GAPDH"]}, index=list("abcd"))
    obs = pd.DataFrame(index=["c1", "c2", "c3", "c4"])
    qc = cell_qc(ad.AnnData(sp.csr_matrix(counts), obs=obs, var=var))
    assert list(qc.index) == ["c1", "c2", "c3", "c4"]
    assert qc["n_umis"].tolist() == [10, 0, 2, 4]
    assert qc["n_genes"].tolist() == [3, 0, 1, 4]
    assert qc["n_umis"].dtype == np.int64 and qc["n_genes"].dtype == np.int64
    np.testing.assert_array_equal(qc["pct_mito"].to_numpy(), [40.0, np.nan, 0.0, 50.0])


def test_cell_qc_without_mito_genes_has_missing_pct_mito():
    var = pd.DataFrame({"gene_name": ["ACTB", "MTOR", "nt-x"]}, index=list("abc"))
    qc = cell_qc(ad.AnnData(np.array([[1.0, 2, 3], [0, 4, 0]]), var=var))
    assert qc["pct_mito"].isna().all() and qc["pct_mito"].dtype == np.float64
    assert qc["n_umis"].tolist() == [6, 4]


def test_cell_qc_uses_var_names_when_there_is_no_gene_name():
    adata = ad.AnnData(sp.csr_matrix(np.array([[1, 3]])), var=pd.DataFrame(index=["MT-ND1", "X"]))
    assert cell_qc(adata)["pct_mito"].tolist() == [25.0]


# --- threshold -----------------------------------------------------------------------------
def test_threshold_minimum_splits_two_modes():
    rng = np.random.default_rng(0)
    two = np.concatenate([rng.normal(0.1, 0.03, 2000), rng.normal(0.6, 0.05, 500)])
    threshold = threshold_minimum(two)
    assert (two[:2000] < threshold).all() and (two[2000:] > threshold).all()
    assert threshold_minimum(np.full(10, 0.3)) is None
    assert threshold_minimum(np.array([np.nan])) is None


# --- scrublet ------------------------------------------------------------------------------
def test_too_few_cells_give_missing_values_and_a_reason():
    adata = ad.AnnData(sp.csr_matrix(np.ones((MIN_CELLS - 1, 50))))
    result = score_doublets(adata)
    score, predicted = result
    assert np.isnan(score).all() and len(score) == MIN_CELLS - 1
    assert predicted.isna().all() and len(predicted) == MIN_CELLS - 1
    assert score is result.doublet_score and predicted is result.predicted_doublet
    assert (
        result.reason
        == f"{MIN_CELLS - 1} cells: scrublet embeds cells in 30 principal components and needs at least {MIN_CELLS}"
    )
    assert result.threshold is None


@pytest.mark.slow
def test_scrublet_failure_gives_missing_values_and_a_reason():
    # 40 cells but only 5 genes: too few for 30 principal components, scrublet raises.
    rng = np.random.default_rng(0)
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(5.0, (40, 5)).astype(np.float32)))
    result = score_doublets(adata)
    assert result.reason.startswith("scrublet failed: ")
    assert np.isnan(result.doublet_score).all() and result.predicted_doublet.isna().all()


@pytest.mark.slow
def test_scrublet_ranks_simulated_doublets_first(cells_with_doublets):
    adata, result = cells_with_doublets
    doublet = (adata.obs["kind"] == "doublet").to_numpy()
    assert result.reason is None and doublet.sum() == 70
    # Against the trivial rankings on the same cells: by total UMIs, by genes detected.
    umis = np.asarray(adata.X.sum(axis=1)).ravel()
    genes = np.asarray((adata.X > 0).sum(axis=1)).ravel()
    baseline = max(auc(umis, doublet), auc(genes, doublet))
    scrublet = auc(result.doublet_score, doublet)
    print(
        f"\nAUC: scrublet {scrublet:.3f}, UMIs {auc(umis, doublet):.3f}, genes {auc(genes, doublet):.3f}"
    )
    assert baseline < 0.7, "depth-matched doublets: depth alone must not find them"
    assert scrublet >= 0.8 and scrublet >= baseline + 0.2
    called = result.predicted_doublet.to_numpy(dtype=bool)
    assert called.sum() >= 20 and doublet[called].mean() >= 0.9
    assert adata.obs.columns.tolist() == ["kind", "is_cell", "cell_type", "doublet_of"]


@pytest.mark.slow
def test_scrublet_same_seed_same_scores(cells_with_doublets):
    adata, result = cells_with_doublets
    again = score_doublets(adata, seed=0)
    np.testing.assert_array_equal(result.doublet_score, again.doublet_score)
    assert (result.predicted_doublet == again.predicted_doublet).all()

"""EmptyDrops (kbagg.cells.emptydrops) against ground truth.

- Good-Turing against Gale & Sampson's published estimates;
- Monte Carlo p-values against a direct Dirichlet-multinomial simulation (Dirichlet draw,
  then multinomial), which checks the Polya-urn shortcut and the shared-draws scheme;
- cell calls on the hard-case simulation (kbagg.simulate.cells), against its truth;
- degenerate inputs: a clear KbaggError or a defined result with a warning;
- a real tiny library from kb count (slow).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import gammaln

from kbagg.cells.emptydrops import (
    EmptyDropsWarning,
    empty_drops,
    good_turing_proportions,
    knee_point,
)
from kbagg.errors import KbaggError
from kbagg.simulate.cells import simulate_droplets
from kbagg.simulate.spec import HardCells

# Gale & Sampson (1995), "Good-Turing frequency estimation without tears", prosody data:
# (r, n_r) and their smoothed r* (Table, also reproduced by R's Gale S code).
PROSODY = [
    (1, 120), (2, 40), (3, 24), (4, 13), (5, 15), (6, 5), (7, 11), (8, 2), (9, 2), (10, 1),
    (12, 3), (14, 2), (15, 1), (16, 1), (17, 3), (19, 1), (20, 3), (21, 2), (23, 3), (24, 3),
    (25, 3), (26, 2), (27, 2), (28, 1), (31, 2), (32, 2), (33, 1), (34, 2), (36, 2), (41, 3),
    (43, 1), (45, 3), (46, 1), (47, 1), (50, 1), (71, 1), (84, 1), (101, 1), (105, 1),
    (121, 1), (124, 1), (146, 1), (162, 1), (193, 1), (199, 1), (224, 1), (226, 1), (254, 1),
    (257, 1), (339, 1), (421, 1), (456, 1), (481, 1), (483, 1), (1140, 1), (1256, 1),
    (1322, 1), (1530, 1), (2131, 1), (2395, 1), (6925, 1), (7846, 1),
]  # fmt: skip
PROSODY_R_STAR = {1: 0.7628079, 2: 1.706448, 3: 2.679796, 4: 3.663988, 5: 4.653366,
                  10: 9.627446, 50: 49.57351, 1140: 1138.636, 7846: 7838.899}  # fmt: skip
PROSODY_P0 = 0.003883244

# The hard-case setting of the recall test: 2,000 genes, 600 normal cells (median 2,500
# UMIs), 200 small cells at 1/5 of that depth, 40,000 empty droplets whose tail reaches 300
# UMIs, so that a few hundred of them are tested (> lower) and precision can fail.
HARD_TEST = HardCells(n_small_cells=200, empty_umis_sigma=1.4, empty_umis_max=300)


def dm_log_prob(x: np.ndarray, proportions: np.ndarray, alpha: float) -> float:
    """Dirichlet-multinomial log-probability of the count vector x, written out."""
    n = x.sum()
    if math.isinf(alpha):
        return float(gammaln(n + 1) + np.sum(x * np.log(proportions) - gammaln(x + 1)))
    ap = alpha * proportions
    return float(
        gammaln(n + 1) + gammaln(alpha) - gammaln(n + alpha)
        + np.sum(gammaln(x + ap) - gammaln(x + 1) - gammaln(ap))
    )  # fmt: skip


@pytest.fixture(scope="module")
def hard():
    droplets = simulate_droplets(np.random.default_rng(1), 2000, 600, 40_000, HARD_TEST)
    return droplets, empty_drops(droplets.counts, n_iter=10_000, seed=0)


# --- Good-Turing ---------------------------------------------------------------------------
def test_good_turing_reproduces_gale_sampson_prosody_estimates():
    counts = np.concatenate([np.full(n, r) for r, n in PROSODY] + [np.zeros(5, dtype=int)])
    proportions = good_turing_proportions(counts)
    total = counts.sum()
    assert proportions[counts == 0].sum() == pytest.approx(PROSODY_P0, abs=1e-9)
    assert np.allclose(proportions[counts == 0], PROSODY_P0 / 5)
    for r, r_star in PROSODY_R_STAR.items():
        assert proportions[counts == r][0] * total == pytest.approx(r_star, rel=1e-6)
    assert proportions.sum() == pytest.approx(1.0)


def test_good_turing_without_singletons_gives_zeros_a_pseudo_count():
    # No count of 1: Good-Turing's unseen mass is 0; DropletUtils then gives the zeros
    # 1/total between them and scales the rest by (1 - 1/total). One distinct count: r* = r.
    assert good_turing_proportions(np.array([2, 2, 0])) == pytest.approx([0.375, 0.375, 0.25])


# --- p-values, alpha -----------------------------------------------------------------------
def ambient_with_tested(rng, alpha_true: float, n_genes: int = 40):
    ambient = rng.gamma(0.5, 1.0, n_genes)
    ambient /= ambient.sum()
    cell = ambient * np.exp(rng.normal(0.0, 1.0, n_genes))
    cell /= cell.sum()

    def draw(total):
        q = ambient if math.isinf(alpha_true) else rng.dirichlet(alpha_true * ambient)
        return rng.multinomial(total, q)

    empties = [draw(t) for t in rng.integers(1, 40, 3000)]
    tested = [draw(t) for t in (120, 150, 150, 260)] + [
        rng.multinomial(t, cell) for t in (130, 180)
    ]
    return sp.csr_matrix(np.array(empties + tested)), 3000 + np.arange(len(tested))


@pytest.mark.parametrize("alpha", [None, math.inf])
def test_p_values_match_a_direct_dirichlet_multinomial_simulation(alpha):
    rng = np.random.default_rng(5)
    raw, rows = ambient_with_tested(rng, alpha_true=50.0)
    n_iter = 4000
    result = empty_drops(raw, n_iter=n_iter, retain=math.inf, alpha=alpha, seed=3)
    a = result.params["alpha_used"]
    assert a == (math.inf if alpha else pytest.approx(50.0, rel=0.2))
    seen = result.ambient > 0
    p = result.ambient[seen]
    for row in rows:
        x = raw[row].toarray().ravel()[seen]
        observed = dm_log_prob(x, p, a)
        assert result.log_prob[row] == pytest.approx(observed, rel=1e-10)
        sims = [
            dm_log_prob(
                rng.multinomial(x.sum(), p if math.isinf(a) else rng.dirichlet(a * p)), p, a
            )
            for _ in range(n_iter)
        ]
        direct = (1 + np.sum(np.array(sims) <= observed + 1e-9 * abs(observed))) / (n_iter + 1)
        # Two independent Monte Carlo estimates: 4.5 standard errors of their difference.
        se = math.sqrt(2 * max(direct * (1 - direct), 1 / n_iter) / n_iter)
        assert abs(result.p_value[row] - direct) < 4.5 * se, (row, result.p_value[row], direct)


def test_alpha_estimate_recovers_the_true_concentration():
    rng = np.random.default_rng(8)
    ambient = rng.gamma(0.5, 1.0, 300)
    ambient /= ambient.sum()
    rows = [rng.multinomial(t, rng.dirichlet(200.0 * ambient)) for t in rng.integers(5, 80, 4000)]
    rows.append(rng.multinomial(500, ambient))  # one barcode to test
    result = empty_drops(sp.csr_matrix(np.array(rows)), n_iter=10, retain=math.inf)
    assert result.params["alpha_used"] == pytest.approx(200.0, rel=0.15)


# --- the hard cases ------------------------------------------------------------------------
def test_recovers_small_cells_the_knee_misses(hard):
    droplets, result = hard
    kind = droplets.obs["kind"].to_numpy()
    small = kind == "small_cell"
    knee = knee_point(result.total)
    assert result.params["knee"] == knee
    assert np.mean(result.total[small] >= knee) < 0.5  # the knee misses most small cells
    called = result.is_cell
    assert np.mean(called[small]) >= 0.95
    assert np.mean(kind[called] != "empty") >= 0.99
    assert called[kind == "cell"].mean() >= 0.95
    # Empty droplets above `lower` were tested (precision is not trivially 1).
    assert np.count_nonzero((kind == "empty") & (result.total > 100)) >= 100


def test_result_layout_and_provenance(hard):
    droplets, result = hard
    n = droplets.counts.shape[0]
    tested = result.total > 100
    assert result.total.tolist() == np.asarray(droplets.counts.sum(axis=1)).ravel().tolist()
    assert np.isnan(result.p_value[~tested]).all() and not np.isnan(result.p_value[tested]).any()
    assert not result.is_cell[~tested].any()
    retained = result.total >= result.params["retain_used"]
    assert (result.p_value[retained] == 0).all() and (result.fdr[retained] == 0).all()
    assert set(result.p_value[tested & ~retained]) <= {(k + 1) / 10_001 for k in range(10_001)}
    assert result.ambient.sum() == pytest.approx(1.0)
    assert result.to_frame().shape == (n, 6)
    assert result.params | {"alpha_used": None, "knee": None, "retain_used": None} == {
        "method": "emptydrops",
        "reference": "Lun et al. 2019, Genome Biology 20:63; DropletUtils emptyDrops",
        "lower": 100,
        "fdr": 0.001,
        "n_iter": 10_000,
        "seed": 0,
        "retain": None,
        "retain_used": None,
        "knee": None,
        "alpha": None,
        "alpha_used": None,
        "alpha_bounds": [0.01, 10_000.0],
        "max_block_draws": 1 << 20,
        "rounded_counts": False,
        "n_barcodes": n,
        "n_genes": 2000,
        "n_ambient_barcodes": int(np.count_nonzero((result.total > 0) & ~tested)),
        "n_tested": int(tested.sum()),
        "n_retained": int(retained.sum()),
        "max_simulated_total": int(result.total[tested & ~retained].max()),
        "n_cells": int(result.is_cell.sum()),
    }


def test_same_seed_same_result_and_memory_bound_does_not_matter():
    spec = HardCells(20, empty_umis_sigma=1.4, empty_umis_max=300)  # empties get tested
    droplets = simulate_droplets(np.random.default_rng(2), 300, 60, 3000, spec)
    first = empty_drops(droplets.counts, n_iter=500, seed=4)
    again = empty_drops(droplets.counts, n_iter=500, seed=4, max_block_draws=999)
    other = empty_drops(droplets.counts, n_iter=500, seed=5)
    for name in ("p_value", "fdr", "log_prob"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert (first.is_cell == again.is_cell).all()
    tested = ~np.isnan(first.p_value) & (first.p_value > 0)
    assert np.count_nonzero(first.p_value[tested] > 0.1) >= 5
    assert (first.p_value[tested] != other.p_value[tested]).any()


def test_non_integer_counts_are_rounded_like_droplet_utils():
    droplets = simulate_droplets(np.random.default_rng(3), 200, 40, 2000, HardCells(10))
    fractional = droplets.counts.astype(float)
    fractional.data += 0.3
    result = empty_drops(fractional, n_iter=300)
    rounded = empty_drops(droplets.counts, n_iter=300)
    assert result.params["rounded_counts"] and not rounded.params["rounded_counts"]
    np.testing.assert_array_equal(result.p_value, rounded.p_value)


def test_progress_is_logged():
    droplets = simulate_droplets(np.random.default_rng(3), 200, 40, 2000, HardCells(10))
    lines = []
    result = empty_drops(
        droplets.counts, n_iter=200, log=lines.append, log_every_s=0, max_block_draws=20_000
    )
    max_total = result.params["max_simulated_total"]
    per_block = 20_000 // max_total
    assert lines[0].startswith("emptydrops: 2,") and "ambient from" in lines[1]
    # One line per block of iterations, then the summary.
    done = [min(k, 200) for k in range(per_block, 200 + per_block, per_block)]
    assert lines[2:-1] == [
        f"emptydrops: {k:,}/200 iterations (up to {max_total:,} UMIs)" for k in done
    ]
    assert len(done) >= 3 and lines[-1].startswith(
        f"emptydrops: {result.params['n_cells']:,} cells"
    )


# --- the knee ------------------------------------------------------------------------------
def test_knee_sits_at_the_bottom_edge_of_the_cell_plateau():
    for seed in range(3):
        rng = np.random.default_rng(seed)
        cells = np.rint(5000 * np.exp(rng.normal(0, 0.3, 1000))).astype(int)
        empties = np.rint(4 * np.exp(rng.normal(0, 1.2, 50_000))).astype(int) + 1
        knee = knee_point(np.concatenate([cells, empties]))
        assert knee in set(cells)
        assert np.percentile(cells, 2) < knee < np.percentile(cells, 40)
        assert (empties < knee).all()


def test_knee_needs_three_distinct_totals_above_lower():
    with pytest.raises(KbaggError, match="only 2 distinct barcode totals above lower=100"):
        knee_point(np.array([5, 7, 300, 300, 400]))


# --- degenerate inputs ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (sp.csr_matrix((0, 5)), r"shape \(0, 5\); need >= 1 barcode"),
        (sp.csr_matrix((4, 3)), "all 4 barcodes have 0 UMIs"),
        (sp.csr_matrix(np.array([[150, 50], [200, 10]])), "no barcode has between 1 and lower=100"),
        (sp.csr_matrix(np.array([[150, 50]])), "no barcode has between 1 and lower=100"),
        (sp.csr_matrix(np.array([[1, -2]])), "negative counts"),
        ([[1, 2]], "must be a scipy sparse matrix or numpy array"),
    ],
)
def test_unusable_input_raises_a_clear_error(raw, message):
    with pytest.raises(KbaggError, match=message):
        empty_drops(raw, n_iter=10)


def test_nothing_above_lower_is_a_defined_result_with_a_warning():
    raw = sp.csr_matrix(np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]]))
    with pytest.warns(EmptyDropsWarning, match="no barcode has more than lower=100 UMIs"):
        result = empty_drops(raw, n_iter=10)
    assert result.total.tolist() == [4, 2, 0]
    assert not result.is_cell.any() and np.isnan(result.p_value).all()
    assert result.params["n_tested"] == 0 and result.params["retain_used"] == math.inf
    assert result.warnings and "nothing to test" in result.warnings[0]


def test_single_barcode_below_lower_gives_no_cells():
    with pytest.warns(EmptyDropsWarning):
        result = empty_drops(np.array([[5, 2]]), n_iter=10)
    assert result.is_cell.tolist() == [False]


def test_no_knee_warns_and_tests_every_barcode():
    rng = np.random.default_rng(0)
    empties = [rng.multinomial(t, [0.5, 0.3, 0.2]) for t in rng.integers(1, 20, 200)]
    raw = sp.csr_matrix(np.array(empties + [[0, 0, 150], [0, 0, 150]]))
    with pytest.warns(EmptyDropsWarning, match="need 3 to find a knee"):
        result = empty_drops(raw, n_iter=2000)
    assert result.params["retain_used"] == math.inf and result.params["n_tested"] == 2
    assert result.is_cell[-2:].all() and not result.is_cell[:-2].any()


# --- real data -----------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_real_library_warns_and_does_not_crash(testdata, tmp_path):
    """kb count (10x v3) of one real PBMC library against the human MT reference: a few
    hundred barcodes with a handful of UMIs each, so nothing is above `lower`."""
    kb = str(Path(sys.executable).with_name("kb"))
    mt, pbmc = testdata / "human_mt", testdata / "human_pbmc_cellplex_10xv3"
    ref, out = tmp_path / "ref", tmp_path / "count"
    ref.mkdir()  # kb ref does not create the index's folder

    def run(*args):
        proc = subprocess.run([kb, *map(str, args)], capture_output=True, text=True)
        assert proc.returncode == 0 and "An exception occurred" not in proc.stdout + proc.stderr, (
            proc.stderr[-3000:]
        )

    run("ref", "-i", ref / "index.idx", "-g", ref / "t2g.txt", "-f1", ref / "cdna.fa",
        "--tmp", tmp_path / "ref_tmp", mt / "MT.fa.gz", mt / "MT.gtf.gz")  # fmt: skip
    run("count", "-i", ref / "index.idx", "-g", ref / "t2g.txt", "-x", "10xv3", "-o", out,
        "--tmp", tmp_path / "count_tmp", "-t", "2", "--h5ad",
        pbmc / "PBMC1_S2_L001_R1_001.fastq.gz", pbmc / "PBMC1_S2_L001_R2_001.fastq.gz")  # fmt: skip
    raw = ad.read_h5ad(out / "counts_unfiltered" / "adata.h5ad")
    assert raw.n_obs > 10
    with pytest.warns(EmptyDropsWarning):
        result = empty_drops(raw.X, n_iter=1000)
    assert len(result.is_cell) == raw.n_obs
    assert result.total.tolist() == np.asarray(raw.X.sum(axis=1)).ravel().astype(int).tolist()
    assert result.warnings

"""kbagg's EmptyDrops against the real DropletUtils `emptyDrops` (R, Bioconductor 1.18) on
the same simulated raw matrix, with the simulation's truth.

The data (kbagg.simulate.cells): 800 normal cells of 6 types (median 1,500 UMIs), 100
small cells of their own type at 1/5 of that depth (median ~300, the depth of the
ambient-rich empty droplets), 8% doublets, 10,000 empty droplets drawn from a
Dirichlet-multinomial around the ambient profile (alpha 1,000), 5% of them ambient-rich
(median 150 UMIs), so that about 400 empty droplets are above `lower` and are tested.
Both sides run with lower=100, 10,000 iterations, seed 0 and their default knee and alpha.

Checked: the deterministic parts agree (the tested barcodes, alpha, the knee, each
barcode's log-probability); the Monte Carlo p-values agree barcode by barcode within
Monte Carlo error; the cell calls agree (Jaccard >= 0.98, where "every barcode above
lower" scores < 0.8); both meet the same bounds against truth, with a margin over that
trivial rule. Skips, saying why, when Rscript or DropletUtils is missing; takes ~1 min,
most of it R loading its packages.
"""

from __future__ import annotations

import numpy as np
import pytest
from dropletutils import EMPTY_DROPLETS, dropletutils_missing, empty_drops_r, jaccard

from kbagg.cells.emptydrops import empty_drops
from kbagg.simulate.cells import simulate_droplets
from kbagg.simulate.spec import HardCells

pytestmark = pytest.mark.slow

LOWER, N_ITER, SEED = 100, 10_000, 0
SPEC = HardCells(n_small_cells=100, cell_umis_median=1500.0, **EMPTY_DROPLETS)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    if reason := dropletutils_missing():
        pytest.skip(reason)
    droplets = simulate_droplets(np.random.default_rng(1), 500, 800, 10_000, SPEC)
    ours = empty_drops(droplets.counts, lower=LOWER, n_iter=N_ITER, seed=SEED)
    theirs = empty_drops_r(
        droplets.counts, tmp_path_factory.mktemp("dropletutils"), lower=LOWER, n_iter=N_ITER,
        seed=SEED,
    )  # fmt: skip
    return droplets, ours, theirs


def test_deterministic_parts_agree(both):
    _, ours, theirs = both
    table = theirs.table
    assert table["Total"].tolist() == ours.total.tolist()
    tested = table["LogProb"].notna().to_numpy()
    np.testing.assert_array_equal(tested, ~np.isnan(ours.log_prob))
    assert ours.params["alpha_used"] == pytest.approx(theirs.alpha, rel=1e-4)
    # kbagg's knee comes from its own smoothing spline; within a few ranks of R's.
    totals = np.sort(ours.total)[::-1]
    rank = lambda t: np.searchsorted(-totals, -t)  # noqa: E731
    assert abs(rank(ours.params["knee"]) - rank(theirs.retain)) <= 3
    np.testing.assert_allclose(ours.log_prob[tested], table["LogProb"][tested], rtol=1e-5)


def test_p_values_agree_within_monte_carlo_error(both):
    _, ours, theirs = both
    p_r = theirs.table["PValue"].to_numpy()
    # kbagg does not simulate retained barcodes (p-value 0); compare the others.
    simulated = ~np.isnan(ours.p_value) & (ours.total < ours.params["retain_used"])
    assert np.count_nonzero(simulated) >= 500
    p_ours, p_r = ours.p_value[simulated], p_r[simulated]
    standard_error = np.sqrt(2 * np.maximum(p_r * (1 - p_r), 1 / N_ITER) / N_ITER)
    z = np.abs(p_ours - p_r) / standard_error
    assert z.max() < 5, (z.max(), np.sort(z)[-5:])


def test_cell_calls_agree_and_meet_the_truth(both):
    droplets, ours, theirs = both
    kind = droplets.obs["kind"].to_numpy()
    real, small, empty = kind != "empty", kind == "small_cell", kind == "empty"
    trivial = ours.total > LOWER  # "every barcode above lower is a cell"
    assert np.count_nonzero(empty & trivial) >= 300, "empty droplets above lower are tested"

    figures = {}
    for name, called in (("kbagg", ours.is_cell), ("DropletUtils", theirs.is_cell),
                         ("above lower", trivial)):  # fmt: skip
        figures[name] = {
            "called": int(called.sum()),
            "precision": float(np.mean(real[called])),
            "recall": float(np.mean(called[real])),
            "small_recall": float(np.mean(called[small])),
            "jaccard_vs_dropletutils": jaccard(called, theirs.is_cell),
        }
    print(f"\nlower={LOWER}, {N_ITER:,} iterations, DropletUtils {theirs.seconds:.1f} s")
    for name, row in figures.items():
        print(name, {k: round(v, 4) for k, v in row.items()})

    assert figures["kbagg"]["jaccard_vs_dropletutils"] >= 0.98
    assert figures["above lower"]["jaccard_vs_dropletutils"] < 0.8
    trivial_precision = figures["above lower"]["precision"]
    assert trivial_precision < 0.8
    for name in ("kbagg", "DropletUtils"):
        row = figures[name]
        assert row["precision"] >= 0.99 and row["precision"] >= trivial_precision + 0.2, name
        assert row["recall"] >= 0.95 and row["small_recall"] >= 0.9, name
    assert abs(figures["kbagg"]["small_recall"] - figures["DropletUtils"]["small_recall"]) <= 0.03

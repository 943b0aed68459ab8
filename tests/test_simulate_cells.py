"""The hard-case droplet simulator (kbagg.simulate.cells) and the HARD FASTQ demo (slow)."""

from __future__ import annotations

import gzip
from collections import Counter
from dataclasses import replace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy.stats import chisquare

from kbagg.cells.emptydrops import empty_drops
from kbagg.simulate.cells import KINDS, SMALL_TYPE, simulate_droplets
from kbagg.simulate.demo import write_demo
from kbagg.simulate.spec import HARD, HardCells, demo_outputs

SPEC = HardCells(n_small_cells=100, doublet_fraction=0.08, n_cell_types=5)


@pytest.fixture(scope="module")
def droplets():
    return simulate_droplets(np.random.default_rng(3), 500, 400, 20_000, SPEC)


def test_truth_labels_are_consistent(droplets):
    obs = droplets.obs
    assert droplets.counts.shape == (len(obs), 500)
    assert list(obs["kind"].cat.categories) == list(KINDS)
    # 8% of the non-empty droplets are doublets: 500 singlets -> 43 doublets.
    assert obs["kind"].value_counts().to_dict() == {
        "empty": 20_000, "cell": 400, "small_cell": 100, "doublet": 43,
    }  # fmt: skip
    assert (obs["is_cell"] == (obs["kind"] != "empty")).all()
    singlet = obs["kind"].isin(["cell", "small_cell"])
    types = {f"type{i}" for i in range(1, 6)}
    assert set(obs.loc[obs["kind"] == "cell", "cell_type"]) == types
    assert set(obs.loc[obs["kind"] == "small_cell", "cell_type"]) == {SMALL_TYPE}
    assert (obs.loc[~singlet, "cell_type"] == "").all()
    parents = obs.loc[obs["kind"] == "doublet", "doublet_of"].str.split("+")
    assert parents.map(len).eq(2).all() and set(parents.sum()) <= types | {SMALL_TYPE}
    assert (obs.loc[obs["kind"] != "doublet", "doublet_of"] == "").all()


def test_depths_follow_the_spec(droplets):
    totals = np.asarray(droplets.counts.sum(axis=1)).ravel()
    kind = droplets.obs["kind"].to_numpy()
    cell, small = np.median(totals[kind == "cell"]), np.median(totals[kind == "small_cell"])
    assert cell == pytest.approx(2500, rel=0.1)
    assert small / cell == pytest.approx(0.2, rel=0.15)
    empty = totals[kind == "empty"]
    assert empty.min() >= 1 and empty.max() <= 50 and np.median(empty) == 3
    assert np.mean(empty <= 10) > 0.85 and empty.max() > 30  # mostly 1-10, a tail to ~50
    assert np.median(totals[kind == "doublet"]) > 1.5 * cell  # two cells' molecules


def test_depth_matched_doublets_are_downsampled_sums(droplets):
    matched = simulate_droplets(
        np.random.default_rng(3), 500, 400, 20_000, replace(SPEC, doublet_umis="singlet")
    )
    kind = droplets.obs["kind"].to_numpy()
    pd.testing.assert_frame_equal(matched.obs, droplets.obs)  # same droplets, same order
    doublet = kind == "doublet"
    # Everything but the doublets is unchanged; each doublet keeps a subset of its molecules.
    assert (matched.counts[~doublet] != droplets.counts[~doublet]).nnz == 0
    assert (matched.counts[doublet] > droplets.counts[doublet]).nnz == 0
    totals = np.asarray(matched.counts.sum(axis=1)).ravel()
    # A doublet has the depth of a singlet of its first parent's kind (normal or small) ...
    first_small = matched.obs["doublet_of"].str.startswith(f"{SMALL_TYPE}+").to_numpy()
    # (log-normal, sigma 0.35: the geometric mean ratio over 43 doublets is 1 +- ~5%).
    singlet_median = np.where(
        first_small,
        np.median(totals[kind == "small_cell"]),
        np.median(totals[kind == "cell"]),
    )
    ratio = totals[doublet] / singlet_median[doublet]
    assert np.exp(np.log(ratio).mean()) == pytest.approx(1.0, abs=0.15)
    # ... far below the sum of both parents' molecules.
    summed = np.asarray(droplets.counts[doublet].sum(axis=1)).ravel()
    assert np.median(totals[doublet]) < 0.7 * np.median(summed)
    with pytest.raises(ValueError, match="doublet_umis must be 'sum' or 'singlet'"):
        simulate_droplets(np.random.default_rng(0), 50, 5, 0, replace(SPEC, doublet_umis="x"))


def test_empty_droplets_are_draws_from_the_ambient_mixture(droplets):
    kind = droplets.obs["kind"].to_numpy()
    pooled = np.asarray(droplets.counts[kind == "empty"].sum(axis=0)).ravel()
    # The ambient profile is the UMI-weighted mixture of the type profiles ...
    ambient = droplets.ambient
    weights = np.linalg.lstsq(np.array(list(droplets.profiles.values())).T, ambient, rcond=None)[0]
    assert (weights > 0).all() and weights.sum() == pytest.approx(1.0)
    # ... and pooled empty droplets fit it (chi-square on genes with >= 5 expected UMIs).
    expected = ambient * pooled.sum()
    enough = expected >= 5
    fit = chisquare(
        pooled[enough], expected[enough] * pooled[enough].sum() / expected[enough].sum()
    )
    assert fit.pvalue > 0.001
    # A single cell type does not fit them.
    one_type = droplets.profiles["type1"] * pooled.sum()
    other = chisquare(
        pooled[enough], one_type[enough] * pooled[enough].sum() / one_type[enough].sum()
    )
    assert other.pvalue < 1e-10


def test_same_seed_same_droplets():
    first = simulate_droplets(np.random.default_rng(9), 100, 30, 200, HardCells(10))
    again = simulate_droplets(np.random.default_rng(9), 100, 30, 200, HardCells(10))
    assert (first.counts != again.counts).nnz == 0
    assert first.obs.equals(again.obs)


@pytest.mark.slow
def test_hard_demo_writes_fastqs_that_hold_the_truth(tmp_path):
    files = write_demo(tmp_path, HARD)
    assert files == demo_outputs(tmp_path, HARD)
    assert all(p.is_file() for ps in files.values() for p in ps)
    (sample,) = HARD.samples
    truth = ad.read_h5ad(files["truth"][0])
    assert truth.obs.columns.tolist() == ["kind", "is_cell", "cell_type", "doublet_of"]
    kinds = truth.obs["kind"].value_counts().to_dict()
    assert kinds["cell"] == sample.n_cells and kinds["empty"] == sample.n_empty
    assert kinds["small_cell"] == sample.hard.n_small_cells and kinds["doublet"] == 17
    # Read 1 holds barcode + UMI: distinct UMIs per barcode are the truth's totals.
    umis = Counter()
    seen = set()
    with gzip.open(files["fastq"][0], "rt") as r1:
        for i, line in enumerate(r1):
            if i % 4 == 1 and line not in seen:
                seen.add(line)
                umis[line[:16]] += 1
    totals = np.asarray(truth.X.sum(axis=1)).ravel()
    assert umis == dict(zip(truth.obs_names, totals.astype(int), strict=True))
    # The hard cases are what they claim: the knee misses the small cells, EmptyDrops not,
    # and ambient-rich empty droplets above lower are tested (tests/test_cell_calling.py).
    result = empty_drops(truth.X, n_iter=10_000)
    small = (truth.obs["kind"] == "small_cell").to_numpy()
    empty = (truth.obs["kind"] == "empty").to_numpy()
    assert np.count_nonzero(empty & (totals > result.params["lower"])) >= 100
    assert np.mean(totals[small] >= result.params["knee"]) < 0.5
    assert result.is_cell[small].mean() >= 0.9
    assert not result.is_cell[empty].any()


@pytest.mark.parametrize("alpha", [None, 50.0])
def test_ambient_rich_and_overdispersed_empty_droplets(alpha):
    spec = HardCells(10, rich_empty_fraction=0.1, empty_alpha=alpha, empty_umis_max=1000)
    droplets = simulate_droplets(np.random.default_rng(4), 300, 20, 5000, spec)
    kind = droplets.obs["kind"].to_numpy()
    totals = np.asarray(droplets.counts.sum(axis=1)).ravel()
    empty = kind == "empty"
    # 10% at a median of 150 UMIs: P(> 100) = P(z > log(100/150)/0.5) = 0.79 of them.
    assert np.mean(totals[empty] > 100) == pytest.approx(0.1 * 0.79, abs=0.015)
    assert np.median(totals[empty]) == 3
    # In the droplets above 100, the 20 commonest ambient genes: their variance over the
    # multinomial one is (t + alpha) / (1 + alpha) for a Dirichlet-multinomial, 1 without.
    rich = empty & (totals > 100)
    t = totals[rich]
    ratios = []
    for gene in np.argsort(droplets.ambient)[-20:]:
        p = droplets.ambient[gene]
        x = droplets.counts[rich][:, gene].toarray().ravel()
        ratios.append(np.var((x - t * p) / np.sqrt(t * p * (1 - p))))
    expected = 1.0 if alpha is None else float(np.mean((t + alpha) / (1 + alpha)))
    assert np.mean(ratios) == pytest.approx(expected, rel=0.1)

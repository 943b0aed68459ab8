"""Hashtag demultiplexing against the simulator's truth, and the hashtag -> sample mapping."""

from __future__ import annotations

import dataclasses

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from kbagg.cells.demux import DemuxError, assign_samples, clr, demultiplex
from kbagg.reference.features import MULTIPLEXING_CAPTURE
from kbagg.simulate.features import DEFAULT_FEATURES, feature_barcodes, simulate_feature_counts

# The bound the method must keep on the simulator (tests/benchmarks/bench_demux.py has the
# medians over seeds; the doublet and negative recalls are reported there).
MIN_SINGLET_ACCURACY = 0.99
MIN_DOUBLET_RECALL = 0.97
MIN_NEGATIVE_RECALL = 0.95


def simulated(seed: int, n_cells: int, n_hashtags: int) -> ad.AnnData:
    libraries = tuple(
        dataclasses.replace(lib, n_features=n_hashtags)
        for lib in DEFAULT_FEATURES.libraries
        if lib.feature_type == MULTIPLEXING_CAPTURE
    )
    spec = dataclasses.replace(DEFAULT_FEATURES, seed=seed, libraries=libraries)
    rng = np.random.default_rng(seed)
    features = feature_barcodes(rng, spec)
    return simulate_feature_counts(rng, rng.integers(0, 4, n_cells), features, spec)[
        MULTIPLEXING_CAPTURE
    ]


def recall(truth: pd.DataFrame, calls: pd.DataFrame, kind: str) -> float:
    rows = truth["hashtag_class"] == kind
    return float((calls.loc[rows, "hashtag"] == truth.loc[rows, "hashtag"]).mean())


@pytest.mark.parametrize(("seed", "n_hashtags"), [(1, 4), (2, 12)])
def test_singlets_doublets_and_negatives_on_the_simulator(seed, n_hashtags):
    hashtags = simulated(seed, 2000, n_hashtags)
    truth = hashtags.obs
    assert set(truth["hashtag_class"]) == {"singlet", "doublet", "negative"}
    calls = demultiplex(hashtags)
    assert recall(truth, calls, "singlet") >= MIN_SINGLET_ACCURACY
    assert recall(truth, calls, "doublet") >= MIN_DOUBLET_RECALL
    assert recall(truth, calls, "negative") >= MIN_NEGATIVE_RECALL
    assert calls.index.equals(hashtags.obs_names)
    singlets = calls["hashtag_class"] == "singlet"
    assert set(calls.loc[singlets, "hashtag"]) == set(hashtags.var_names)
    assert (calls.loc[~singlets, "hashtag"] == calls.loc[~singlets, "hashtag_class"]).all()
    assert calls["hashtag_confidence"].between(0, 1).all()
    assert calls.loc[singlets, "hashtag_confidence"].median() > 0.99


def test_unused_hashtags_are_positive_nowhere():
    """A reference lists 12 CMOs, the experiment used 4: the other 8 hold ambient counts."""
    used = simulated(3, 2000, 4)
    rng = np.random.default_rng(0)
    size = 10
    ambient = rng.negative_binomial(size, size / (size + 4.0), (used.n_obs, 8))
    unused = ad.AnnData(
        sp.csr_matrix(ambient),
        obs=used.obs,
        var=pd.DataFrame(index=[f"CMO{i}" for i in range(8)]),
    )
    hashtags = ad.concat([used, unused], axis=1, merge="first")
    calls = demultiplex(hashtags)
    assert not calls["hashtag"].str.startswith("CMO").any()
    assert (calls.filter(like="prob:CMO") == 0).all().all()
    assert recall(used.obs, calls, "singlet") >= MIN_SINGLET_ACCURACY


def test_scores_are_the_clr_values_and_margin():
    counts = np.array([[100, 2, 3], [1, 80, 4], [0, 1, 2], [90, 70, 1], [120, 1, 0]] * 4)
    hashtags = ad.AnnData(
        sp.csr_matrix(counts),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(len(counts))]),
        var=pd.DataFrame(index=["A", "B", "C"]),
    )
    calls = demultiplex(hashtags)
    expected = np.log1p(counts / np.exp(np.log1p(counts).mean(axis=0)))  # Seurat's CLR
    np.testing.assert_allclose(calls[["clr:A", "clr:B", "clr:C"]].to_numpy(), expected)
    np.testing.assert_allclose(clr(counts), expected)
    top2 = np.sort(expected, axis=1)[:, -2:]
    np.testing.assert_allclose(calls["hashtag_margin"], top2[:, 1] - top2[:, 0])
    assert calls["hashtag"].tolist()[:5] == ["A", "B", "negative", "doublet", "A"]


def test_too_few_hashtags_or_cells_is_an_error():
    one = ad.AnnData(sp.csr_matrix(np.ones((5, 1))), var=pd.DataFrame(index=["A"]))
    with pytest.raises(DemuxError, match=r"at least 2 hashtags, got 1: \['A'\]"):
        demultiplex(one)
    with pytest.raises(DemuxError, match="at least 2 cells, got 1"):
        demultiplex(ad.AnnData(sp.csr_matrix(np.ones((1, 3)))))


def test_assign_samples_maps_singlets_and_names_missing_hashtags():
    calls = pd.DataFrame(
        {
            "hashtag": ["H1", "H2", "doublet", "negative", "H1"],
            "hashtag_class": ["singlet", "singlet", "doublet", "negative", "singlet"],
            "clr:H1": 0.0,
            "clr:H2": 0.0,
            "clr:H3": 0.0,
        },
        index=[f"c{i}" for i in range(5)],
    )
    samples = assign_samples(calls, {"H1": "donorA", "H2": "donorB", "H3": "donorA"})
    assert samples.tolist()[:2] == ["donorA", "donorB"] and samples.iloc[4] == "donorA"
    assert samples.iloc[2:4].isna().all()
    assert list(samples.cat.categories) == ["donorA", "donorB"]
    with pytest.raises(
        DemuxError,
        match=r"hashtag\(s\) H2, H3 \(singlet call of 1 cells\) missing from the hashtag -> "
        r"sample mapping, which has H1; add them",
    ):
        assign_samples(calls, {"H1": "donorA"})

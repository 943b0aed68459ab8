#!/usr/bin/env python
"""Benchmark: hashtag demultiplexing accuracy on the simulator: kbagg vs HTODemux vs hashsolo.

    python tests/benchmarks/bench_demux.py                    # 5 seeds x 2,000 cells, 4/8/12
    python tests/benchmarks/bench_demux.py --seeds 10 --cells 5000 --hashtags 8 --unused 4

For each seed, `kbagg.simulate.features.simulate_feature_counts` draws hashtag counts with
known singlets, doublets and negatives (the default FeatureSimSpec rates, --hashtags
hashtags, plus --unused hashtags on no cell: ambient counts only); every method sees the
same counts. Printed per method (median over seeds, and the worst seed): the fraction of
true singlets assigned to the right hashtag, of true doublets called doublet, of true
negatives called negative, and the median wall time relative to kbagg's (the anchor,
measured in the same run, interleaved). Methods: kbagg's `demultiplex` (NB mixture per
hashtag); Seurat's HTODemux re-stated here (CLR, k-means into hashtags + 1 clusters, NB
fitted to the lowest cluster by moments after trimming 0.5 % each side, its 0.99
quantile); scanpy's hashsolo with its default priors (negative, singlet, doublet) =
(0.01, 0.8, 0.19) and with the simulator's true rates.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import statistics
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.cluster.vq import kmeans2
from scipy.stats import nbinom, poisson

from kbagg.cells.demux import clr, demultiplex
from kbagg.reference.features import MULTIPLEXING_CAPTURE
from kbagg.simulate.features import DEFAULT_FEATURES, feature_barcodes, simulate_feature_counts


def simulated_hashtags(seed: int, n_cells: int, n_hashtags: int, n_unused: int = 0) -> ad.AnnData:
    libraries = tuple(
        dataclasses.replace(lib, n_features=n_hashtags)
        if lib.feature_type == MULTIPLEXING_CAPTURE
        else lib
        for lib in DEFAULT_FEATURES.libraries
    )
    spec = dataclasses.replace(DEFAULT_FEATURES, seed=seed, libraries=libraries)
    rng = np.random.default_rng(seed)
    features = feature_barcodes(rng, spec)
    cell_types = rng.integers(0, 4, n_cells)
    hashtags = simulate_feature_counts(rng, cell_types, features, spec)[MULTIPLEXING_CAPTURE]
    if not n_unused:
        return hashtags
    ambient = rng.negative_binomial(
        10, 10 / (10 + spec.hashtag_background_umis), (n_cells, n_unused)
    )
    unused = ad.AnnData(
        sp.csr_matrix(ambient),
        obs=hashtags.obs,
        var=pd.DataFrame(index=[f"unused{i + 1}" for i in range(n_unused)]),
    )
    return ad.concat([hashtags, unused], axis=1, merge="first")


def scores(truth: pd.DataFrame, called: pd.Series) -> dict[str, float]:
    """Singlet accuracy, doublet recall, negative recall."""
    out = {}
    for kind, label in (("singlet", None), ("doublet", "doublet"), ("negative", "negative")):
        rows = truth["hashtag_class"] == kind
        expected = truth.loc[rows, "hashtag"] if label is None else label
        out[kind] = float((called[rows] == expected).mean())
    return out


def run_kbagg(hashtags: ad.AnnData) -> pd.Series:
    return demultiplex(hashtags)["hashtag"]


def run_htodemux(hashtags: ad.AnnData, quantile: float = 0.99) -> pd.Series:
    """Seurat's HTODemux defaults (kfunc k-means instead of clara; moments instead of MLE)."""
    counts = hashtags.X.toarray().astype(float)
    normalised = clr(counts)
    rng = np.random.default_rng(0)
    best, best_inertia = None, np.inf
    for _ in range(10):
        centroids, labels = kmeans2(normalised, counts.shape[1] + 1, minit="++", seed=rng)
        inertia = float(((normalised - centroids[labels]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    thresholds = []
    for h in range(counts.shape[1]):
        means = [counts[best == c, h].mean() for c in np.unique(best)]
        background = counts[best == np.unique(best)[int(np.argmin(means))], h]
        low, high = np.quantile(background, [0.005, 0.995])
        background = background[(background >= low) & (background <= high)]
        mean, var = background.mean(), background.var(ddof=1)
        if var <= mean:
            thresholds.append(poisson.ppf(quantile, mean))
        else:
            size = mean**2 / (var - mean)
            thresholds.append(nbinom.ppf(quantile, size, size / (size + mean)))
    positive = counts > np.array(thresholds)
    n_positive = positive.sum(axis=1)
    names = np.array(hashtags.var_names, dtype=object)
    calls = np.where(
        n_positive == 1,
        names[np.argmax(positive, axis=1)],
        np.where(n_positive == 0, "negative", "doublet"),
    )
    return pd.Series(calls, index=hashtags.obs_names)


def run_hashsolo(hashtags: ad.AnnData, priors) -> pd.Series:
    import scanpy.external as sce

    adata = ad.AnnData(obs=pd.DataFrame(hashtags.X.toarray(), index=hashtags.obs_names))
    adata.obs.columns = list(hashtags.var_names)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        sce.pp.hashsolo(adata, list(hashtags.var_names), priors=priors)
    calls = adata.obs["Classification"].astype(str)
    return calls.replace({"Doublet": "doublet", "Negative": "negative"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--hashtags", default="4,8,12", help="comma-separated counts")
    parser.add_argument("--unused", type=int, default=0)
    args = parser.parse_args()
    spec = DEFAULT_FEATURES
    true_priors = (
        spec.negative_fraction,
        1 - spec.negative_fraction - spec.doublet_fraction,
        spec.doublet_fraction,
    )
    methods = {
        "kbagg (NB mixture)": run_kbagg,
        "HTODemux (Seurat defaults)": run_htodemux,
        "hashsolo default priors": lambda h: run_hashsolo(h, (0.01, 0.8, 0.19)),
        "hashsolo true priors": lambda h: run_hashsolo(h, true_priors),
    }
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for n_hashtags in (int(n) for n in args.hashtags.split(",")):
        results: dict[str, list[dict]] = {m: [] for m in methods}
        for seed in range(1, args.seeds + 1):
            hashtags = simulated_hashtags(seed, args.cells, n_hashtags, args.unused)
            for name, method in methods.items():  # interleaved: every method on every seed
                start = time.perf_counter()
                called = method(hashtags)
                elapsed = time.perf_counter() - start
                results[name].append({**scores(hashtags.obs, called), "seconds": elapsed})
        anchor = statistics.median(r["seconds"] for r in results["kbagg (NB mixture)"])
        print(
            f"\n{args.seeds} seeds x {args.cells} cells, {n_hashtags} hashtags"
            + (f" + {args.unused} unused" if args.unused else "")
            + f" (kbagg median {anchor:.2f} s)"
        )
        print("| method | singlets right | doublets found | negatives found | time vs kbagg |")
        print("|---|---|---|---|---|")
        for name, rows in results.items():
            cells = []
            for key in ("singlet", "doublet", "negative"):
                values = [r[key] for r in rows]
                cells.append(f"{statistics.median(values):.4f} (worst {min(values):.4f})")
            ratio = statistics.median(r["seconds"] for r in rows) / anchor
            print(f"| {name} | {' | '.join(cells)} | {ratio:.2f} |")
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()

"""QC of a hashtag (Multiplexing Capture) library: how its cells were assigned, and a figure
of each hashtag's counts coloured by the call."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from kbagg.qc.metrics import write_table
from kbagg.qc.plots import _pyplot, _save_figure

CLASS_COLOURS = {"own": "#1b9e77", "other": "#7570b3", "doublet": "#d95f02", "negative": "#999999"}


def assignment_table(hashtags: ad.AnnData) -> pd.DataFrame:
    """One row per call (each hashtag, doublet, negative): cells, % of cells, the sample the
    hashtag stands for, and the median UMIs of the hashtag in its own cells."""
    obs = hashtags.obs
    counts = obs["hashtag"].value_counts()
    rows = []
    for call in [*map(str, hashtags.var_names), "doublet", "negative"]:
        n = int(counts.get(call, 0))
        own = (obs["hashtag"] == call).to_numpy()
        sample = obs.loc[own, "hashtag_sample"].dropna().unique() if "hashtag_sample" in obs else []
        median = None
        if call in hashtags.var_names and own.any():
            column = hashtags[own, call].X
            median = float(np.median(column.toarray() if hasattr(column, "toarray") else column))
        rows.append(
            {
                "call": call,
                "cells": n,
                "pct_cells": round(100.0 * n / max(hashtags.n_obs, 1), 2),
                "sample": str(sample[0]) if len(sample) else "",
                "median_umis_of_hashtag": median,
            }
        )
    return pd.DataFrame(rows)


def plot_hashtags(hashtags: ad.AnnData, sample: str, output: str | Path) -> None:
    """Per hashtag, a histogram of its CLR value in every cell, coloured by the cell's call:
    this hashtag's singlets, other singlets, doublets, negatives."""
    plt = _pyplot()
    names = list(map(str, hashtags.var_names))
    ncols = min(4, len(names))
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows + 0.6), squeeze=False)
    calls = hashtags.obs["hashtag"].astype(str).to_numpy()
    classes = hashtags.obs["hashtag_class"].astype(str).to_numpy()
    for axis, name in zip(axes.flat, names, strict=False):
        values = hashtags.obs[f"clr:{name}"].to_numpy(dtype=float)
        groups = {
            "own": calls == name,
            "other": (classes == "singlet") & (calls != name),
            "doublet": classes == "doublet",
            "negative": classes == "negative",
        }
        bins = np.linspace(np.nanmin(values), np.nanmax(values) + 1e-9, 30)
        axis.hist(
            [values[m] for m in groups.values()],
            bins=bins,
            stacked=True,
            color=list(CLASS_COLOURS.values()),
            label=[f"{k} ({int(m.sum())})" for k, m in groups.items()],
        )
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("CLR", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=6)
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    fig.suptitle(f"{sample}: hashtag counts (CLR) by call", fontsize=10)
    fig.tight_layout()
    _save_figure(fig, output)


def run_hashtag_qc(hashtag_h5ad: str | Path, sample: str, table_out, figure_out) -> pd.DataFrame:
    hashtags = ad.read_h5ad(hashtag_h5ad)
    table = assignment_table(hashtags)
    write_table(table, table_out)
    plot_hashtags(hashtags, sample, figure_out)
    return table

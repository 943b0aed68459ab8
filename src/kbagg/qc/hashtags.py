"""QC of a hashtag (Multiplexing Capture) library: how its cells were assigned, how well
each hashtag separates from its background, and a figure of each hashtag's counts coloured
by the call."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from kbagg.cells.demux import MAX_EXPECTED_ERROR, WEAK_SEPARABILITY, describe_weak
from kbagg.qc.metrics import write_table
from kbagg.qc.plots import _pyplot, _save_figure

CLASS_COLOURS = {"own": "#1b9e77", "other": "#7570b3", "doublet": "#d95f02", "negative": "#999999"}


def separability_of(hashtags: ad.AnnData) -> pd.DataFrame | None:
    """The per-hashtag separability table `demultiplex` left in ``uns``, if any."""
    stored = hashtags.uns.get("hashtag_separability")
    if stored is None:
        return None
    table = pd.DataFrame({k: np.asarray(v) for k, v in stored.items()})
    table["hashtag"] = table["hashtag"].astype(str)
    table["weak"] = table["weak"].astype(str).isin(["True", "true", "1"])
    return table.set_index("hashtag")


def weak_summary(hashtags: ad.AnnData, sample: str) -> str:
    """One line naming the weak hashtags of `sample`, or '' when all separate."""
    table = separability_of(hashtags)
    if table is None or not table["weak"].any():
        return ""
    return (
        f"sample '{sample}': hashtag(s) {describe_weak(table[table['weak']])} do not separate "
        f"from their background (separability < {WEAK_SEPARABILITY} or more than "
        f"{100 * MAX_EXPECTED_ERROR:.0f}% of their calls expected wrong): treat its "
        "demultiplexing as uncertain"
    )


def assignment_table(hashtags: ad.AnnData) -> pd.DataFrame:
    """One row per call (each hashtag, doublet, negative): cells, % of cells, the sample the
    hashtag stands for, the median UMIs of the hashtag in its own cells, and for hashtags
    their separability (0-1, see `kbagg.cells.demux.separability`), the share of their
    calls the model expects to be wrong, and whether it is weak; ``model``, the model
    `demultiplex` chose (counts or composition)."""
    obs = hashtags.obs
    separability = separability_of(hashtags)
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
                "separability": (
                    round(float(separability.loc[call, "separability"]), 3)
                    if separability is not None and call in separability.index
                    else None
                ),
                "expected_error": (
                    round(float(separability.loc[call, "expected_error"]), 4)
                    if separability is not None
                    and call in separability.index
                    and "expected_error" in separability.columns
                    else None
                ),
                "weak": (
                    bool(separability.loc[call, "weak"])
                    if separability is not None and call in separability.index
                    else None
                ),
                "model": str(hashtags.uns.get("hashtag_model", "")),
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
    separability = separability_of(hashtags)
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
        title = name
        if separability is not None and name in separability.index:
            value = float(separability.loc[name, "separability"])
            weak = " WEAK" if separability.loc[name, "weak"] else ""
            title = f"{name}: separability {value:.2f}{weak}"
        axis.set_title(title, fontsize=9, color="#d95f02" if "WEAK" in title else "black")
        axis.set_xlabel("CLR", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=6)
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    heading = f"{sample}: hashtag counts (CLR) by call"
    if "hashtag_model" in hashtags.uns:
        heading += f" ({hashtags.uns['hashtag_model']} model)"
    if separability is not None and separability["weak"].any():
        heading += " - weak hashtags: calls uncertain"
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    _save_figure(fig, output)


def run_hashtag_qc(
    hashtags: ad.AnnData, sample: str, table_out: str | Path, figure_out: str | Path
) -> tuple[pd.DataFrame, str]:
    """Rule hashtag_qc's work on one sample: the assignment table and figure written, and
    the line that warns of its weak hashtags.

    Parameters
    ----------
    hashtags
        The sample's hashtag modality as `count_features` wrote it (calls in ``obs``, the
        per-hashtag separability in ``uns['hashtag_separability']``).
    sample
        The sample's name, for the figure and the warning.
    table_out, figure_out
        The assignment table (TSV) and figure to write.

    Returns
    -------
    The assignment table (`assignment_table`) and `weak_summary`'s line ('' when every
    hashtag separates).
    """
    table = assignment_table(hashtags)
    write_table(table, table_out)
    plot_hashtags(hashtags, sample, figure_out)
    return table, weak_summary(hashtags, sample)

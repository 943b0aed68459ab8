"""QC figures: the knee plot of one sample and the bar charts across samples."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kbagg.atomic import atomic_output
from kbagg.qc.metrics import METRICS, TITLES, Thresholds, format_value, umis_per_barcode

if TYPE_CHECKING:
    import anndata as ad


def _save_figure(fig, output: str | Path) -> None:
    import matplotlib.pyplot as plt

    try:
        with atomic_output(output) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class Knee:
    umis: np.ndarray  # UMIs per barcode, all raw barcodes, descending
    threshold: float | None  # smallest UMI count among bustools' cells; None without filter
    cells: int | None  # bustools' cells; None without filter
    emptydrops_ranks: np.ndarray | None = None  # 1-based ranks of EmptyDrops' cells, if run


def knee_data(raw: ad.AnnData, filtered: ad.AnnData | None) -> Knee:
    """The knee of `raw`, with the bustools calls (`raw.obs['bustools_cell']`, else the
    barcodes of `filtered`) and, when EmptyDrops ran, its calls (`obs['emptydrops_cell']`)."""
    per_barcode = umis_per_barcode(raw)
    order = np.argsort(-per_barcode, kind="stable")
    umis = per_barcode[order]
    emptydrops = None
    if "emptydrops_cell" in raw.obs:
        emptydrops = np.flatnonzero(raw.obs["emptydrops_cell"].to_numpy(dtype=bool)[order]) + 1
    if "bustools_cell" in raw.obs:
        called = raw.obs["bustools_cell"].to_numpy(dtype=bool)
    elif filtered is not None:
        called = raw.obs_names.isin(filtered.obs_names)
    else:
        return Knee(umis, None, None, emptydrops)
    threshold = float(per_barcode[called].min()) if called.any() else None
    return Knee(umis, threshold, int(called.sum()), emptydrops)


def plot_knee(knee: Knee, sample: str, output: str | Path, metrics: dict | None = None) -> None:
    """Ranked UMIs per barcode (log-log), the filter threshold as a horizontal line."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6.4, 4.6))
    positive = knee.umis[knee.umis > 0]
    ranks = np.arange(1, len(positive) + 1)
    if len(positive):
        axis.step(ranks, positive, where="post", color="#1f4e79", lw=1.6, label="barcodes")
        if knee.cells:
            called = min(knee.cells, len(positive))
            axis.step(
                ranks[:called],
                positive[:called],
                where="post",
                color="#d95f02",
                lw=2.4,
                label=f"bustools knee: {knee.cells:,} cells",
            )
        if knee.emptydrops_ranks is not None and len(knee.emptydrops_ranks):
            ranks_ed = knee.emptydrops_ranks[knee.emptydrops_ranks <= len(positive)]
            axis.scatter(
                ranks_ed,
                positive[ranks_ed - 1],
                s=9,
                color="#1b9e77",
                zorder=3,
                label=f"EmptyDrops: {len(knee.emptydrops_ranks):,} cells",
            )
        axis.set_xscale("log")
        axis.set_yscale("log")
    else:
        axis.text(0.5, 0.5, "no barcode has any UMI", ha="center", transform=axis.transAxes)
    if knee.threshold is not None and knee.threshold > 0:
        axis.axhline(knee.threshold, color="#d95f02", ls="--", lw=1)
        axis.annotate(
            f"bustools threshold: {knee.threshold:,.0f} UMIs",
            xy=(1, knee.threshold),
            xycoords=("axes fraction", "data"),
            xytext=(-4, -4),
            textcoords="offset points",
            ha="right",
            va="top",
            color="#d95f02",
            fontsize=9,
        )
    elif knee.cells is None:
        axis.set_title("no barcode filter (filter.enabled: false)", fontsize=9, loc="right")
    if metrics:
        lines = [
            f"{TITLES[k]}: {format_value(k, metrics.get(k))}"
            for k in ("pct_pseudoaligned", "median_umis_per_cell", "fraction_umis_in_cells")
        ]
        axis.text(
            0.02,
            0.02,
            "\n".join(lines),
            transform=axis.transAxes,
            fontsize=8,
            va="bottom",
            bbox={"boxstyle": "round", "fc": "white", "ec": "0.8"},
        )
    axis.set_xlabel("barcode rank")
    axis.set_ylabel("UMIs per barcode")
    axis.set_title(f"{sample}: knee plot", loc="left")
    axis.grid(True, which="major", alpha=0.3)
    if len(positive):
        axis.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    _save_figure(fig, output)


def plot_summary(summary: pd.DataFrame, output: str | Path, thresholds: Thresholds) -> None:
    """One panel per metric, samples side by side as bars; samples with warnings in red."""
    plt = _pyplot()
    ncols = 3
    nrows = math.ceil(len(METRICS) / ncols)
    width = max(9.0, 0.55 * len(summary) * ncols + 3)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 2.6 * nrows + 0.6), squeeze=False)
    samples = summary["sample"].astype(str).tolist()
    warned = (summary["warnings"].fillna("") != "").to_numpy()
    colors = ["#c0392b" if w else "#1f4e79" for w in warned]
    positions = np.arange(len(samples))
    for axis, metric in zip(axes.flat, METRICS, strict=False):
        values = pd.to_numeric(summary[metric], errors="coerce").astype(float).to_numpy()
        axis.bar(positions, np.nan_to_num(values), color=colors, width=0.7)
        for x, value in zip(positions, values, strict=True):
            label = "NA" if np.isnan(value) else format_value(metric, value).rstrip("%")
            axis.annotate(
                label,
                (x, 0 if np.isnan(value) else value),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )
        limit = {
            "pct_pseudoaligned": thresholds.min_pct_pseudoaligned,
            "cells_called": thresholds.min_cells,
        }.get(metric)
        if limit is not None:
            axis.axhline(limit, color="#c0392b", ls="--", lw=0.8)
        axis.set_title(TITLES[metric], fontsize=9)
        axis.set_xticks(positions, samples, rotation=30 if len(samples) > 3 else 0, fontsize=8)
        axis.tick_params(axis="y", labelsize=7)
        axis.margins(y=0.18)
        if np.isnan(values).all():
            axis.set_ylim(0, 1)
    for axis in list(axes.flat)[len(METRICS) :]:
        axis.axis("off")
    title = "kbagg QC summary"
    if warned.any():
        title += f"  (red: {int(warned.sum())} sample(s) with warnings)"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    _save_figure(fig, output)

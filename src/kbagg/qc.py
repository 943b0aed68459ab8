"""Per-sample QC from kb's own records and matrices, a knee plot, and a cross-sample summary.

Inputs per sample: kb's `run_info.json` (kallisto: reads processed, pseudoaligned, unique),
`inspect.json` (bustools inspect), the raw matrix (every barcode kb saw) and, when barcode
filtering is on, the filtered matrix (the called cells).

kb's matrices hold UMI counts, not reads, so "fraction of reads in cells" is approximated
by the fraction of UMIs in cells: UMIs of the called cells / UMIs of all raw barcodes.
Samples that look bad get warnings (a `warnings` column, the job's log, the report); they
never fail the workflow.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from kbagg.atomic import atomic_output

# Column order of metrics.tsv and summary.tsv.
COLUMNS = [
    "sample",
    "reads_processed",
    "pct_pseudoaligned",
    "pct_unique",
    "barcodes_seen",
    "cells_called",
    "median_umis_per_cell",
    "median_genes_per_cell",
    "fraction_umis_in_cells",
    "pct_mito",
    "warnings",
]

# What each numeric column means (axis titles of the summary figure, the HTML table header).
TITLES = {
    "reads_processed": "reads processed",
    "pct_pseudoaligned": "% pseudoaligned",
    "pct_unique": "% aligned uniquely",
    "barcodes_seen": "barcodes seen",
    "cells_called": "cells called",
    "median_umis_per_cell": "median UMIs per cell",
    "median_genes_per_cell": "median genes per cell",
    "fraction_umis_in_cells": "fraction of UMIs in cells",
    "pct_mito": "% mitochondrial UMIs",
}
METRICS = list(TITLES)

MITO_PREFIXES = ("MT-", "mt-")


@dataclass(frozen=True)
class Thresholds:
    """Below these a sample gets a warning (never an error)."""

    min_pct_pseudoaligned: float = 30.0
    min_cells: int = 10

    @staticmethod
    def add_arguments(parser) -> None:
        """The --min-pct-pseudoaligned / --min-cells options of the QC scripts."""
        parser.add_argument("--min-pct-pseudoaligned", type=float, default=30.0)
        parser.add_argument("--min-cells", type=int, default=10)

    @classmethod
    def from_args(cls, args) -> Thresholds:
        return cls(args.min_pct_pseudoaligned, args.min_cells)


def warning_lines(sample: str, warnings: str) -> list[str]:
    """The log lines for a sample's '; '-joined warnings (the rules grep '^WARNING')."""
    return [f"WARNING: sample '{sample}': {w}" for w in warnings.split("; ") if w]


def read_json(path: str | Path) -> dict:
    with open(path) as handle:
        return json.load(handle)


def _row_sums(matrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=1)).ravel().astype(float)


def umis_per_barcode(adata: ad.AnnData) -> np.ndarray:
    """Total counts (UMIs) of each obs row of X."""
    return _row_sums(adata.X) if adata.n_obs else np.zeros(0)


def genes_per_barcode(adata: ad.AnnData) -> np.ndarray:
    """Number of genes with > 0 counts in each obs row of X."""
    if not adata.n_obs:
        return np.zeros(0)
    return _row_sums(adata.X > 0)


def mito_genes(adata: ad.AnnData) -> np.ndarray:
    """Boolean mask of mitochondrial genes: gene_name (else var_names) starting MT- or mt-."""
    names = adata.var["gene_name"] if "gene_name" in adata.var else adata.var_names.to_series()
    return names.astype(str).str.startswith(MITO_PREFIXES).to_numpy()


def pct_mito(adata: ad.AnnData) -> float | None:
    """% of all UMIs in `adata` on mitochondrial genes; None when no gene name says MT-/mt-
    (the annotation does not allow it) or there are no UMIs at all."""
    mask = mito_genes(adata)
    if not mask.any():
        return None
    total = float(adata.X.sum()) if adata.n_obs else 0.0
    if total == 0:
        return None
    return 100.0 * float(adata[:, mask].X.sum()) / total


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def _pct(part, whole) -> float | None:
    if part is None or not whole:
        return None
    return 100.0 * part / whole


def qc_warnings(metrics: dict, thresholds: Thresholds = Thresholds()) -> list[str]:
    """Human-readable warnings for a metrics row (empty when the sample looks fine)."""
    found = []
    aligned = metrics.get("pct_pseudoaligned")
    if aligned is not None and not _isna(aligned) and aligned < thresholds.min_pct_pseudoaligned:
        found.append(
            f"only {aligned:.1f}% of reads pseudoaligned (< {thresholds.min_pct_pseudoaligned:g}%):"
            " check the technology, the species of the reference and fastq_1/fastq_2 order"
        )
    cells = metrics.get("cells_called")
    if cells is not None and not _isna(cells) and cells < thresholds.min_cells:
        found.append(
            f"only {int(cells)} cells called (< {thresholds.min_cells}): check the filter "
            "threshold and the knee plot"
        )
    return found


def _isna(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def sample_metrics(
    sample: str,
    run_info: dict,
    inspect: dict,
    raw: ad.AnnData,
    filtered: ad.AnnData | None,
    thresholds: Thresholds = Thresholds(),
) -> dict:
    """One metrics row. Cell metrics are None (NA) when there is no filtered matrix."""
    processed = run_info.get("n_processed")
    aligned = run_info.get("n_pseudoaligned")
    unique = run_info.get("n_unique")
    pct_aligned = _pct(aligned, processed)
    if pct_aligned is None:
        pct_aligned = run_info.get("p_pseudoaligned")
    pct_unique = _pct(unique, processed)
    if pct_unique is None:
        pct_unique = run_info.get("p_unique")
    if processed is None:
        processed = inspect.get("numReads")

    raw_umis = umis_per_barcode(raw)
    row = {
        "sample": sample,
        "reads_processed": processed,
        "pct_pseudoaligned": pct_aligned,
        "pct_unique": pct_unique,
        "barcodes_seen": raw.n_obs,
        "cells_called": None,
        "median_umis_per_cell": None,
        "median_genes_per_cell": None,
        "fraction_umis_in_cells": None,
        "pct_mito": None,
    }
    if filtered is not None:
        cell_umis = umis_per_barcode(filtered)
        total = float(raw_umis.sum())
        row.update(
            cells_called=filtered.n_obs,
            median_umis_per_cell=_median(cell_umis),
            median_genes_per_cell=_median(genes_per_barcode(filtered)),
            fraction_umis_in_cells=float(cell_umis.sum()) / total if total else None,
            pct_mito=pct_mito(filtered),
        )
    else:
        row["pct_mito"] = pct_mito(raw)
    row["warnings"] = "; ".join(qc_warnings(row, thresholds))
    return row


def metrics_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows as a table with the fixed column order and rounded values (NA for None)."""
    frame = pd.DataFrame(list(rows), columns=COLUMNS)
    for column in ("reads_processed", "barcodes_seen", "cells_called"):
        frame[column] = pd.array(frame[column], dtype="Int64")
    for column in ("pct_pseudoaligned", "pct_unique", "pct_mito"):
        frame[column] = pd.to_numeric(frame[column]).round(2)
    for column in ("median_umis_per_cell", "median_genes_per_cell"):
        frame[column] = pd.to_numeric(frame[column]).round(1)
    frame["fraction_umis_in_cells"] = pd.to_numeric(frame["fraction_umis_in_cells"]).round(4)
    frame["warnings"] = frame["warnings"].fillna("")
    return frame


def read_metrics(paths: Sequence[str | Path]) -> pd.DataFrame:
    """metrics.tsv files (one row each) -> one table, in the given order."""
    tables = [pd.read_csv(p, sep="\t", na_values=["NA"], keep_default_na=False) for p in paths]
    if not tables:
        return metrics_frame([])
    frame = pd.concat(tables, ignore_index=True)
    missing = [c for c in COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"metrics tables {list(map(str, paths))}: missing columns {missing}")
    return metrics_frame(frame[COLUMNS].to_dict("records"))


# --- atomic writes -----------------------------------------------------------------------
def _write_atomic(output: str | Path, write) -> None:
    with atomic_output(output) as tmp:
        write(tmp)


def write_table(frame: pd.DataFrame, output: str | Path) -> None:
    _write_atomic(output, lambda tmp: frame.to_csv(tmp, sep="\t", index=False, na_rep="NA"))


def _save_figure(fig, output: str | Path) -> None:
    import matplotlib.pyplot as plt

    try:
        _write_atomic(output, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- knee plot ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Knee:
    umis: np.ndarray  # UMIs per barcode, all raw barcodes, descending
    threshold: float | None  # smallest UMI count among the called cells; None without filter
    cells: int | None  # called cells; None without filter


def knee_data(raw: ad.AnnData, filtered: ad.AnnData | None) -> Knee:
    umis = np.sort(umis_per_barcode(raw))[::-1]
    if filtered is None or filtered.n_obs == 0:
        return Knee(umis, None, None if filtered is None else 0)
    return Knee(umis, float(umis_per_barcode(filtered).min()), filtered.n_obs)


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
                label=f"called cells ({knee.cells:,})",
            )
        axis.set_xscale("log")
        axis.set_yscale("log")
    else:
        axis.text(0.5, 0.5, "no barcode has any UMI", ha="center", transform=axis.transAxes)
    if knee.threshold is not None and knee.threshold > 0:
        axis.axhline(knee.threshold, color="#d95f02", ls="--", lw=1)
        axis.annotate(
            f"filter threshold: {knee.threshold:,.0f} UMIs",
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
            f"{TITLES[k]}: {_format_value(k, metrics.get(k))}"
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


# --- summary -----------------------------------------------------------------------------
def _format_value(column: str, value) -> str:
    if _isna(value) or value is pd.NA:
        return "NA"
    if column in ("reads_processed", "barcodes_seen", "cells_called"):
        return f"{int(value):,}"
    if column == "fraction_umis_in_cells":
        return f"{float(value):.3f}"
    if column.startswith("pct_"):
        return f"{float(value):.1f}%"
    return f"{float(value):,.1f}"


def plot_summary(
    summary: pd.DataFrame, output: str | Path, thresholds: Thresholds = Thresholds()
) -> None:
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
            label = "NA" if np.isnan(value) else _format_value(metric, value).rstrip("%")
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


def summary_html(summary: pd.DataFrame, thresholds: Thresholds = Thresholds()) -> str:
    """A self-contained HTML page with the summary table; rows with warnings highlighted."""
    head = "".join(f"<th>{html.escape(TITLES.get(c, c))}</th>" for c in COLUMNS)
    rows = []
    for record in summary.to_dict("records"):
        warn = str(record.get("warnings") or "")
        cells = [f"<td class='name'>{html.escape(str(record['sample']))}</td>"]
        cells += [f"<td>{_format_value(c, record[c])}</td>" for c in METRICS]
        cells.append(f"<td class='warn'>{html.escape(warn) or '&ndash;'}</td>")
        rows.append(f"<tr{' class=bad' if warn else ''}>{''.join(cells)}</tr>")
    n_warned = int((summary["warnings"].fillna("") != "").sum())
    verdict = (
        f"{n_warned} of {len(summary)} samples have warnings."
        if n_warned
        else f"All {len(summary)} samples pass the QC thresholds."
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>kbagg QC summary</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #1f4e79; color: white; }}
td.name, td.warn {{ text-align: left; }}
td.name {{ font-weight: bold; }}
tr.bad td {{ background: #fde2e1; }}
tr.bad td.warn {{ color: #a11; }}
p.note {{ font-size: 12px; color: #555; max-width: 60em; }}
</style></head><body>
<h2>kbagg QC summary</h2>
<p>{verdict} Warnings below {thresholds.min_pct_pseudoaligned:g}% pseudoaligned or
{thresholds.min_cells} cells called.</p>
<table><tr>{head}</tr>
{chr(10).join(rows)}
</table>
<p class="note">Reads and alignment rates are kallisto's (<code>run_info.json</code>). Barcodes
seen: barcodes of the raw matrix. Cells called: barcodes kept by the bustools filter. Genes per
cell: genes with at least one UMI. Fraction of UMIs in cells: UMIs of called cells / UMIs of all
barcodes, a proxy for the fraction of reads in cells (kb's matrices count UMIs, not reads).
% mitochondrial: UMIs on genes named MT-/mt-, NA when no gene has such a name.</p>
</body></html>
"""


def write_html(text: str, output: str | Path) -> None:
    _write_atomic(output, lambda tmp: Path(tmp).write_text(text))


# --- what the scripts run ----------------------------------------------------------------
def run_sample_qc(
    sample: str,
    run_info: str | Path,
    inspect: str | Path,
    raw: str | Path,
    filtered: str | Path | None,
    metrics_out: str | Path,
    knee_out: str | Path,
    thresholds: Thresholds = Thresholds(),
) -> dict:
    raw_adata = ad.read_h5ad(raw)
    filtered_adata = ad.read_h5ad(filtered) if filtered else None
    row = sample_metrics(
        sample, read_json(run_info), read_json(inspect), raw_adata, filtered_adata, thresholds
    )
    write_table(metrics_frame([row]), metrics_out)
    plot_knee(knee_data(raw_adata, filtered_adata), sample, knee_out, metrics=row)
    return row


def run_summary(
    metrics: Sequence[str | Path],
    table_out: str | Path,
    figure_out: str | Path,
    html_out: str | Path,
    thresholds: Thresholds = Thresholds(),
) -> pd.DataFrame:
    summary = read_metrics(metrics)
    write_table(summary, table_out)
    plot_summary(summary, figure_out, thresholds)
    write_html(summary_html(summary, thresholds), html_out)
    return summary

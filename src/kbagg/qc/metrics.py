"""QC metrics per sample from kb's own records and matrices, and the tables that hold them.

Inputs per sample: kb's `run_info.json` (kallisto: reads processed, pseudoaligned, unique),
`inspect.json` (bustools inspect), the raw matrix (every barcode kb saw) and, when barcode
filtering is on, the filtered matrix (the called cells).

kb's matrices hold UMI counts, not reads, so "fraction of reads in cells" is approximated
by the fraction of UMIs in cells: UMIs of the called cells / UMIs of all raw barcodes.
Samples that look bad get warnings (a `warnings` column, the job's log, the report); they
never fail the workflow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kbagg.atomic import atomic_output
from kbagg.cells.metrics import mito_genes
from kbagg.errors import KbaggError
from kbagg.rule import warning_line

if TYPE_CHECKING:  # the summary and MultiQC jobs read no matrix: no anndata import (~1.5 s)
    import anndata as ad

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
    "pct_doublets",
    "pct_ambient",
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
    "pct_doublets": "% predicted doublets",
    "pct_ambient": "% ambient RNA (estimated)",
}
METRICS = list(TITLES)


@dataclass(frozen=True)
class Thresholds:
    """Below these a sample gets a warning (never an error); config keys `qc.*`, whose
    defaults are in the schema."""

    min_pct_pseudoaligned: float
    min_cells: int


def warning_lines(sample: str, warnings: str) -> list[str]:
    """The log lines for a sample's '; '-joined warnings (`kbagg.rule.warning_line`)."""
    return [warning_line(w, sample) for w in warnings.split("; ") if w]


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


def pct_doublets(cells: ad.AnnData) -> float | None:
    """% of the cells Scrublet called doublets; None when no cell has a call."""
    if "predicted_doublet" not in cells.obs:
        return None
    calls = cells.obs["predicted_doublet"].astype("boolean").dropna()
    return 100.0 * float(calls.sum()) / len(calls) if len(calls) else None


def pct_ambient(cells: ad.AnnData) -> float | None:
    """% of the cells' UMIs estimated to be ambient RNA (config `ambient.method`); None
    when not estimated."""
    from kbagg.cells.ambient.apply import sample_fraction

    fraction = sample_fraction(cells)
    return None if fraction is None else 100.0 * fraction


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def _pct(part, whole) -> float | None:
    if part is None or not whole:
        return None
    return 100.0 * part / whole


def qc_warnings(metrics: dict, thresholds: Thresholds) -> list[str]:
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
    thresholds: Thresholds,
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
        "pct_doublets": None,
        "pct_ambient": None,
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
            pct_doublets=pct_doublets(filtered),
            pct_ambient=pct_ambient(filtered),
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
    for column in ("pct_pseudoaligned", "pct_unique", "pct_mito", "pct_doublets", "pct_ambient"):
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
        raise KbaggError(f"metrics tables {list(map(str, paths))}: missing columns {missing}")
    return metrics_frame(frame[COLUMNS].to_dict("records"))


def write_table(frame: pd.DataFrame, output: str | Path) -> None:
    with atomic_output(output) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, na_rep="NA")


def format_value(column: str, value) -> str:
    if _isna(value) or value is pd.NA:
        return "NA"
    if column in ("reads_processed", "barcodes_seen", "cells_called"):
        return f"{int(value):,}"
    if column == "fraction_umis_in_cells":
        return f"{float(value):.3f}"
    if column.startswith("pct_"):
        return f"{float(value):.1f}%"
    return f"{float(value):,.1f}"

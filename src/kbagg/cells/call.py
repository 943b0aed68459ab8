"""Which barcodes are cells, and what each cell looks like.

Two cell callers (config `filter.method`):

- `bustools` (default): the barcodes kept by `kb count --filter bustools`, a knee on UMIs per
  barcode; kb's filtered matrix is used as it is;
- `emptydrops`: EmptyDrops (`kbagg.cells.emptydrops`) on the raw matrix, which also finds
  cells below the knee (small cells) and leaves ambient-only droplets out.

kb's bustools calls are kept in both cases, as `obs['bustools_cell']` of `raw.h5ad`, so the
knee plot can show both. Every called cell then gets QC columns in `obs`: `n_umis`,
`n_genes`, `pct_mito`, and, unless `qc.doublets` is off, `doublet_score` and
`predicted_doublet` from Scrublet. They are flags, not filters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from kbagg.cell_calling_record import CellCallingRecord
from kbagg.cells.metrics import cell_qc

METHODS = ("bustools", "emptydrops")


@dataclass
class CellCalls:
    """The called cells of one sample and how they were called."""

    filtered: ad.AnnData
    record: CellCallingRecord  # for uns['kbagg_cells'] and provenance

    @property
    def warnings(self) -> list[str]:
        """What the sample's calls should be read with (also in the record)."""
        return self.record.warnings


def call_cells(
    sample: str,
    raw: ad.AnnData,
    kb_filtered: ad.AnnData,
    method: str,
    emptydrops: Mapping | None = None,
    log: Callable[[str], object] = print,
    plate: str = "",
) -> CellCalls:
    """Call the cells of `sample` and mark the calls in `raw.obs` (modified in place).

    Parameters
    ----------
    sample
        Sample name, for messages.
    raw
        Every barcode kb saw (barcodes x genes UMI counts).
    kb_filtered
        kb's bustools-filtered matrix of the same sample.
    method
        "bustools" or "emptydrops".
    emptydrops
        Keyword arguments of `empty_drops` (lower, fdr, n_iter, seed) for "emptydrops".
    log
        Receives progress lines.
    plate
        The technology when it is plate-based (SMARTSEQ2, SMARTSEQ3, BULK, STORMSEQ): every
        barcode kb reports is a cell of the plate, by construction; no knee and no
        EmptyDrops run, and the record says so (method "plate"). '' for droplets.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if plate:
        raw.obs["bustools_cell"] = True  # kb keeps every barcode of a plate (no --filter)
        record = CellCallingRecord(method="plate", n_barcodes=int(raw.n_obs))
        record.params = {
            "method": "plate",
            "technology": plate,
            "reason": (
                "plate-based technology: each barcode kb reports is a cell of the plate "
                f"(a FASTQ set or an index-read barcode), so no knee and no EmptyDrops; "
                f"config filter.method '{method}' does not apply"
            ),
        }
        record.n_cells = int(raw.n_obs)
        log(f"sample '{sample}': plate ({plate}): all {raw.n_obs:,} barcodes are cells")
        return CellCalls(raw.copy(), record)
    raw.obs["bustools_cell"] = raw.obs_names.isin(kb_filtered.obs_names)
    record = CellCallingRecord(method=method, n_barcodes=int(raw.n_obs))
    warnings = record.warnings
    if method == "bustools":
        filtered = kb_filtered
        record.params = {"method": "bustools", "tool": "kb count --filter bustools"}
    else:
        from kbagg.cells.emptydrops import empty_drops  # scipy.interpolate etc.: ~0.6 s

        result = empty_drops(
            raw.X, log=lambda line: log(f"sample '{sample}': {line}"), **emptydrops
        )
        raw.obs["emptydrops_fdr"] = result.fdr
        raw.obs["emptydrops_cell"] = result.is_cell
        filtered = raw[result.is_cell].copy()
        for column in ("bustools_cell", "emptydrops_fdr", "emptydrops_cell"):
            del filtered.obs[column]
        record.params = result.params
        warnings += [f"EmptyDrops: {w}" for w in result.warnings]
        both = int((raw.obs["bustools_cell"] & raw.obs["emptydrops_cell"]).sum())
        log(
            f"sample '{sample}': EmptyDrops called {filtered.n_obs:,} cells; the bustools "
            f"knee {int(raw.obs['bustools_cell'].sum()):,}; {both:,} in both"
        )
    record.n_cells = int(filtered.n_obs)
    if filtered.n_obs == 0:
        warnings.append(
            f"the {method} cell calling kept 0 of {raw.n_obs:,} barcodes: the sample adds no "
            "cells to the aggregate"
        )
    return CellCalls(filtered, record)


def add_cell_qc(
    calls: CellCalls, *, doublets: bool, seed: int, expected_doublet_rate: float
) -> None:
    """Add the per-cell QC columns to `calls.filtered.obs` (and notes to its record)."""
    cells = calls.filtered
    qc = cell_qc(cells)
    for column in qc.columns:
        cells.obs[column] = qc[column].to_numpy()
    if not doublets:
        calls.record.doublets = {"method": None, "reason": "qc.doublets is false"}
        return
    from kbagg.cells.doublets import score_doublets  # scipy.ndimage, and scanpy when it runs

    scores = score_doublets(cells, seed=seed, expected_doublet_rate=expected_doublet_rate)
    cells.obs["doublet_score"] = np.asarray(scores.doublet_score, dtype=np.float64)
    cells.obs["predicted_doublet"] = pd.array(scores.predicted_doublet, dtype="boolean")
    calls.record.doublets = {
        "method": "scrublet (scanpy.pp.scrublet)",
        "seed": int(seed),
        "expected_doublet_rate": float(expected_doublet_rate),
        "threshold": None if scores.threshold is None else float(scores.threshold),
        "reason": scores.reason,
        "n_predicted": int(np.nansum(cells.obs["predicted_doublet"].astype("float"))),
    }
    if scores.reason:
        calls.warnings.append(f"doublet scores missing: {scores.reason}")

"""QC of one sample and across samples: what the qc_sample and qc_summary rules run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from kbagg.qc.html_table import summary_html, write_html
from kbagg.qc.metrics import (
    Thresholds,
    metrics_frame,
    read_json,
    read_metrics,
    sample_metrics,
    write_table,
)
from kbagg.qc.plots import knee_data, plot_knee, plot_summary


def run_sample_qc(
    sample: str,
    run_info: str | Path,
    inspect: str | Path,
    raw: str | Path,
    filtered: str | Path | None,
    metrics_out: str | Path,
    knee_out: str | Path,
    thresholds: Thresholds,
) -> dict:
    import anndata as ad  # here, not at the top: run_summary reads no matrix

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
    thresholds: Thresholds,
) -> pd.DataFrame:
    summary = read_metrics(metrics)
    write_table(summary, table_out)
    plot_summary(summary, figure_out, thresholds)
    write_html(summary_html(summary, thresholds), html_out)
    return summary

"""The QC summary table as a self-contained HTML page."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from kbagg.atomic import atomic_output
from kbagg.qc.metrics import COLUMNS, METRICS, TITLES, Thresholds, format_value


def summary_html(summary: pd.DataFrame, thresholds: Thresholds) -> str:
    """A self-contained HTML page with the summary table; rows with warnings highlighted."""
    head = "".join(f"<th>{html.escape(TITLES.get(c, c))}</th>" for c in COLUMNS)
    rows = []
    for record in summary.to_dict("records"):
        warn = str(record.get("warnings") or "")
        cells = [f"<td class='name'>{html.escape(str(record['sample']))}</td>"]
        cells += [f"<td>{format_value(c, record[c])}</td>" for c in METRICS]
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
    with atomic_output(output) as tmp:
        Path(tmp).write_text(text)

"""QC across samples: summary.tsv, a bar chart per metric (PNG) and an HTML table."""

import argparse

import _kbagg_path  # noqa: F401

from kbagg.cli import run_cli
from kbagg.qc import Thresholds, run_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table", required=True, help="output summary.tsv")
    parser.add_argument("--figure", required=True, help="output summary figure (PNG)")
    parser.add_argument("--html", required=True, help="output summary table as HTML")
    parser.add_argument("--min-pct-pseudoaligned", type=float, default=30.0)
    parser.add_argument("--min-cells", type=int, default=10)
    parser.add_argument("metrics", nargs="+", help="each sample's metrics.tsv")
    args = parser.parse_args()
    summary = run_summary(
        args.metrics,
        args.table,
        args.figure,
        args.html,
        Thresholds(args.min_pct_pseudoaligned, args.min_cells),
    )
    print(summary.to_string(index=False))
    for sample, warnings in zip(summary["sample"], summary["warnings"], strict=True):
        for warning in filter(None, warnings.split("; ")):
            print(f"WARNING: sample '{sample}': {warning}", flush=True)


if __name__ == "__main__":
    run_cli(main)

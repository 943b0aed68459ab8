"""QC across samples: summary.tsv, a bar chart per metric (PNG) and an HTML table."""

import argparse

import _kbagg_path  # noqa: F401

from kbagg.cli import run_cli
from kbagg.qc import Thresholds, run_summary, warning_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table", required=True, help="output summary.tsv")
    parser.add_argument("--figure", required=True, help="output summary figure (PNG)")
    parser.add_argument("--html", required=True, help="output summary table as HTML")
    Thresholds.add_arguments(parser)
    parser.add_argument("metrics", nargs="+", help="each sample's metrics.tsv")
    args = parser.parse_args()
    summary = run_summary(
        args.metrics,
        args.table,
        args.figure,
        args.html,
        Thresholds.from_args(args),
    )
    print(summary.to_string(index=False))
    for sample, warnings in zip(summary["sample"], summary["warnings"], strict=True):
        print(*warning_lines(sample, warnings), sep="\n", flush=True)


if __name__ == "__main__":
    run_cli(main)

"""QC of one sample: metrics.tsv (one row) and a knee plot PNG; bad samples get warnings."""

import argparse

import _kbagg_path  # noqa: F401

from kbagg.cli import run_cli
from kbagg.qc import Thresholds, metrics_frame, run_sample_qc, warning_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample", required=True)
    parser.add_argument("--run-info", required=True, help="kb's run_info.json")
    parser.add_argument("--inspect", required=True, help="kb's inspect.json")
    parser.add_argument("--raw", required=True, help="the sample's raw.h5ad")
    parser.add_argument("--filtered", help="the sample's filtered.h5ad (omit without filter)")
    Thresholds.add_arguments(parser)
    parser.add_argument("--metrics", required=True, help="output metrics.tsv")
    parser.add_argument("--knee", required=True, help="output knee plot (PNG)")
    args = parser.parse_args()
    row = run_sample_qc(
        args.sample,
        args.run_info,
        args.inspect,
        args.raw,
        args.filtered,
        args.metrics,
        args.knee,
        Thresholds.from_args(args),
    )
    print(metrics_frame([row]).drop(columns="warnings").T.to_string(header=False, na_rep="NA"))
    print(*warning_lines(args.sample, row["warnings"]), sep="\n", flush=True)


if __name__ == "__main__":
    run_cli(main)

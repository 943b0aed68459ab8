"""Write the per-sample metadata table that the aggregate adds to obs."""

import argparse
import json

import _kbagg_path  # noqa: F401

from kbagg.cli import run_cli
from kbagg.samples import write_metadata_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table", required=True, help="JSON {column: [values...]}")
    parser.add_argument("--label", default="sample", help="name for the sample column")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    frame = write_metadata_table(json.loads(args.table), args.label, args.output)
    print(f"{len(frame)} samples, columns: {', '.join(frame.columns)}")


if __name__ == "__main__":
    run_cli(main)

"""Write the provenance record (uns['kbagg']) of an aggregate as JSON: versions, config,
sample sheet, and size + SHA-256 of every input file."""

import argparse
import json
from pathlib import Path

import _kbagg_path  # noqa: F401

from kbagg.atomic import atomic_output
from kbagg.cli import run_cli
from kbagg.provenance import collect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="the config used, as JSON")
    parser.add_argument("--sample-sheet", required=True, help="the sample sheet, as JSON")
    parser.add_argument(
        "--kb-info",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="kb_info.json of a sample's kb count (repeatable): the versions kb ran with",
    )
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("inputs", nargs="+", metavar="NAME=PATH")
    args = parser.parse_args()
    inputs = dict(item.split("=", 1) for item in args.inputs)
    kb_infos = dict(item.split("=", 1) for item in args.kb_info)
    record = collect(inputs, json.loads(args.config), json.loads(args.sample_sheet), kb_infos)
    with atomic_output(args.output) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    print(f"provenance of {len(inputs)} inputs written to {args.output}")


if __name__ == "__main__":
    run_cli(main)

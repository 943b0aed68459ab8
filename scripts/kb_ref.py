"""Build (FASTA + GTF) or download (kb ref -d) the kallisto index and t2g, atomically."""

import argparse

import _kbagg_path  # noqa: F401

from kbagg.cli import run_cli
from kbagg.count import WORKFLOWS
from kbagg.reference import build_reference, download_reference, reference_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--fasta-gtf", nargs=2, metavar=("FASTA", "GTF"))
    source.add_argument("--download", metavar="NAME", help="kb ref -d NAME (needs internet)")
    parser.add_argument("--workflow", choices=WORKFLOWS, default="standard")
    parser.add_argument("--outdir", required=True)
    args = parser.parse_args()
    outputs = reference_outputs(args.outdir, args.workflow, download=bool(args.download))
    if args.download:
        download_reference(args.download, args.workflow, outputs)
    else:
        build_reference(*args.fasta_gtf, args.workflow, outputs)
    print(f"reference ready: {', '.join(outputs.values())}")


if __name__ == "__main__":
    run_cli(main)

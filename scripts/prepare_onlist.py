"""Decompress kb's bundled barcode on-list for one technology, once for every sample."""

import argparse

import _kbagg_path  # noqa: F401

from kbagg.cli import run_cli
from kbagg.kb import write_onlist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("technology")
    parser.add_argument("output")
    args = parser.parse_args()
    if write_onlist(args.technology, args.output):
        print(f"{args.technology}: on-list written to {args.output}")
    else:
        print(f"{args.technology}: kb has no on-list; kb count builds one per sample")


if __name__ == "__main__":
    run_cli(main)

"""Run kb count for one sample (all lanes) and write raw.h5ad / filtered.h5ad atomically."""

import argparse
from pathlib import Path

import _kbagg_path  # noqa: F401

from kbagg.cli import run_cli
from kbagg.count import WORKFLOWS, CountJob, run_count


def parse_args() -> argparse.Namespace:
    """Options named after CountJob's fields, so the namespace becomes the job as it is."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--t2g", required=True)
    parser.add_argument("--technology", required=True)
    parser.add_argument("--workflow", choices=WORKFLOWS, default="standard")
    parser.add_argument("--c1")
    parser.add_argument("--c2")
    parser.add_argument("--onlist", help="barcode on-list (-w); an empty file = let kb decide")
    parser.add_argument("--kb-dir", required=True, type=Path, help="kb's output folder")
    parser.add_argument("--raw", dest="raw_h5ad", required=True, type=Path)
    parser.add_argument("--filtered", dest="filtered_h5ad", type=Path, help="omit: no filter")
    parser.add_argument("--filter-threshold", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument("--extra", dest="extra_args", default="", help="extra kb count args")
    parser.add_argument("fastqs", nargs="+")
    args = parser.parse_args()
    # An empty on-list file marks a technology kb has no on-list for.
    if args.onlist and not Path(args.onlist).stat().st_size:
        args.onlist = None
    args.extra_args = args.extra_args.split()
    return args


def main() -> None:
    args = parse_args()
    written = run_count(CountJob(**vars(args)))
    shapes = ", ".join(f"{k} {a.n_obs} cells x {a.n_vars} genes" for k, a in written.items())
    print(f"sample '{args.sample}': {shapes}")


if __name__ == "__main__":
    run_cli(main)

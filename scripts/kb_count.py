"""Run kb count for one sample (all lanes) and write raw.h5ad / filtered.h5ad atomically."""

import argparse
from pathlib import Path

import _kbagg_path  # noqa: F401

from kbagg.cli import run_cli
from kbagg.count import WORKFLOWS, CountJob, run_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--t2g", required=True)
    parser.add_argument("--technology", required=True)
    parser.add_argument("--workflow", choices=WORKFLOWS, default="standard")
    parser.add_argument("--c1")
    parser.add_argument("--c2")
    parser.add_argument("--onlist", help="barcode on-list (-w); empty file = let kb decide")
    parser.add_argument("--kb-dir", required=True, type=Path, help="kb's output folder")
    parser.add_argument("--raw", required=True, type=Path)
    parser.add_argument("--filtered", type=Path, help="omit to skip barcode filtering")
    parser.add_argument("--filter-threshold", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument("--extra", default="", help="extra kb count arguments, one string")
    parser.add_argument("fastqs", nargs="+")
    args = parser.parse_args()
    # An empty on-list file marks a technology kb has no on-list for.
    onlist = args.onlist if args.onlist and Path(args.onlist).stat().st_size else None
    written = run_count(
        CountJob(
            sample=args.sample,
            fastqs=args.fastqs,
            index=args.index,
            t2g=args.t2g,
            technology=args.technology,
            workflow=args.workflow,
            c1=args.c1,
            c2=args.c2,
            onlist=onlist,
            kb_dir=args.kb_dir,
            raw_h5ad=args.raw,
            filtered_h5ad=args.filtered,
            filter_threshold=args.filter_threshold,
            threads=args.threads,
            memory_mb=args.memory_mb,
            extra_args=args.extra.split(),
        )
    )
    shapes = ", ".join(f"{k} {a.n_obs} cells x {a.n_vars} genes" for k, a in written.items())
    print(f"sample '{args.sample}': {shapes}")


if __name__ == "__main__":
    run_cli(main)

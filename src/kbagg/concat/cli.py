"""`kbagg-concat`: concatenate h5ad files into one, streaming matrices with bounded memory.

    kbagg-concat -o OUT.h5ad|OUT.zarr [--join inner|outer] [--label sample]
        [--index-unique SEP] [--obs-metadata TABLE.tsv] [--chunk-entries N] [--quiet]
        [--format h5ad|zarr] [--compression METHOD[:LEVEL]]
        [--threads N] [--gene-major-output CSC.h5ad]
        NAME=PATH.h5ad [NAME=PATH.h5ad ...]

A bare PATH uses the file's stem as the sample name. Exit code 0 only when OUT is complete.
"""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path

from kbagg.cli import run_cli
from kbagg.concat.engine import FORMATS, ConcatError, concat_on_disk
from kbagg.concat.options import ConcatOptions


def parse_input(arg: str) -> tuple[str, Path]:
    """``NAME=PATH`` -> (NAME, PATH); a bare PATH (or one whose '=' is in a directory) -> stem."""
    name, sep, path = arg.partition("=")
    if sep and name and "/" not in name:
        if not path:
            raise argparse.ArgumentTypeError(f"{arg!r}: empty path after '='")
        return name, Path(path)
    return Path(arg).stem, Path(arg)


def parse_uns(arg: str) -> tuple[str, dict]:
    """``KEY=FILE.json`` -> (KEY, the JSON object in FILE)."""
    key, sep, path = arg.partition("=")
    if not (sep and key and path):
        raise argparse.ArgumentTypeError(f"{arg!r}: expected KEY=FILE.json")
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"--uns {arg}: {e}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--uns {arg}: {path} must hold a JSON object")
    return key, value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    default = ConcatOptions()  # the config schema's defaults
    p = argparse.ArgumentParser(
        description="Concatenate h5ad files along cells with bounded memory (see README)."
    )
    p.add_argument(
        "-o", "--output", required=True, type=Path, help="output .h5ad (or .zarr: a zarr store)"
    )
    p.add_argument("--join", choices=("inner", "outer"), default=default.join)
    p.add_argument(
        "--label",
        default=default.label,
        help=f"obs column holding the sample name (default {default.label})",
    )
    p.add_argument(
        "--index-unique",
        default=default.index_unique or "",
        metavar="SEP",
        help="obs names become <barcode><SEP><NAME>; '' keeps barcodes unchanged "
        f"(default '{default.index_unique or ''}')",
    )
    p.add_argument(
        "--obs-metadata",
        type=Path,
        metavar="TABLE.tsv",
        help="TSV with a sample (or --label) column; other columns become categorical obs",
    )
    p.add_argument(
        "--chunk-entries",
        type=int,
        default=default.chunk_entries,
        metavar="N",
        help=f"stored entries (non-zeros) per chunk in memory (default {default.chunk_entries})",
    )
    p.add_argument(
        "--uns",
        action="append",
        default=[],
        type=parse_uns,
        metavar="KEY=FILE.json",
        help="store the JSON object in FILE under uns[KEY] of the output (repeatable)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="output format (default: zarr for an OUT ending in .zarr, else h5ad)",
    )
    p.add_argument(
        "--compression",
        default=None,
        metavar="METHOD[:LEVEL]",
        help="h5ad: none (default), gzip[:1-9] (shuffle + deflate by zlib, default level 4), "
        "isal[:0-3] (the same standard filters, encoded by ISA-L: several times faster, "
        "default level 1) or lzf; zarr: blosc[:1-9] (default: zstd after a byte shuffle, "
        "level 1), zstd[:1-22] (default level 3), gzip[:1-9] or none",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="worker threads that remap, sort and compress chunks (default 1)",
    )
    p.add_argument(
        "--gene-major-output",
        type=Path,
        default=None,
        metavar="CSC.h5ad",
        help="also write the result with X and layers as CSC (gene-major) to this h5ad",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("inputs", nargs="+", type=parse_input, metavar="NAME=PATH.h5ad")
    return p


def _exit_on_sigterm(signum, frame):
    # Raising lets the engine delete its temp file (SIGTERM is how Snakemake cancels jobs).
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    run_cli(lambda: _concat(build_parser().parse_args(argv)))


def _concat(args: argparse.Namespace) -> None:
    names = [name for name, _ in args.inputs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConcatError(f"duplicate sample names: {', '.join(dupes)}")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    concat_on_disk(
        dict(args.inputs),
        args.output,
        ConcatOptions(
            join=args.join,
            label=args.label,
            index_unique=args.index_unique,
            obs_metadata=args.obs_metadata,
            chunk_entries=args.chunk_entries,
        ),
        progress=not args.quiet,
        uns=dict(args.uns),
        format=args.format,
        compression=args.compression,
        threads=args.threads,
        gene_major_output=args.gene_major_output,
    )


if __name__ == "__main__":
    main()

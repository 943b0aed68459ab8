#!/usr/bin/env python
"""Benchmark: kbagg's concat engine vs anndata's concat_on_disk, in-memory anndata.concat and
`cat` (the I/O floor), on the same generated inputs, each as a fresh child process.

    python tests/benchmarks/bench_concat.py                      # small, ~1 minute
    python tests/benchmarks/bench_concat.py --files 8 --cells 10000 --genes 30000 \\
        --nnz-per-cell 2000 --join both --workdir /tmp/bench     # the README figures

Each file holds a random subset of the genes (a shared core of 90% plus half of the rest),
so the outer join differs from the inner one. Prints wall time, peak RSS (the child's own
ru_maxrss via wait4) and ratios as a markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from concat_helpers import child_peak_rss_mb, write_sparse_h5ad  # noqa: E402

CLI = [sys.executable, "-m", "kbagg.aggregate.cli"]  # kbagg-concat

ANNDATA_ON_DISK = """
import sys, anndata as ad
from anndata.experimental import concat_on_disk
out, join, *pairs = sys.argv[1:]
files = dict(p.split("=", 1) for p in pairs)
concat_on_disk(files, out, join=join, label="sample", index_unique="-", merge="same")
"""

# The second floor: the same matrix bytes read and written through h5py, with no processing
# (no remapping, no obs/var, no anndata import), into chunked datasets like the engine's.
H5PY_COPY = """
import sys, h5py, numpy as np
out, *paths = sys.argv[1:]
step = 1 << 21
sizes = []
for p in paths:
    with h5py.File(p, "r") as f:
        sizes.append(f["X/data"].shape[0])
with h5py.File(out, "w") as o:
    dst = {k: o.create_dataset(k, (sum(sizes),), dt, chunks=(1 << 18,))
           for k, dt in (("data", np.float32), ("indices", np.int32))}
    bufs = {k: np.empty(step, d.dtype) for k, d in dst.items()}
    pos = 0
    for p, n in zip(paths, sizes):
        with h5py.File(p, "r") as f:
            for a in range(0, n, step):
                m = min(step, n - a)
                for k, d in dst.items():
                    f["X/" + k].read_direct(bufs[k], np.s_[a : a + m], np.s_[:m])
                    d.write_direct(bufs[k], np.s_[:m], np.s_[pos : pos + m])
                pos += m
"""

ANNDATA_IN_MEMORY = """
import sys, anndata as ad
out, join, *pairs = sys.argv[1:]
files = dict(p.split("=", 1) for p in pairs)
adatas = {k: ad.read_h5ad(v) for k, v in files.items()}
ad.concat(adatas, join=join, label="sample", index_unique="-", merge="same").write_h5ad(out)
"""


def generate(workdir: Path, n_files: int, cells: int, genes: int, nnz: int) -> dict[str, Path]:
    rng = np.random.default_rng(42)
    names = np.array([f"ENSG{i:011d}" for i in range(genes)])
    core = int(genes * 0.9)
    paths = {}
    for i in range(n_files):
        extra = rng.choice(np.arange(core, genes), (genes - core) // 2, replace=False)
        own = names[np.sort(np.concatenate([np.arange(core), extra]))]
        paths[f"s{i:03d}"] = workdir / f"s{i:03d}.h5ad"
        write_sparse_h5ad(paths[f"s{i:03d}"], cells, list(own), nnz, seed=i)
    return paths


def run_child(cmd: list[str], stdout=subprocess.DEVNULL) -> tuple[float, float]:
    """Wall seconds and the child's own peak RSS in MB."""
    t0 = time.perf_counter()
    status, rss_mb, err = child_peak_rss_mb(cmd, stdout=stdout)
    wall = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {err[-2000:]}")
    return wall, rss_mb


def measure(method: str, paths: dict[str, Path], join: str, out: Path, chunk_entries) -> tuple:
    pairs = [f"{k}={v}" for k, v in paths.items()]
    # Flush the previous method's output first, so its writeback does not slow this one.
    os.sync()
    time.sleep(0.5)
    if method == "cat":
        with open(out, "wb") as fh:
            result = run_child([shutil.which("cat"), *map(str, paths.values())], stdout=fh)
    elif method == "kbagg":
        extra = ["--chunk-entries", str(chunk_entries)] if chunk_entries else []
        cmd = [*CLI, "-o", str(out), "--quiet", "--join", join, *extra]
        result = run_child(cmd + pairs)
    elif method == "h5py-copy":
        result = run_child([sys.executable, "-c", H5PY_COPY, str(out), *map(str, paths.values())])
    else:
        code = ANNDATA_ON_DISK if method == "anndata.concat_on_disk" else ANNDATA_IN_MEMORY
        result = run_child([sys.executable, "-c", code, str(out), join, *pairs])
    size = out.stat().st_size / 2**20
    out.unlink()
    return (*result, size)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--cells", type=int, default=2000)
    p.add_argument("--genes", type=int, default=5000)
    p.add_argument("--nnz-per-cell", type=int, default=500)
    p.add_argument("--join", choices=("inner", "outer", "both"), default="both")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    p.add_argument(
        "--chunk-entries", type=int, default=None, help="engine budget (default: its own)"
    )
    p.add_argument(
        "--methods",
        default="cat,h5py-copy,kbagg,anndata.concat_on_disk,anndata.concat",
        help="comma-separated subset of cat,h5py-copy,kbagg,anndata.concat_on_disk,anndata.concat",
    )
    p.add_argument("--keep", action="store_true", help="keep the generated inputs")
    p.add_argument(
        "--inputs",
        type=Path,
        default=None,
        help="reuse the *.h5ad files of this directory (e.g. kept from an earlier run) "
        "instead of generating new ones",
    )
    args = p.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench_concat_", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        if args.inputs:
            paths = {q.stem: q for q in sorted(args.inputs.glob("*.h5ad"))}
        else:
            paths = generate(workdir, args.files, args.cells, args.genes, args.nnz_per_cell)
        for q in paths.values():  # into the page cache, for every method alike
            with open(q, "rb") as fh:
                while fh.read(1 << 24):
                    pass
        in_mb = sum(q.stat().st_size for q in paths.values()) / 2**20
        what = (
            f"{len(paths)} files from {args.inputs}"
            if args.inputs
            else f"{args.files} files x {args.cells} cells x {args.genes} genes, "
            f"{args.nnz_per_cell} nnz/cell"
        )
        print(
            f"# {what}, {in_mb:,.0f} MB of input (generated in {time.perf_counter() - t0:.1f} s)\n"
        )
        print(
            "| join | method | wall s | peak RSS MB | out MB | vs concat_on_disk | "
            "vs anndata.concat | vs cat | vs h5py copy |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        methods = args.methods.split(",")
        for join in ("inner", "outer") if args.join == "both" else (args.join,):
            rows = {
                m: measure(m, paths, join, workdir / "out.h5ad", args.chunk_entries)
                for m in methods
            }
            for m, (wall, rss, size) in rows.items():
                ratios = [
                    f"{rows[ref][0] / wall:.2f}x faster" if ref in rows and m != ref else ""
                    for ref in ("anndata.concat_on_disk", "anndata.concat")
                ]
                floors = [
                    f"{wall / rows[ref][0]:.2f}x" if ref in rows else ""
                    for ref in ("cat", "h5py-copy")
                ]
                print(
                    f"| {join} | {m} | {wall:.2f} | {rss:,.0f} | {size:,.0f} | "
                    f"{ratios[0]} | {ratios[1]} | {floors[0]} | {floors[1]} |",
                    flush=True,
                )
    finally:
        if not args.keep:
            shutil.rmtree(workdir)


if __name__ == "__main__":
    main()

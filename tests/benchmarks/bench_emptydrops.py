#!/usr/bin/env python
"""Benchmark: time and peak RSS of `empty_drops` on a kb-sized raw matrix, each run a fresh
child process, against an anchor child that only loads the matrix and sums its rows.

    python tests/benchmarks/bench_emptydrops.py                  # 1,000,000 x 30,000, ~3 min
    python tests/benchmarks/bench_emptydrops.py --repeats 5 --workdir /tmp/bench_ed --keep

The matrix is generated once (kbagg.simulate.cells: a few thousand cells of 7 types, small
cells at 1/5 depth, 8% doublets, every other barcode an empty droplet with 1-10 UMIs) and
saved as an uncompressed .npz (float32 CSR, like kb's h5ad). Children run interleaved
(anchor, emptydrops, anchor, ...); the table shows medians, the ratio to the anchor and the
peak RSS of each child (its own ru_maxrss via wait4). Also prints what EmptyDrops called
against the simulation's truth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))
from concat_helpers import child_peak_rss_mb  # noqa: E402

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, scipy.sparse as sp
from kbagg.cells.emptydrops import empty_drops
mode, matrix, out, n_iter = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
start = time.perf_counter()
raw = sp.load_npz(matrix).tocsr()
loaded = time.perf_counter()
if mode == "anchor":
    totals = np.asarray(raw.sum(axis=1)).ravel()
    result = {"n_barcodes": int(len(totals))}
else:
    r = empty_drops(raw, n_iter=n_iter, seed=0)
    np.save(out + ".is_cell.npy", r.is_cell)
    result = {k: r.params[k] for k in ("n_cells", "n_tested", "knee", "alpha_used",
                                       "max_simulated_total")}
result["load_s"] = loaded - start
result["work_s"] = time.perf_counter() - loaded
with open(out, "w") as f:
    json.dump(result, f)
"""


def generate(path: Path, n_barcodes: int, n_genes: int, n_cells: int, seed: int) -> np.ndarray:
    """Write the raw matrix to `path`; return each barcode's truth kind."""
    from kbagg.simulate.cells import simulate_droplets
    from kbagg.simulate.spec import HardCells

    hard = HardCells(n_small_cells=n_cells // 10, empty_umis_max=10)
    n_singlets = n_cells + hard.n_small_cells
    n_doublets = round(hard.doublet_fraction * n_singlets / (1 - hard.doublet_fraction))
    n_empty = n_barcodes - n_singlets - n_doublets
    droplets = simulate_droplets(np.random.default_rng(seed), n_genes, n_cells, n_empty, hard)
    sp.save_npz(path, droplets.counts.astype(np.float32), compressed=False)
    return droplets.obs["kind"].to_numpy().astype(str)


def run_child(mode: str, matrix: Path, out: Path, n_iter: int) -> dict:
    cmd = [sys.executable, "-c", CHILD, str(REPO / "src"), mode, str(matrix), str(out), str(n_iter)]
    start = time.perf_counter()
    status, rss_mb, err = child_peak_rss_mb(cmd)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{mode} child failed ({status}):\n{err[-3000:]}")
    return json.loads(out.read_text()) | {"wall_s": wall, "rss_mb": rss_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--barcodes", type=int, default=1_000_000)
    parser.add_argument("--genes", type=int, default=30_000)
    parser.add_argument("--cells", type=int, default=3_000, help="normal cells (default 3000)")
    parser.add_argument("--n-iter", type=int, default=10_000, help="Monte Carlo iterations")
    parser.add_argument("--repeats", type=int, default=3, help="runs per child; medians count")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_emptydrops-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        matrix = workdir / "raw.npz"
        start = time.perf_counter()
        kind = generate(matrix, args.barcodes, args.genes, args.cells, seed=0)
        print(
            f"generated {args.barcodes:,} x {args.genes:,} in {time.perf_counter() - start:.0f} s, "
            f"{matrix.stat().st_size / 1e6:.0f} MB on disk; load average {os.getloadavg()}",
            file=sys.stderr,
        )
        runs: dict[str, list[dict]] = {"anchor": [], "emptydrops": []}
        for r in range(args.repeats):
            for mode in ("anchor", "emptydrops") if r % 2 == 0 else ("emptydrops", "anchor"):
                runs[mode].append(run_child(mode, matrix, workdir / f"{mode}.json", args.n_iter))
                print(f"run {r + 1} {mode}: {runs[mode][-1]}", file=sys.stderr)
        load_average = os.getloadavg()

        def median(mode: str, key: str) -> float:
            return statistics.median(run[key] for run in runs[mode])

        anchor_wall, anchor_rss = median("anchor", "wall_s"), median("anchor", "rss_mb")
        print(f"\n{args.barcodes:,} barcodes x {args.genes:,} genes, n_iter={args.n_iter:,}, ")
        print(f"medians of {args.repeats} fresh children; load average after: {load_average}\n")
        print("| child | wall s | x anchor | empty_drops s | peak RSS MB | RSS - anchor MB |")
        print("|---|---:|---:|---:|---:|---:|")
        for mode in runs:
            wall, rss = median(mode, "wall_s"), median(mode, "rss_mb")
            work = f"{median(mode, 'work_s'):.1f}" if mode == "emptydrops" else "-"
            print(
                f"| {mode} | {wall:.1f} | {wall / anchor_wall:.1f} | {work} | {rss:.0f} | "
                f"{rss - anchor_rss:+.0f} |"
            )
        is_cell = np.load(workdir / "emptydrops.json.is_cell.npy")
        last = runs["emptydrops"][-1]
        recall = {k: float(np.mean(is_cell[kind == k])) for k in ("cell", "small_cell", "doublet")}
        print(
            f"\nknee {last['knee']:.0f}, alpha {last['alpha_used']:.0f}, {last['n_tested']:,} "
            f"tested, {last['n_cells']:,} cells called; called fraction by truth: "
            + ", ".join(f"{k} {v:.3f}" for k, v in recall.items())
            + f", empty {np.mean(is_cell[kind == 'empty']):.5f}"
        )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

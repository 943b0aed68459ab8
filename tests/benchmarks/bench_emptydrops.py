#!/usr/bin/env python
"""Benchmark: kbagg's `empty_drops` against the real DropletUtils `emptyDrops` (R, the
anchor) on the same simulated raw matrix: time, peak RSS and the calls against truth.

    python tests/benchmarks/bench_emptydrops.py                 # 83,000 barcodes, ~6 min
    python tests/benchmarks/bench_emptydrops.py --repeats 5 --workdir /tmp/bench_ed --keep

The matrix (kbagg.simulate.cells, seed 0): 2,800 normal cells of 6 types, 300 small cells
of their own type at 1/5 of normal depth, 8% doublets, 80,000 empty droplets drawn from a
Dirichlet-multinomial around the ambient profile (alpha 1,000), 5% of them ambient-rich
(median 150 UMIs) so that hundreds are above `lower` and are tested. Written once as .npz
(float32 CSR, like kb's h5ad) for kbagg and as MatrixMarket for R.

Each run is a fresh child process, interleaved (DropletUtils, kbagg, kbagg, DropletUtils,
...); both run with lower=100, the same iterations and seed, and their own default knee and
alpha. The tables show medians: the child's wall time (R: loading its packages, reading the
.mtx and emptyDrops; kbagg: loading the .npz and empty_drops), the emptyDrops call alone,
each as a ratio to DropletUtils, and the child's peak RSS (its own ru_maxrss via wait4).
Then the calls of the last run against the simulation's truth, beside the trivial rule
"every barcode above lower is a cell", and their Jaccard index with DropletUtils' calls.
Needs Rscript with DropletUtils (Debian: r-bioc-dropletutils).
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
from dropletutils import (  # noqa: E402
    EMPTY_DROPLETS,
    command,
    dropletutils_missing,
    jaccard,
    read_result,
    write_mtx,
)

LOWER = 100
CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, scipy.sparse as sp
from kbagg.cells.emptydrops import empty_drops
matrix, out, lower, n_iter, seed = sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
start = time.perf_counter()
raw = sp.load_npz(matrix).tocsr()
loaded = time.perf_counter()
r = empty_drops(raw, lower=lower, n_iter=n_iter, seed=seed)
result = {k: r.params[k] for k in ("n_cells", "n_tested", "knee", "alpha_used")}
result["emptydrops_s"] = time.perf_counter() - loaded
np.save(out + ".is_cell.npy", r.is_cell)
with open(out, "w") as f:
    json.dump(result, f)
"""


def generate(workdir: Path, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Write raw.npz and raw.mtx; return each barcode's truth kind and total."""
    from kbagg.simulate.cells import simulate_droplets
    from kbagg.simulate.spec import HardCells

    hard = HardCells(n_small_cells=args.small_cells, **EMPTY_DROPLETS)
    droplets = simulate_droplets(np.random.default_rng(0), args.genes, args.cells, args.empty, hard)
    sp.save_npz(workdir / "raw.npz", droplets.counts.astype(np.float32), compressed=False)
    write_mtx(droplets.counts, workdir / "raw.mtx")
    totals = np.asarray(droplets.counts.sum(axis=1)).ravel()
    return droplets.obs["kind"].to_numpy().astype(str), totals


def run_child(mode: str, workdir: Path, args: argparse.Namespace) -> dict:
    if mode == "DropletUtils":
        out = workdir / "dropletutils.csv"
        cmd = command(workdir / "raw.mtx", out, lower=LOWER, n_iter=args.n_iter, seed=0)
    else:
        out = workdir / "kbagg.json"
        cmd = [sys.executable, "-c", CHILD, str(REPO / "src"), str(workdir / "raw.npz"), str(out),
               str(LOWER), str(args.n_iter), "0"]  # fmt: skip
    start = time.perf_counter()
    with open(workdir / f"{mode}.stdout", "w") as stdout:
        status, rss_mb, err = child_peak_rss_mb(cmd, stdout=stdout)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{mode} child failed ({status}):\n{err[-3000:]}")
    if mode == "DropletUtils":
        result = read_result(out, (workdir / f"{mode}.stdout").read_text())
        np.save(workdir / "dropletutils.is_cell.npy", result.is_cell)
        info = {"emptydrops_s": result.seconds, "alpha_used": result.alpha,
                "knee": result.retain}  # fmt: skip
    else:
        info = json.loads(out.read_text())
    return info | {"wall_s": wall, "rss_mb": rss_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=2_800, help="normal cells")
    parser.add_argument("--small-cells", type=int, default=300)
    parser.add_argument("--empty", type=int, default=80_000, help="empty droplets")
    parser.add_argument("--genes", type=int, default=10_000)
    parser.add_argument("--n-iter", type=int, default=10_000, help="Monte Carlo iterations")
    parser.add_argument("--repeats", type=int, default=3, help="runs per child; medians count")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if reason := dropletutils_missing():
        sys.exit(f"the anchor cannot run: {reason}")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_emptydrops-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        kind, totals = generate(workdir, args)
        print(
            f"generated {len(kind):,} x {args.genes:,} in {time.perf_counter() - start:.0f} s; "
            f"load average {os.getloadavg()}",
            file=sys.stderr,
        )
        modes = ("DropletUtils", "kbagg")
        runs: dict[str, list[dict]] = {mode: [] for mode in modes}
        for r in range(args.repeats):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                runs[mode].append(run_child(mode, workdir, args))
                print(f"run {r + 1} {mode}: {runs[mode][-1]}", file=sys.stderr)
        load_average = os.getloadavg()

        def median(mode: str, key: str) -> float:
            return statistics.median(run[key] for run in runs[mode])

        anchor_wall, anchor_ed = (
            median("DropletUtils", "wall_s"),
            median("DropletUtils", "emptydrops_s"),
        )
        print(f"\n{len(kind):,} barcodes x {args.genes:,} genes, lower={LOWER}, "
              f"n_iter={args.n_iter:,}, seed 0")  # fmt: skip
        print(f"medians of {args.repeats} fresh children; load average after: {load_average}\n")
        print("| child | wall s | x DropletUtils | emptyDrops s | x DropletUtils | peak RSS MB |")
        print("|---|---:|---:|---:|---:|---:|")
        for mode in modes:
            wall, ed, rss = (
                median(mode, "wall_s"),
                median(mode, "emptydrops_s"),
                median(mode, "rss_mb"),
            )
            print(f"| {mode} | {wall:.1f} | {wall / anchor_wall:.2f} | {ed:.1f} | "
                  f"{ed / anchor_ed:.2f} | {rss:.0f} |")  # fmt: skip

        real, small, empty = kind != "empty", kind == "small_cell", kind == "empty"
        anchor = np.load(workdir / "dropletutils.is_cell.npy")
        calls = {
            "DropletUtils": anchor,
            "kbagg": np.load(workdir / "kbagg.json.is_cell.npy"),
            "above lower": totals > LOWER,
        }
        print(f"\n{np.count_nonzero(empty & (totals > LOWER)):,} empty droplets above lower; "
              f"knee (retain) DropletUtils {runs['DropletUtils'][-1]['knee']:.0f}, kbagg "
              f"{runs['kbagg'][-1]['knee']:.0f}; alpha DropletUtils "
              f"{runs['DropletUtils'][-1]['alpha_used']:.1f}, kbagg "
              f"{runs['kbagg'][-1]['alpha_used']:.1f}\n")  # fmt: skip
        print(
            "| calls | cells | precision | recall | small-cell recall | Jaccard vs DropletUtils |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for name, called in calls.items():
            print(f"| {name} | {called.sum():,} | {np.mean(real[called]):.4f} | "
                  f"{np.mean(called[real]):.4f} | {np.mean(called[small]):.4f} | "
                  f"{jaccard(called, anchor):.4f} |")  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

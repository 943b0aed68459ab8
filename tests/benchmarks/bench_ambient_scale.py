"""Ambient RNA removal at the issue's scale: `remove_ambient` on a 10,000-cell sample.

The simulator (`kbagg.simulate.cells`, `HardCells`) writes one sample once: --cells cells of
--umis median UMIs (5,500: what ~20,000 read pairs per cell, 10x's recommended minimum, give
at typical sequencing saturation), --genes genes, --empty empty droplets, 10% ambient RNA.
Then --repeats fresh processes each load it and time the import of `kbagg.cells.ambient`
and `remove_ambient` (wall clock), with the peak RSS (VmHWM) before and after the call;
medians are printed, with the estimate against the truth.

The `kb count` side comes from bench_fastq_check.py (kb count wall time at 1 M and 4 M read
pairs gives its fixed cost and time per million read pairs); see docs/ambient.md.

    PYTHONPATH=src python tests/benchmarks/bench_ambient_scale.py --workdir /tmp/bench_amb
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, scipy.sparse as sp
work = sys.argv[1]
raw = sp.load_npz(f"{work}/raw.npz").tocsr()
is_cell = np.load(f"{work}/is_cell.npy")
def hwm():
    return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) / 1024
loaded = hwm()
t1 = time.perf_counter()
from kbagg.cells.ambient import remove_ambient
t2 = time.perf_counter()
r = remove_ambient("bench", raw, is_cell)
t3 = time.perf_counter()
print(json.dumps({"import_s": t2 - t1, "remove_s": t3 - t2, "peak_mb": hwm(),
                  "loaded_mb": loaded, "estimate": r.sample_fraction,
                  "clusters": r.params["n_clusters"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="the sample is kept here")
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--umis", type=float, default=5_500.0, help="median UMIs per cell")
    parser.add_argument("--empty", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import scipy.sparse as sp

    args.workdir.mkdir(parents=True, exist_ok=True)
    meta = args.workdir / "sample.json"
    if not meta.exists():
        from kbagg.simulate.cells import simulate_droplets
        from kbagg.simulate.spec import HardCells

        hard = HardCells(
            n_small_cells=0,
            doublet_fraction=0.0,
            cell_umis_median=args.umis,
            ambient_fraction=0.1,
        )
        d = simulate_droplets(np.random.default_rng(7), args.genes, args.cells, args.empty, hard)
        is_cell = d.obs["is_cell"].to_numpy()
        umis = np.asarray(d.counts[is_cell].sum(axis=1)).ravel()
        free = np.asarray(d.ambient_free[is_cell].sum(axis=1)).ravel()
        sp.save_npz(args.workdir / "raw.npz", d.counts.tocsr())
        np.save(args.workdir / "is_cell.npy", is_cell)
        info = {
            "cells": int(is_cell.sum()),
            "genes": args.genes,
            "cell_umis": int(umis.sum()),
            "median_umis": float(np.median(umis)),
            "nnz": int(d.counts[is_cell].nnz),
            "empty_umis": int(d.counts[~is_cell].sum()),
            "truth": float(1 - free.sum() / umis.sum()),
        }
        meta.write_text(json.dumps(info))
    info = json.loads(meta.read_text())
    env = {**os.environ}
    runs = []
    for _ in range(args.repeats):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.workdir)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        runs.append(json.loads(out.stdout))
        print(runs[-1], file=sys.stderr)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"{info['cells']:,} cells x {info['genes']:,} genes, {info['cell_umis'] / 1e6:.1f} M cell "
        f"UMIs (median {info['median_umis']:,.0f}), {info['nnz'] / 1e6:.1f} M non-zeros, "
        f"{info['empty_umis']:,} UMIs in empty droplets; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| import (s) | remove_ambient (s) | peak RSS (MB) | after loading the input (MB) "
        "| estimate | truth |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {med['import_s']:.2f} | {med['remove_s']:.1f} | {med['peak_mb']:.0f} | "
        f"{med['loaded_mb']:.0f} | {med['estimate']:.3f} | {info['truth']:.3f} |"
    )


if __name__ == "__main__":
    main()

"""Ambient RNA removal: kbagg's `soup` against the real peers on simulated droplets with truth.

Peers run for real in their own venv (peer venv `ambient` of tests/benchmarks/install_peers.sh, or `--peer-python`):
soupx-python (autoEstCont + adjustCounts) and decontx-python (decontx), both given the same
k-means clusters kbagg uses; CellBender on the CPU when installed, stopped at 10x kbagg's
time. Baseline: every cell 10% ambient, subtracted along the soup profile.

Per contamination level, medians over seeds: |estimated - true| sample contamination,
per-cell mean absolute error, fraction of true ambient UMIs removed, fraction of true cell
UMIs wrongly removed, the counts' error against the ambient-free truth (sum of absolute
differences, and root of summed squares, each over the same for the counts left as they are:
1.0 is no better than doing nothing), marker leakage (mean UMIs per cell of a type's
programme genes in the other types; truth and before for reference), wall time and peak RSS (VmHWM of the peer's own
process; kbagg's in-process peak includes the simulation).

    PYTHONPATH=src python tests/benchmarks/bench_ambient.py --cells 2000 --seeds 3
    ... --first-seed 10 --peers decontx   # held-out seeds 10-12, DecontX only (SoupX is slow)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from peers import peer_python  # tests/benchmarks/peers.py: install_peers.sh's venvs

PEER = r"""
import json, resource, sys, time
import numpy as np, pandas as pd, scipy.sparse as sp
method, workdir = sys.argv[1], sys.argv[2]
raw = sp.load_npz(f"{workdir}/raw.npz").tocsr()
z = np.load(f"{workdir}/cells.npz")
is_cell, clusters = z["is_cell"], z["clusters"]
cells = raw[is_cell].tocsr()
t = time.perf_counter()
if method == "soupx":
    import soupx
    names = [f"c{i}" for i in range(cells.shape[0])]
    chan = soupx.SoupChannel(tod=raw.T.tocsr(), toc=cells.T.tocsr(), metaData=pd.DataFrame(index=names))
    chan.setClusters(clusters.astype(str))
    try:
        chan = soupx.autoEstCont(chan, verbose=False)
    except ValueError as e:  # SoupX's own advice: lower tfidfMin / soupQuantile
        print(f"soupx defaults failed ({e}); retrying tfidfMin=0.5, soupQuantile=0.5", file=sys.stderr)
        chan = soupx.autoEstCont(chan, verbose=False, tfidfMin=0.5, soupQuantile=0.5)
    rho = np.full(cells.shape[0], chan.contamination_fraction)
    np.save(f"{workdir}/{method}_rho.npy", rho)
    json.dump({"seconds": time.perf_counter() - t}, open(f"{workdir}/{method}_estimate.json", "w"))
    out = sp.csr_matrix(soupx.adjustCounts(chan).T)
elif method == "decontx":
    import anndata as ad, decontx
    a = ad.AnnData(cells.astype(np.float64))
    a.obs["cl"] = clusters.astype(str)
    decontx.decontx(a, cluster_key="cl", verbose=False)
    out = sp.csr_matrix(a.layers["decontX_counts"])
    rho = a.obs["decontX_contamination"].to_numpy()
else:
    raise SystemExit(method)
seconds = time.perf_counter() - t
sp.save_npz(f"{workdir}/{method}_out.npz", out)
np.save(f"{workdir}/{method}_rho.npy", np.asarray(rho, dtype=float))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
json.dump({"seconds": seconds, "peak_mb": int(hwm) / 1024}, open(f"{workdir}/{method}.json", "w"))
"""


def metrics(observed, free, decontaminated, est_cell, markers, types) -> dict:
    observed = observed.toarray().astype(float)
    free = free.toarray().astype(float)
    ambient = observed - free
    removed = np.maximum(observed - decontaminated.toarray(), 0)
    umis = observed.sum(axis=1)
    true_cell = ambient.sum(axis=1) / umis
    true_sample = ambient.sum() / observed.sum()
    est_sample = float(np.nansum(est_cell * umis) / umis.sum())
    leak = []
    for t, genes in markers.items():
        others = types != t
        leak.append((decontaminated[others][:, genes].sum(axis=1)).mean())
    return {
        "true": true_sample,
        "err": abs(est_sample - true_sample),
        "cell_mae": float(np.nanmean(np.abs(est_cell - true_cell))),
        "amb_removed": np.minimum(removed, ambient).sum() / ambient.sum(),
        "cell_removed": np.maximum(removed - ambient, 0).sum() / free.sum(),
        "leakage": float(np.mean(leak)),
        # the counts' error against the truth, over what leaving them would leave (1.0)
        "l1": np.abs(decontaminated.toarray() - free).sum() / ambient.sum(),
        "rmse": np.sqrt(((decontaminated.toarray() - free) ** 2).sum() / (ambient**2).sum()),
    }


def cellbender_run(binary: Path, raw, is_cell, work: str, limit_s: float, level: float) -> None:
    """CellBender remove-background on the CPU, stopped after `limit_s` seconds (10x
    kbagg's time); prints whether it finished."""
    import anndata as ad

    adata = ad.AnnData(raw.tocsr().astype(np.float32))
    adata.obs_names = [f"bc{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
    adata.var["gene_ids"] = adata.var_names
    adata.var["feature_types"] = "Gene Expression"
    adata.write_h5ad(f"{work}/raw.h5ad")
    command = [
        str(binary),
        "remove-background",
        "--input",
        f"{work}/raw.h5ad",
        "--output",
        f"{work}/cellbender.h5",
        "--expected-cells",
        str(int(is_cell.sum())),
        "--total-droplets-included",
        str(min(raw.shape[0] // 2, int(is_cell.sum()) * 3)),  # later barcodes are its empties
        "--low-count-threshold",
        "1",  # simulated empty droplets hold 1-10 UMIs
        "--cpu-threads",
        "2",
    ]
    start = time.perf_counter()
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=limit_s, cwd=work)
        seconds = time.perf_counter() - start
        print(f"cellbender at {level:.2f}: exit {run.returncode} after {seconds:.0f} s")
    except subprocess.TimeoutExpired:
        print(
            f"cellbender at {level:.2f}: not finished within 10x kbagg's time ({limit_s:.0f} s), stopped"
        )


def print_table(rows: dict) -> None:
    print(
        "| level | method | true | abs err | cell MAE | ambient removed | cell UMIs removed | "
        "count L1 | count RMSE | leakage | s | peak MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (level, name), ms in rows.items():
        med = {k: float(np.median([m[k] for m in ms])) for k in ms[0]}
        print(
            f"| {level:.2f} | {name} | {med['true']:.3f} | {med['err']:.3f} | {med['cell_mae']:.3f} | "
            f"{med['amb_removed']:.3f} | {med['cell_removed']:.3f} | {med['l1']:.3f} | "
            f"{med['rmse']:.3f} | {med['leakage']:.2f} | "
            f"{med['seconds']:.2f} | {med['peak_mb']:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--empty", type=int, default=6000)
    parser.add_argument("--levels", default="0.05,0.1,0.2")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first..first+seeds-1 (held-out: 10)"
    )
    parser.add_argument("--peers", default="soupx,decontx", help="comma-separated; '' for none")
    parser.add_argument("--peer-timeout", type=float, default=300, help="seconds per peer run")
    parser.add_argument("--peer-python", default=str(peer_python("ambient")))
    args = parser.parse_args()

    from kbagg.cells.ambient import remove_ambient
    from kbagg.cells.ambient.soup import _clusters
    from kbagg.simulate.cells import simulate_droplets
    from kbagg.simulate.spec import HardCells

    peers = [p for p in args.peers.split(",") if p]
    cellbender = Path(args.peer_python).parent / "cellbender"
    if not Path(args.peer_python).exists():
        print(f"soupx, decontx: unavailable ({args.peer_python} not found)")
        peers = []
    rows = {}
    for level in map(float, args.levels.split(",")):
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            hard = HardCells(
                n_small_cells=0,
                doublet_fraction=0.0,
                cell_umis_median=2000.0,
                ambient_fraction=level,
            )
            d = simulate_droplets(
                np.random.default_rng(seed), args.genes, args.cells, args.empty, hard
            )
            is_cell = d.obs["is_cell"].to_numpy()
            types = d.obs["cell_type"].to_numpy()[is_cell]
            profiles = d.profiles
            markers = {}
            for t, p in profiles.items():
                rest = np.max([q for u, q in profiles.items() if u != t], axis=0)
                markers[t] = np.flatnonzero(p > 10 * rest)
            obs_cells, free = d.counts[is_cell], d.ambient_free[is_cell]
            marker_sets = (markers, types)
            umis = np.asarray(obs_cells.sum(axis=1)).ravel().astype(float)

            def record(
                name, decont, est, seconds, peak, level=level, truth=(obs_cells, free, marker_sets)
            ):
                m = metrics(truth[0], truth[1], sp.csr_matrix(decont), est, *truth[2])
                m.update(seconds=seconds, peak_mb=peak)
                rows.setdefault((level, name), []).append(m)

            record("(before)", obs_cells, np.zeros(len(umis)), 0.0, float("nan"))
            record(
                "(truth)", free, 1 - np.asarray(free.sum(axis=1)).ravel() / umis, 0.0, float("nan")
            )
            t = time.perf_counter()
            r = remove_ambient("bench", d.counts, is_cell)
            seconds = time.perf_counter() - t
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            record("kbagg soup", r.decontaminated, r.ambient_fraction, seconds, peak)
            soup = r.profile
            base = obs_cells.multiply(0).toarray() + np.minimum(
                obs_cells.toarray(), 0.1 * umis[:, None] * soup
            )
            record(
                "baseline 10%",
                obs_cells.toarray() - base,
                np.full(len(umis), 0.1),
                0.0,
                float("nan"),
            )
            clusters = _clusters(obs_cells.astype(float).tocsr(), r.params["n_clusters"], 0)
            with tempfile.TemporaryDirectory(dir="/tmp") as work:
                sp.save_npz(f"{work}/raw.npz", d.counts.tocsr())
                np.savez(f"{work}/cells.npz", is_cell=is_cell, clusters=clusters)
                for peer in peers:
                    try:
                        run = subprocess.run(
                            [args.peer_python, "-c", PEER, peer, work],
                            capture_output=True,
                            text=True,
                            timeout=args.peer_timeout,
                        )
                    except subprocess.TimeoutExpired:
                        print(
                            f"{peer} at {level:.2f} seed {seed}: not finished in {args.peer_timeout} s"
                        )
                        if Path(f"{work}/{peer}_rho.npy").exists():  # its estimate, no removal
                            rho = np.load(f"{work}/{peer}_rho.npy")
                            est = json.loads(Path(f"{work}/{peer}_estimate.json").read_text())[
                                "seconds"
                            ]
                            record(f"{peer} (estimate only)", obs_cells, rho, est, float("nan"))
                        continue
                    if run.stderr.strip():
                        print(f"{peer}: {run.stderr.strip().splitlines()[-1]}", file=sys.stderr)
                    if run.returncode:
                        print(f"{peer} failed: {run.stderr.strip().splitlines()[-1:]}")
                        continue
                    info = json.loads(Path(f"{work}/{peer}.json").read_text())
                    out = sp.load_npz(f"{work}/{peer}_out.npz")
                    rho = np.load(f"{work}/{peer}_rho.npy")
                    record(peer, out, rho, info["seconds"], info["peak_mb"])
                if seed == args.first_seed and cellbender.exists():
                    cellbender_run(cellbender, d.counts, is_cell, work, 10 * seconds, level)
            print(f"level {level} seed {seed} done", file=sys.stderr)
        print_table({k: v for k, v in rows.items() if k[0] == level})
        sys.stdout.flush()


if __name__ == "__main__":
    main()

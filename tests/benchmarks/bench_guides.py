#!/usr/bin/env python
"""Benchmark: per-cell CRISPR guide calls vs truth: kbagg vs crispat's methods vs fixed rules.

    python tests/benchmarks/bench_guides.py                      # 3 seeds x 2,000 cells
    python tests/benchmarks/bench_guides.py --seeds 5 --cells 5000 --regimes high_ambient
    python tests/benchmarks/bench_guides.py --crispat-python /path/to/venv/bin/python

For each regime of `kbagg.simulate.guides.GUIDE_REGIMES` and each seed, the simulator draws
guide UMI counts with known guides per cell; every method sees the same counts, written
once to an h5ad (``obs['batch']`` = 1, as crispat wants). Each method runs in a process of
its own (kbagg in this interpreter's environment, crispat in its own venv: the peer itself,
run for real, never re-implemented), methods interleaved per seed. Printed per regime
(median over seeds): precision and recall of the (cell, guide) calls, the fraction of cells
whose called set of guides is exactly the true set, the wall time of the assignment call
and the process's peak RSS.

Methods:
- kbagg: `kbagg.cells.guides.call_guides` (per-guide NB mixture, min 3 UMIs);
- fixed >= 3 UMIs: Cell Ranger's min_crispr_umi alone (in-process, no peer needed);
- crispat ``ga_gauss`` EM (Gaussian mixture on log10 counts, "similar to Cell Ranger",
  sklearn EM), with UMI_threshold 3 as Cell Ranger's minimum;
- crispat ``ga_poisson_gauss`` (Poisson-Gaussian mixture of Replogle et al. 2022, pyro VI,
  500 steps per guide);
- crispat ``ga_max`` (the most abundant guide of each cell: one guide per cell);
- pertpy's ``GuideAssignment.assign_mixture_model`` (Poisson-Gaussian mixture, its own
  venv: --pertpy-python; 1.4.0 here).
A peer that cannot be imported or fails prints as unavailable with the reason.
Install the peer: ``python3.12 -m venv V && V/bin/pip install crispat`` (0.9.11 here).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from peers import peer_python  # tests/benchmarks/peers.py: install_peers.sh's venvs

from kbagg.simulate.guides import GUIDE_REGIMES, scaled, score_guide_calls, simulate_guides

DEFAULT_CRISPAT_PYTHON = os.environ.get("KBAGG_CRISPAT_PYTHON", str(peer_python("crispat")))
DEFAULT_PERTPY_PYTHON = os.environ.get("KBAGG_PERTPY_PYTHON", str(peer_python("pertpy")))

# Runs in the method's own interpreter: argv = method, h5ad, output dir. Prints one JSON
# line: seconds of the assignment call, peak RSS (MB) of the process, the calls' CSV path.
RUNNER = r"""
import contextlib, io, json, resource, sys, time
method, h5ad, out = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/") + "/"
buffer = io.StringIO()
with contextlib.redirect_stdout(buffer):
    if method == "kbagg":
        import anndata as ad, warnings
        from kbagg.cells.guides import call_guides
        guides = ad.read_h5ad(h5ad)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calls, _ = call_guides(guides, "bench")
        seconds = time.perf_counter() - start
        rows = [(c, g) for c, call in calls["guide_call"].items() for g in call.split("|") if g]
        import pandas as pd
        pd.DataFrame(rows, columns=["cell", "gRNA"]).to_csv(out + "assignments.csv", index=False)
        csv = out + "assignments.csv"
    elif method == "pertpy_mixture":
        import anndata as ad, pertpy as pt, pandas as pd
        guides = ad.read_h5ad(h5ad)
        start = time.perf_counter()
        pt.pp.GuideAssignment().assign_mixture_model(guides)
        seconds = time.perf_counter() - start
        calls = guides.obs["assigned_guide"].astype(str)
        rows = [
            (c, g) for c, call in calls.items() if call not in ("negative", "nan")
            for g in call.split("+") if g
        ]
        pd.DataFrame(rows, columns=["cell", "gRNA"]).to_csv(out + "assignments.csv", index=False)
        csv = out + "assignments.csv"
    else:
        import crispat
        start = time.perf_counter()
        if method == "crispat_gauss_em":
            crispat.ga_gauss(h5ad, out, UMI_threshold=3, inference="em", make_plots=False)
            csv = out + "assignments.csv"
        elif method == "crispat_poisson_gauss":
            crispat.ga_poisson_gauss(h5ad, out, make_plots=False)
            csv = out + "assignments.csv"
        elif method == "crispat_max":
            crispat.ga_max(h5ad, out)
            csv = out + "assignments.csv"
        seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "csv": csv}))
"""

PEERS = {
    "crispat ga_gauss EM, min 3 UMIs (Cell Ranger-like)": "crispat_gauss_em",
    "crispat ga_poisson_gauss (Replogle 2022)": "crispat_poisson_gauss",
    "crispat ga_max (top guide per cell)": "crispat_max",
}
PERTPY = "pertpy assign_mixture_model (Poisson-Gauss)"


def calls_from_csv(path: str, cells: pd.Index, guides: list[str]) -> pd.Series:
    """A long cell,gRNA table as '|'-joined calls per cell in var order."""
    table = pd.read_csv(path) if Path(path).stat().st_size else pd.DataFrame()
    order = {g: i for i, g in enumerate(guides)}
    per_cell: dict[str, list[str]] = {}
    if len(table):
        for cell, guide in zip(table["cell"].astype(str), table["gRNA"].astype(str), strict=True):
            per_cell.setdefault(cell, []).append(guide)
    return pd.Series(
        ["|".join(sorted(set(per_cell.get(c, [])), key=order.get)) for c in cells], index=cells
    )


def run_method(python: str, method: str, h5ad: Path, workdir: Path, env: dict) -> dict:
    out = Path(tempfile.mkdtemp(dir=workdir, prefix=method + "_"))
    done = subprocess.run(
        [python, "-c", RUNNER, method, str(h5ad), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {last[:160]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def fixed_calls(guides, min_umis: int = 3) -> pd.Series:
    counts = guides.X.toarray()
    names = np.array(guides.var_names, dtype=object)
    return pd.Series(["|".join(names[row >= min_umis]) for row in counts], index=guides.obs_names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--regimes", default=",".join(GUIDE_REGIMES))
    parser.add_argument("--crispat-python", default=DEFAULT_CRISPAT_PYTHON)
    parser.add_argument("--pertpy-python", default=DEFAULT_PERTPY_PYTHON)
    parser.add_argument("--skip", default="", help="comma-separated peer keys to leave out")
    args = parser.parse_args()
    src = str(Path(__file__).resolve().parents[2] / "src")
    kbagg_env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    peer_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    unavailable: dict[str, str] = {}
    if not Path(args.crispat_python).exists():
        reason = f"no interpreter at {args.crispat_python} (pip install crispat in a venv)"
        unavailable = dict.fromkeys(PEERS, reason)
    else:
        probe = subprocess.run(
            [args.crispat_python, "-c", "import crispat, importlib.metadata as m; "
             "print(m.version('crispat'))"],
            capture_output=True, text=True, env=peer_env,
        )  # fmt: skip
        if probe.returncode:
            unavailable = dict.fromkeys(PEERS, "import crispat failed: " + probe.stderr[-200:])
        else:
            print(f"crispat {probe.stdout.strip()} at {args.crispat_python}")
    if not Path(args.pertpy_python).exists():
        unavailable[PERTPY] = f"no interpreter at {args.pertpy_python} (pip install pertpy)"
    for name, key in [*PEERS.items(), (PERTPY, "pertpy_mixture")]:
        if key in args.skip.split(","):
            unavailable[name] = "left out (--skip)"
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench_guides_") as tmp:
        workdir = Path(tmp)
        for regime in args.regimes.split(","):
            results: dict[str, list[dict]] = {}
            errors: dict[str, str] = dict(unavailable)
            for seed in range(args.seeds):
                guides = simulate_guides(scaled(regime, n_cells=args.cells), seed=seed)
                truth = guides.obs["true_guides"]
                h5ad = workdir / f"{regime}_{seed}.h5ad"
                guides.obs["batch"] = 1
                guides.write_h5ad(h5ad)
                runs = {"kbagg (NB mixture)": (sys.executable, "kbagg", kbagg_env)}
                runs |= {
                    n: (args.crispat_python, k, peer_env)
                    for n, k in PEERS.items()
                    if n not in errors
                }
                if PERTPY not in errors:
                    runs[PERTPY] = (args.pertpy_python, "pertpy_mixture", peer_env)
                for name, (python, key, env) in runs.items():
                    result = run_method(python, key, h5ad, workdir, env)
                    if "error" in result:
                        errors[name] = result["error"]
                        continue
                    called = calls_from_csv(result["csv"], guides.obs_names, list(guides.var_names))
                    row = score_guide_calls(truth, called) | {
                        "seconds": result["seconds"],
                        "peak_rss_mb": result["peak_rss_mb"],
                    }
                    results.setdefault(name, []).append(row)
                fixed = score_guide_calls(truth, fixed_calls(guides)) | {
                    "seconds": np.nan,
                    "peak_rss_mb": np.nan,
                }
                results.setdefault("fixed >= 3 UMIs", []).append(fixed)
            spec = scaled(regime, n_cells=args.cells)
            print(
                f"\n### {regime}: {args.seeds} seeds x {args.cells} cells x {spec.n_guides} "
                f"guides, MOI fractions {spec.moi_fractions}, ambient {spec.ambient_umis} UMIs/cell"
            )
            print("| method | precision | recall | exact set | seconds | peak RSS MB |")
            print("|---|---|---|---|---|---|")
            for name, rows in results.items():
                if name in errors:
                    continue
                med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
                worst = min(r["exact"] for r in rows)
                timing = (
                    "-"
                    if np.isnan(med["seconds"])
                    else f"{med['seconds']:.2f} | {med['peak_rss_mb']:.0f}"
                )
                if timing == "-":
                    timing = "- | -"
                print(
                    f"| {name} | {med['precision']:.3f} | {med['recall']:.3f} | "
                    f"{med['exact']:.3f} (worst {worst:.3f}) | {timing} |"
                )
            for name, reason in errors.items():
                print(f"| {name} | unavailable: {reason} | | | | |")
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()

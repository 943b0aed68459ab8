#!/usr/bin/env python
"""Benchmark: the time `kbagg.cells.demux.demultiplex` takes, this checkout against another.

    python tests/benchmarks/bench_demux_speed.py --baseline-src /path/to/old/checkout/src
    python tests/benchmarks/bench_demux_speed.py --baseline-src OLD/src --real DIR \\
        --datasets bal_batch1_c1,stoeckius_pbmc --repeats 3

Each case is demultiplexed in a fresh process per checkout (``PYTHONPATH`` set to its
``src``), the two checkouts interleaved in each of ``--repeats`` rounds. Cases: simulated
regimes of `kbagg.simulate.hashtags` (with the RNA library size) and, with ``--real``,
captures prepared by ``bench_demux_real.py --prepare`` (hashtags only). The table gives
the median wall time of each checkout, the median of the per-round ratios (this checkout
over the baseline, the anchor), peak RSS of each (wait4), and whether the two checkouts'
calls are identical; the benchmark stops when they are not.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN = r"""
import pickle, sys, time, warnings
import anndata as ad, numpy as np, pandas as pd
from kbagg.cells.demux import demultiplex
from kbagg.simulate.hashtags import simulate_hashtags
warnings.simplefilter("ignore")
kind, name, seed, n_cells, out = sys.argv[1:6]
if kind == "regime":
    hashtags, rna = simulate_hashtags(name, int(seed), int(n_cells))
else:
    table = pd.read_csv(name, index_col=0)
    hashtags = ad.AnnData(table.to_numpy(dtype=float))
    hashtags.obs_names, hashtags.var_names = table.index.astype(str), table.columns.astype(str)
    rna = None
start = time.perf_counter()
calls = demultiplex(hashtags, rna_umis=rna)
seconds = time.perf_counter() - start
pickle.dump((seconds, calls["hashtag"].to_numpy()), open(out, "wb"))
"""


def run_case(src: Path, case: tuple, out: Path) -> tuple[float, object, float]:
    """(seconds of demultiplex, its calls, peak RSS MB of the process)."""
    env = dict(os.environ, PYTHONPATH=str(src))
    process = subprocess.Popen([sys.executable, "-c", RUN, *map(str, case), str(out)], env=env)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"demultiplex failed for {case} with {src}")
    seconds, calls = pickle.loads(out.read_bytes())
    return seconds, calls, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--baseline-src", type=Path, required=True, help="the anchor's src folder")
    ap.add_argument("--regimes", default="moderate,noisy,hashtags_12,lmo_3tags_proportions")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--cells", type=int, default=4000)
    ap.add_argument("--real", type=Path, default=None, help="bench_demux_real.py's data folder")
    ap.add_argument("--datasets", default="bal_batch1_c1")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    cases = [("regime", r, args.seed, args.cells) for r in args.regimes.split(",") if r]
    if args.real is not None:
        cases += [("real", args.real / d / "hto.csv", 0, 0) for d in args.datasets.split(",")]
    sources = {"baseline": args.baseline_src.resolve(), "this checkout": REPO / "src"}
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    print(
        "\n| case | baseline s | this checkout s | ratio | peak RSS MB (baseline, this) | calls |"
    )
    print("|---|---:|---:|---:|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench_demux_speed_") as tmp:
        for case in cases:
            times = {k: [] for k in sources}
            rss = dict.fromkeys(sources, 0.0)
            calls = {}
            for round_ in range(args.repeats):
                order = list(sources) if round_ % 2 == 0 else list(sources)[::-1]
                for key in order:
                    seconds, called, peak = run_case(sources[key], case, Path(tmp) / "out.pkl")
                    times[key].append(seconds)
                    rss[key] = max(rss[key], peak)
                    calls[key] = called
            same = bool((calls["baseline"] == calls["this checkout"]).all())
            ratios = [a / b for a, b in zip(times["this checkout"], times["baseline"], strict=True)]
            label = case[1] if case[0] == "regime" else Path(case[1]).parent.name
            print(
                f"| {label} | {statistics.median(times['baseline']):.1f} | "
                f"{statistics.median(times['this checkout']):.1f} | "
                f"{statistics.median(ratios):.2f}x | {rss['baseline']:.0f}, "
                f"{rss['this checkout']:.0f} | {'identical' if same else 'DIFFER'} |",
                flush=True,
            )
            if not same:
                raise SystemExit(f"{label}: the two checkouts' calls differ")
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()

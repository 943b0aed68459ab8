#!/usr/bin/env python
"""Benchmark: building the SOMA store with parallel writers (kbagg.soma.parallel) against the
one-job append (update_store) of the same samples.

    python tests/benchmarks/bench_soma_parallel.py                   # 16 x 3,000 cells
    python tests/benchmarks/bench_soma_parallel.py --samples 4 --cells 200 --repeats 1
    python tests/benchmarks/bench_soma_parallel.py --baseline-src /path/to/old/checkout/src
    python tests/benchmarks/bench_soma_parallel.py --layouts gene_query two_arrays

Modes, each a fresh store built by child processes as the workflow's jobs would be:
``one-job`` (update_store of all samples, one process); ``J writers`` (a reserving process,
then J processes at once each writing its share of the samples with write_sample, then a
finishing process); with ``--baseline-src``, also ``baseline one-job``, the one-job append
of another checkout of kbagg (its ``src``), the anchor of the ratios. The modes are
interleaved, ``--repeats`` rounds; the table gives median wall time, cells per second, the
ratio to the anchor (the baseline, else the one-job build) of the same round (median) and
the CPU seconds of all its processes (user + system, from wait4; they show whether the
writers were short of cores), the largest peak RSS of any one process (wait4) and the store's
size on disk (all of it, and its X arrays). With ``--layouts``, every mode of kbagg's
checkout is run for each store layout (``aggregate.soma.layout``; rows of a layout other
than the first are marked with it), all interleaved. Every build must hold the same number
and sum of counts (in a two_arrays store, the gene-major copy as well), else the benchmark
stops.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from concat_helpers import write_sparse_h5ad  # noqa: E402

QUIET = "log=lambda line: None"
ONE_JOB = f"""
import json, sys
from kbagg.soma.store import update_store
store, manifest, samples = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
layout = {{}} if len(sys.argv) < 5 else {{"layout": sys.argv[4]}}  # a baseline may lack it
update_store(store, samples, run_id="bench", manifest_path=manifest, project="bench",
             {QUIET}, **layout)
"""
RESERVE = f"""
import json, sys
from kbagg.soma.store import update_store
store, manifest, samples, layout = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
update_store(store, samples, run_id="bench", manifest_path=manifest, project="bench",
             reserve=True, max_fragments=None, layout=layout, {QUIET})
"""
WRITE = f"""
import json, sys
from kbagg.soma.parallel import write_sample
store, names = sys.argv[1], json.loads(sys.argv[2])
print(json.dumps({{n: write_sample(store, n, {QUIET}) for n in names}}))
"""
FINISH = f"""
import json, sys
from kbagg.soma.parallel import finish_store
store, markers = sys.argv[1], json.loads(sys.argv[2])
finish_store(store, markers, {QUIET})
"""
TOTALS = """
import json, sys
import numpy as np, tiledbsoma as soma
from kbagg.soma import read_context
with soma.Experiment.open(sys.argv[1], context=read_context()) as exp:
    totals = {}
    for name in ("counts", "counts_by_gene"):
        if name not in exp.ms["RNA"].X:
            continue
        n, s = 0, 0.0
        for t in exp.ms["RNA"].X[name].read().tables():
            n += t.num_rows
            s += float(np.asarray(t.column("soma_data")).sum(dtype=np.float64))
        totals[name] = [n, round(s, 3)]
if len({json.dumps(t) for t in totals.values()}) != 1:
    raise SystemExit(f"counts and its gene-major copy differ: {totals}")
print(json.dumps(totals["counts"]))
"""


def start(code: str, *args, src: Path = REPO / "src") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-c", code, *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait(procs: list[subprocess.Popen]) -> tuple[list[str], float, float]:
    """Their stdouts, the largest peak RSS (MB) among them and their CPU seconds (user +
    system, summed)."""
    outs, peak, cpu = [], 0.0, 0.0
    for p in procs:
        out, err = p.stdout.read(), p.stderr.read()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise RuntimeError(f"child failed ({p.returncode}): {err[-3000:]}")
        outs.append(out)
        peak = max(peak, usage.ru_maxrss / 1024)
        cpu += usage.ru_utime + usage.ru_stime
    return outs, peak, cpu


def build(
    mode: int,
    store: Path,
    samples: dict,
    workdir: Path,
    src: Path = REPO / "src",
    layout: str | None = None,
) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MB, CPU seconds of all its processes) of one build; mode 0 is
    the one-job append, J > 0 J writer jobs; ``src`` the kbagg it runs (the one-job append
    only); ``layout`` the store layout (None: update_store's default, for a baseline that may
    not know the option)."""
    manifest, pairs = workdir / "manifest.json", json.dumps({k: str(v) for k, v in samples.items()})
    t0 = time.perf_counter()
    if mode == 0:
        extra = [] if layout is None else [layout]
        _, peak, cpu = wait([start(ONE_JOB, store, manifest, pairs, *extra, src=src)])
    else:
        _, peak, cpu = wait([start(RESERVE, store, manifest, pairs, layout or "gene_query")])
        names = list(samples)
        outs, write_peak, write_cpu = wait(
            [start(WRITE, store, json.dumps(names[j::mode])) for j in range(mode)]
        )
        markers = {k: v for out in outs for k, v in json.loads(out).items()}
        _, finish_peak, finish_cpu = wait([start(FINISH, store, json.dumps(markers))])
        peak = max(peak, write_peak, finish_peak)
        cpu += write_cpu + finish_cpu
    return time.perf_counter() - t0, peak, cpu


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--cells", type=int, default=3000)
    ap.add_argument("--genes", type=int, default=20000)
    ap.add_argument("--nnz-per-cell", type=int, default=800)
    ap.add_argument("--writers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="src folder of another kbagg checkout whose one-job append is the anchor",
    )
    ap.add_argument(
        "--layouts",
        nargs="+",
        default=["gene_query"],
        choices=["gene_query", "two_arrays"],
        help="store layouts (aggregate.soma.layout) to build each mode in",
    )
    args = ap.parse_args(argv)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench_soma_parallel-", dir=args.workdir))
    try:
        genes = [f"ENSG{i:011d}" for i in range(args.genes)]
        (workdir / "inputs").mkdir()
        samples = {}
        for i in range(args.samples):
            samples[f"s{i:03d}"] = workdir / "inputs" / f"s{i:03d}.h5ad"
            write_sparse_h5ad(samples[f"s{i:03d}"], args.cells, genes, args.nnz_per_cell, seed=i)
        # "base": the baseline checkout's one-job append; 0: this one's; J: J writer jobs;
        # each of this checkout's modes in every layout
        modes = [*([("base", None)] if args.baseline_src else [])]
        modes += [(m, layout) for layout in args.layouts for m in (0, *args.writers)]
        anchor = modes[0]
        times, peaks, cpus, ratios, totals, sizes = ({m: [] for m in modes} for _ in range(6))
        for _ in range(args.repeats):
            for m in modes:
                mode, layout = m
                store = workdir / f"store-{mode}-{layout}"
                shutil.rmtree(store, ignore_errors=True)
                if mode == "base":
                    seconds, peak, cpu = build(0, store, samples, workdir, args.baseline_src)
                else:
                    seconds, peak, cpu = build(mode, store, samples, workdir, layout=layout)
                times[m].append(seconds)
                peaks[m].append(peak)
                cpus[m].append(cpu)
                out, _, _ = wait([start(TOTALS, store)])
                totals[m] = json.loads(out[0])
                sizes[m] = [disk_mb(store), disk_mb(store / "ms" / "RNA" / "X")]
                shutil.rmtree(store)
            for m in modes:
                ratios[m].append(times[anchor][-1] / times[m][-1])
        if len({json.dumps(t) for t in totals.values()}) != 1:
            raise RuntimeError(f"the builds disagree (non-zeros, sum): {totals}")
        n_cells = args.samples * args.cells
        print(
            f"{args.samples} samples x {args.cells:,} cells ({n_cells:,}), {args.genes:,} genes, "
            f"{args.nnz_per_cell} non-zeros per cell; medians of {args.repeats}; "
            f"{os.cpu_count()} CPUs"
        )
        if args.baseline_src:
            print(f"baseline: {args.baseline_src}")
        versus = "baseline one job" if args.baseline_src else "one job"
        print(f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
        print(
            f"| build | wall s | CPU s | cells/s | speed vs {versus} | peak RSS MB | store MB "
            "| X MB |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for m in modes:
            mode, layout = m
            wall = statistics.median(times[m])
            if mode == "base":
                name = "baseline one-job append"
            elif mode == 0:
                name = "one-job append"
            else:
                name = f"{mode} writer job{'s' if mode > 1 else ''}"
            if mode != "base" and layout != args.layouts[0]:
                name += f", layout {layout}"
            print(
                f"| {name} | {wall:.1f} | {statistics.median(cpus[m]):.1f} | "
                f"{n_cells / wall:,.0f} | "
                f"{statistics.median(ratios[m]):.2f}x | {statistics.median(peaks[m]):.0f} | "
                f"{sizes[m][0]:,.0f} | {sizes[m][1]:,.0f} |"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

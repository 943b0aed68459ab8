#!/usr/bin/env python
"""Benchmark: reading an aggregate as backed CSR h5ad, backed CSC h5ad and the SOMA store,
and updating the store by one sample vs rebuilding it vs concatenating the h5ads again.

    python tests/benchmarks/bench_access.py                       # small, a few minutes
    python tests/benchmarks/bench_access.py --cells 200000 --genes 30000 --samples 64 \\
        --nnz-per-cell 1000 --workdir /tmp                        # docs/benchmarks.md

Per-sample h5ads (float32 CSR, the same genes, realistic sparsity) are concatenated with
kbagg's concat_on_disk (CSR), converted to CSC with anndata, and loaded into a SOMA store
with update_store (one append per sample, no consolidation), then consolidated and vacuumed
with consolidate_store (timed on its own, as after the append of one more sample); each
array's fragments are printed before and after, and the benchmark stops if the
consolidation fails or leaves an array with more than one fragment. Each query runs in a
fresh child (its own peak RSS via wait4), the three formats interleaved, ``--repeats``
times (medians); the files are in the page cache. The times are the query's own (after
imports and opening); every format must give the same shape, stored-value count and value
sum, else the benchmark stops. Reported: each step's
wall time and peak RSS, every format's disk size, and per query the SOMA time over the
better of the two h5ad layouts.

Queries: (a) one gene over all cells, (b) 100 genes, (c) all cells of one sample, (d) 1,000
random cells, each as an in-memory AnnData (``backed[...].to_memory()`` /
``ExperimentAxisQuery.to_anndata``; genes chosen by ``gene_name``, the sample by a value
filter on ``sample``); (e) obs only.
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

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from concat_helpers import child_peak_rss_mb, write_sparse_h5ad  # noqa: E402

sys.path.insert(0, str(REPO / "src"))
from kbagg.schema import schema_default  # noqa: E402
from kbagg.soma.store import fragment_counts  # noqa: E402

PREAMBLE = """
import json, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")
def report(t0, X=None, n_obs=None):
    out = {"seconds": time.perf_counter() - t0}
    if X is not None:
        out.update(shape=list(X.shape), nnz=int(X.nnz), sum=float(X.sum(dtype=np.float64)))
    else:
        out.update(shape=[n_obs])
    print(json.dumps(out))
query, arg = sys.argv[2], json.loads(sys.argv[3])
"""

H5AD_QUERY = (
    PREAMBLE
    + """
import anndata as ad, h5py
from anndata.io import read_elem
path = sys.argv[1]
if query == "obs":
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        obs = read_elem(f["obs"])
    report(t0, n_obs=len(obs))
else:
    t0 = time.perf_counter()
    a = ad.read_h5ad(path, backed="r")
    if query == "genes":
        subset = a[:, np.flatnonzero(a.var["gene_name"].isin(arg).to_numpy())]
    elif query == "sample":
        subset = a[(a.obs["sample"] == arg).to_numpy()]
    else:
        subset = a[np.asarray(arg)]
    report(t0, subset.to_memory().X)
"""
)

SOMA_QUERY = (
    PREAMBLE
    + """
import tiledbsoma as soma
from kbagg.soma import query_layer, read_context
t0 = time.perf_counter()
with soma.Experiment.open(sys.argv[1], context=read_context()) as exp:
    if query == "obs":
        obs = exp.obs.read().concat().to_pandas()
        report(t0, n_obs=len(obs))
    else:
        if query == "genes":
            names = ", ".join(repr(g) for g in arg)
            where = dict(var_query=soma.AxisQuery(value_filter=f"gene_name in [{names}]"))
        elif query == "sample":
            where = dict(obs_query=soma.AxisQuery(value_filter=f"sample == {arg!r}"))
        else:
            where = dict(obs_query=soma.AxisQuery(coords=(np.asarray(arg),)))
        with exp.axis_query("RNA", **where) as q:
            # the gene-major copy for gene queries in a store that keeps one (two_arrays)
            X_name = query_layer(exp, "counts", by="gene" if query == "genes" else "cell")
            report(t0, q.to_anndata(X_name=X_name).X)
"""
)

CONCAT = """
import sys
from kbagg.concat.engine import concat_on_disk
out, *pairs = sys.argv[1:]
concat_on_disk(dict(p.split("=", 1) for p in pairs), out, join="outer", progress=False)
"""

TO_CSC = """
import sys, warnings, anndata as ad
warnings.simplefilter("ignore")
a = ad.read_h5ad(sys.argv[1])
a.X = a.X.tocsc()
a.write_h5ad(sys.argv[2])
"""

# max_fragments=None: no consolidation inside the update; CONSOLIDATE times it on its own
UPDATE = """
import json, sys
from kbagg.soma.store import update_store
config, layout, store, manifest, *pairs = sys.argv[1:]
update_store(store, dict(p.split("=", 1) for p in pairs), run_id="bench",
             manifest_path=manifest, project="bench", log=lambda line: None,
             platform_config=json.loads(config), max_fragments=None, layout=layout)
"""

CONSOLIDATE = """
import json, sys
from kbagg.soma.store import consolidate_store
print(json.dumps(consolidate_store(sys.argv[1], 1, log=lambda line: None)))
"""


def run_child(code: str, *args, env=None) -> tuple[float, float, str]:
    """(wall seconds, the child's own peak RSS in MB, its stdout)."""
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        status, rss_mb, err = child_peak_rss_mb([sys.executable, "-c", code, *map(str, args)], out)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    if status != 0:
        raise RuntimeError(f"child failed ({status}): {err[-3000:]}")
    return wall, rss_mb, text


def time_query(formats: dict, query: str, arg, repeats: int, label: str) -> tuple[dict, dict]:
    """Run `query` on every format, interleaved, `repeats` rounds, each in a fresh process;
    the median seconds and peak RSS (MB) per format. Raises if the formats' answers differ."""
    times = {f: [] for f in formats}
    rss = {f: [] for f in formats}
    results = {}
    for _ in range(repeats):
        for fmt, (code, path) in formats.items():
            _, mb, out = run_child(code, path, query, json.dumps(arg))
            got = json.loads(out.strip().splitlines()[-1])
            times[fmt].append(got.pop("seconds"))
            rss[fmt].append(mb)
            results.setdefault(fmt, got)
    if len({json.dumps(r, sort_keys=True) for r in results.values()}) != 1:
        raise RuntimeError(f"{label}: the formats disagree: {results}")
    return (
        {f: statistics.median(v) for f, v in times.items()},
        {f: statistics.median(v) for f, v in rss.items()},
    )


def generate(workdir: Path, n_samples: int, cells: int, genes: int, nnz: int) -> dict:
    names = [f"ENSG{i:011d}" for i in range(genes)]
    (workdir / "inputs").mkdir()
    paths = {}
    for i in range(n_samples):
        paths[f"s{i:03d}"] = workdir / "inputs" / f"s{i:03d}.h5ad"
        write_sparse_h5ad(paths[f"s{i:03d}"], cells, names, nnz, seed=i)
    return paths


def queries(n_obs: int, genes: list[str], n_samples: int, seed=0) -> dict[str, tuple]:
    rng = np.random.default_rng(seed)
    cells = np.sort(rng.choice(n_obs, min(1000, n_obs), replace=False)).tolist()
    hundred = rng.choice(genes, min(100, len(genes)), replace=False).tolist()
    return {
        "(a) one gene, all cells": ("genes", [genes[len(genes) // 3]]),
        "(b) 100 genes, all cells": ("genes", hundred),
        "(c) all cells of one sample": ("sample", f"s{n_samples // 2:03d}"),
        "(d) 1,000 random cells": ("cells", cells),
        "(e) obs only": ("obs", None),
    }


def consolidate(store: Path) -> tuple[float, float, str]:
    """consolidate_store(store, 1) in a child, as run_child, printing each array's fragments
    before and after. Stops the benchmark if it fails or leaves an array with more than one
    fragment: what follows would measure an unconsolidated store."""
    print(f"fragments before consolidate_store(1): {fragment_summary(fragment_counts(store))}")
    try:
        done, error = run_child(CONSOLIDATE, store), ""
    except RuntimeError as err:
        done, error = None, f"failed ({str(err).strip().splitlines()[-1]}); "
    after = fragment_counts(store)
    print(f"fragments after consolidate_store(1): {fragment_summary(after)}", flush=True)
    left = {name: n for name, n in after.items() if n > 1}
    if done is None or left:
        raise SystemExit(
            f"consolidate_store(1) {error}left arrays with more than one fragment: "
            f"{fragment_summary(left) or 'none'}; stopping, as the benchmark would measure "
            "an unconsolidated store"
        )
    return done


def disk_size(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def fragment_summary(counts: dict[str, int]) -> str:
    """'X/counts 128, obs 128, ...': the fragments of each array of the store."""
    return ", ".join(f"{name.removeprefix('ms/RNA/')} {n}" for name, n in sorted(counts.items()))


def warm(*paths: Path) -> None:
    """Read every file once, so that each format starts from the page cache."""
    for root in paths:
        for p in [root] if root.is_file() else root.rglob("*"):
            if p.is_file():
                with open(p, "rb") as fh:
                    while fh.read(1 << 24):
                        pass


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=20_000, help="cells in the aggregate")
    p.add_argument("--genes", type=int, default=5_000)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--nnz-per-cell", type=int, default=1_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument(
        "--platform-config",
        default="null",
        metavar="JSON",
        help="tiledbsoma platform_config for the store's arrays (default: kbagg's "
        "GENE_QUERY_LAYOUT; '{}': tiledbsoma's defaults)",
    )
    p.add_argument(
        "--layout",
        default=schema_default("aggregate", "soma", "layout"),
        choices=["gene_query", "two_arrays"],
        help="how the store keeps X (aggregate.soma.layout; default: the config's default); "
        "two_arrays' gene queries read its gene-major copy",
    )
    p.add_argument(
        "--queries", default="abcde", help="which queries to run, e.g. 'ab' (default: all)"
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="also time a real rebuild (a new store of samples + 1); by default the create "
        "of the store is the rebuild figure, as a rebuild does the same writes",
    )
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    os.environ.update(env)

    if args.workdir is not None:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench_access_", dir=args.workdir))
    try:
        per_sample = args.cells // args.samples
        t0 = time.perf_counter()
        # one more sample than the aggregate holds: the one appended later
        paths = generate(workdir, args.samples + 1, per_sample, args.genes, args.nnz_per_cell)
        extra = paths.popitem()
        pairs = [f"{k}={v}" for k, v in paths.items()]
        print(
            f"# {args.samples} samples x {per_sample:,} cells = {per_sample * args.samples:,} "
            f"cells x {args.genes:,} genes, {args.nnz_per_cell:,} nnz/cell, float32, "
            f"SOMA layout {args.layout} "
            f"(generated in {time.perf_counter() - t0:.0f} s); "
            f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
        )
        csr, csc, store = workdir / "agg_csr.h5ad", workdir / "agg_csc.h5ad", workdir / "store"
        print("| build step | wall s | peak RSS MB |\n|---|---:|---:|", flush=True)
        steps = {
            "concat_on_disk -> CSR h5ad": (CONCAT, csr, *pairs),
            "anndata CSR -> CSC h5ad": (TO_CSC, csr, csc),
            "update_store (create, unconsolidated)": (
                UPDATE,
                args.platform_config,
                args.layout,
                store,
                workdir / "m0.json",
                *pairs,
            ),
        }
        build = {}
        for step, child in steps.items():
            build[step] = run_child(*child)
            print(f"| {step} | {build[step][0]:.1f} | {build[step][1]:,.0f} |", flush=True)
        sizes = {"CSR h5ad": csr.stat().st_size, "CSC h5ad": csc.stat().st_size}
        sizes["SOMA, unconsolidated"] = disk_size(store)
        wall, rss, out = consolidate(store)
        print(f"| consolidate_store(1) | {wall:.1f} | {rss:,.0f} |")
        print(f"merged [before, after]: {json.loads(out.strip().splitlines()[-1])}")
        sizes["SOMA, consolidated"] = disk_size(store)
        print("\n" + ", ".join(f"{k} {v / 2**30:.2f} GB" for k, v in sizes.items()) + "\n")

        genes = [f"ENSG{i:011d}".lower() for i in range(args.genes)]
        formats = {"CSR": (H5AD_QUERY, csr), "CSC": (H5AD_QUERY, csc), "SOMA": (SOMA_QUERY, store)}
        warm(csr, csc, store)
        print(
            "| query | CSR s | CSC s | SOMA s | SOMA / better h5ad | CSR MB | CSC MB | SOMA MB |"
            "\n|---|---:|---:|---:|---:|---:|---:|---:|",
            flush=True,
        )
        for label, (query, arg) in queries(per_sample * args.samples, genes, args.samples).items():
            if label[1] not in args.queries:
                continue
            t, m = time_query(formats, query, arg, args.repeats, label)
            print(
                f"| {label} | {t['CSR']:.3f} | {t['CSC']:.3f} | {t['SOMA']:.3f} | "
                f"{t['SOMA'] / min(t['CSR'], t['CSC']):.2f}x | "
                f"{m['CSR']:,.0f} | {m['CSC']:,.0f} | {m['SOMA']:,.0f} |",
                flush=True,
            )

        every = [*pairs, f"{extra[0]}={extra[1]}"]
        n = args.samples + 1
        update = {
            f"append 1 sample to the {args.samples}-sample store": run_child(
                UPDATE, args.platform_config, args.layout, store, workdir / "m1.json", *every
            )
        }
        if args.rebuild:
            rebuild = run_child(
                UPDATE,
                args.platform_config,
                args.layout,
                workdir / "store2",
                workdir / "m2.json",
                *every,
            )
            update[f"rebuild: a new store of {n} samples"] = rebuild
        else:  # a rebuild writes every sample into a new store, as the create above did
            update[f"rebuild (the create of {args.samples} samples above)"] = build[
                "update_store (create, unconsolidated)"
            ]
        update["consolidate_store(1) after the append"] = consolidate(store)
        update[f"concat_on_disk of {n} h5ads"] = run_child(CONCAT, workdir / "agg2.h5ad", *every)
        first = next(iter(update.values()))[0]
        print("\n| update | wall s | peak RSS MB | append / this |\n|---|---:|---:|---:|")
        for step, (wall, mb, _) in update.items():
            print(f"| {step} | {wall:.1f} | {mb:,.0f} | {first / wall:.3f} |")
        print(f"\nSOMA of {n} samples: {disk_size(store) / 2**30:.2f} GB")
        print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir)


if __name__ == "__main__":
    main()

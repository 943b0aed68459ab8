#!/usr/bin/env python
"""Benchmark: SOMA queries on a store grown by appends (before and after consolidation), on a
store written in one step, and on other X layouts, each against backed CSR and CSC h5ads.

    python tests/benchmarks/bench_soma_layout.py                         # small, minutes
    python tests/benchmarks/bench_soma_layout.py --samples 32 --cells-per-sample 1500 \\
        --genes 20000 --nnz-per-cell 800 --workdir /tmp/somafrag          # docs/soma_benchmarks.md

Per-sample h5ads (float32 CSR, bench_access.py's generator) are concatenated with
concat_on_disk (CSR) and converted to CSC. Stores:

* ``append``: one `update_store` per sample (kbagg's layout, `GENE_QUERY_LAYOUT`), never
  consolidated: one fragment per sample and array;
* ``append+consolidated``: a copy of it after `consolidate_store` (timed);
* ``one step``: the CSR aggregate written by ``tiledbsoma.io.from_h5ad`` in one call, same
  layout;
* layouts, each written in one step: ``tiledb default`` (tiledbsoma's), ``row`` (cell-major,
  `ROW_LAYOUT`: all of a cell's genes in one space tile, small data tiles) and ``col``
  (gene-major, `COL_LAYOUT`). A store with two X arrays, as CELLxGENE keeps (row for cell
  queries, col for gene queries), reads as ``row`` does for cells and ``col`` for genes,
  and costs both X arrays on disk: the table gives its figures from those two stores
  (column ``two arrays``);
* ``two arrays, appended``: kbagg's store of layout ``two_arrays``, grown by one
  `update_store(layout="two_arrays")` per sample and then consolidated (`consolidate_store`):
  ``counts`` cell-major, ``counts_by_gene`` gene-major; gene queries read the copy
  (`kbagg.soma.query_layer`), the others ``counts``. ``--no-two-arrays`` skips it.

Each query runs in a fresh child (its peak RSS by wait4), every format interleaved,
``--repeats`` times (medians), the files in the page cache; every format must return the
same shape, non-zero count and value sum. Ratios are to the better h5ad layout of the same
run (lower is better; 1.0 = as fast).
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

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
from bench_access import (  # noqa: E402
    CONCAT,
    H5AD_QUERY,
    SOMA_QUERY,
    TO_CSC,
    generate,
    queries,
    run_child,
    time_query,
    warm,
)

from kbagg.soma.layouts import COL_LAYOUT, ROW_LAYOUT  # noqa: E402

APPENDS = """
import sys, time, json
from kbagg.soma.store import update_store
store, manifest, max_fragments, layout, *pairs = sys.argv[1:]
max_fragments = json.loads(max_fragments)
pairs = [p.split("=", 1) for p in pairs]
times = []
for k in range(1, len(pairs) + 1):
    t0 = time.perf_counter()
    update_store(store, dict(pairs[:k]), run_id=f"r{k}", manifest_path=manifest,
                 project="bench", log=lambda line: None, max_fragments=max_fragments,
                 layout=layout)
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""

CONSOLIDATE = """
import sys
from kbagg.soma.store import consolidate_store
consolidate_store(sys.argv[1], 1, log=lambda line: None)
"""

# As update_store hands samples over (anndata 0.13 lists X under the key None in layers,
# which from_h5ad cannot write): every matrix as a layer, indices as wide as indptr.
ONE_STEP = """
import json, sys, warnings
import anndata as ad
import tiledbsoma.io as soma_io
warnings.simplefilter("ignore")
import pandas as pd
out, h5ad, config, runs = sys.argv[1:]
a = ad.read_h5ad(h5ad)
X = a.X
X.indices = X.indices.astype(X.indptr.dtype)
b = ad.AnnData(obs=a.obs.rename_axis("obs_id"), var=a.var.rename_axis("gene_id"))
# the obs table of the appended stores: update_store adds kbagg_run, one run per sample
runs = json.loads(runs)
b.obs["kbagg_run"] = pd.Categorical(b.obs["sample"].astype(str).map(runs), categories=list(runs.values()))
b.layers["counts"] = X
del a
soma_io.from_anndata(out, b, "RNA", X_layer_name="counts", obs_id_name="obs_id",
                     var_id_name="gene_id", platform_config=json.loads(config), uns_keys=[])
"""


def _obs_columns(store: Path) -> list[str]:
    """The obs columns of a store (the obs query reads them all: they must match)."""
    import tiledbsoma as soma

    with soma.Experiment.open(str(store)) as exp:
        return sorted(exp.obs.schema.names)


def disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def x_disk(store: Path) -> int:
    return disk(store / "ms" / "RNA" / "X")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--cells-per-sample", type=int, default=1500)
    p.add_argument("--genes", type=int, default=5000)
    p.add_argument("--nnz-per-cell", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--queries", default="abcde")
    p.add_argument(
        "--max-fragments",
        type=int,
        default=None,
        metavar="K",
        help="also grow a store by the appends with update_store(max_fragments=K)",
    )
    p.add_argument(
        "--no-layouts", action="store_true", help="skip the tiledb default, row and col stores"
    )
    p.add_argument(
        "--no-two-arrays",
        action="store_true",
        help="skip the store of layout two_arrays grown by appends",
    )
    args = p.parse_args(argv)
    os.environ["PYTHONPATH"] = str(REPO / "src")
    from kbagg.soma.store import GENE_QUERY_LAYOUT

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_soma_layout_", dir=args.workdir))
    try:
        n_cells = args.samples * args.cells_per_sample
        paths = generate(work, args.samples, args.cells_per_sample, args.genes, args.nnz_per_cell)
        pairs = [f"{k}={v}" for k, v in paths.items()]
        runs = {name: f"r{k}" for k, name in enumerate(paths, 1)}  # APPENDS' run per sample
        print(
            f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.samples} samples x {args.cells_per_sample:,} cells = "
            f"{n_cells:,} cells x {args.genes:,} genes, {args.nnz_per_cell:,} nnz/cell, "
            f"float32; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
        )
        csr, csc = work / "agg_csr.h5ad", work / "agg_csc.h5ad"
        build = {"concat_on_disk -> CSR h5ad": run_child(CONCAT, csr, *pairs)}
        build["anndata CSR -> CSC h5ad"] = run_child(TO_CSC, csr, csc)
        stores = {
            "append": work / "append",
            "append+consolidated": work / "consolidated",
            "one step": work / "one_step",
            "tiledb default": work / "default",
            "row": work / "row",
            "col": work / "col",
        }
        if args.no_layouts:
            for name in ("tiledb default", "row", "col"):
                del stores[name]
        two = "two arrays, appended"
        if not args.no_two_arrays:
            stores[two] = work / "two_arrays"
        if args.max_fragments:
            key = f"append, max_fragments={args.max_fragments}"
            stores[key] = work / "bounded"
            build[f"{args.samples} appends, max_fragments={args.max_fragments}"] = run_child(
                APPENDS, stores[key], work / "m.json", args.max_fragments, "gene_query", *pairs
            )
        appends = run_child(
            APPENDS, stores["append"], work / "m.json", "null", "gene_query", *pairs
        )
        build[f"{args.samples} appends (update_store each)"] = appends
        per_append = json.loads(appends[2].strip().splitlines()[-1])
        shutil.copytree(stores["append"], stores["append+consolidated"])
        build["consolidate_store (all arrays)"] = run_child(
            CONSOLIDATE, stores["append+consolidated"]
        )
        if two in stores:  # one build each: build times are compared by bench_soma_parallel
            build[f"{args.samples} appends, layout two_arrays"] = run_child(
                APPENDS, stores[two], work / "m.json", "null", "two_arrays", *pairs
            )
            build["consolidate_store, two_arrays"] = run_child(CONSOLIDATE, stores[two])
        for name, layout in (
            ("one step", GENE_QUERY_LAYOUT),
            ("tiledb default", {}),
            ("row", ROW_LAYOUT),
            ("col", COL_LAYOUT),
        ):
            if name not in stores:
                continue
            build[f"from_h5ad, {name}"] = run_child(
                ONE_STEP, stores[name], csr, json.dumps(layout), json.dumps(runs)
            )
        obs_columns = {name: _obs_columns(path) for name, path in stores.items()}
        if len({tuple(columns) for columns in obs_columns.values()}) > 1:
            raise SystemExit(f"the stores' obs tables differ: {obs_columns}")
        print("| build step | wall s | peak RSS MB |\n|---|---:|---:|")
        for step, (wall, rss, _) in build.items():
            print(f"| {step} | {wall:.1f} | {rss:,.0f} |")
        print(
            f"\nappends: first {per_append[0]:.1f} s, last {per_append[-1]:.1f} s, median "
            f"{statistics.median(per_append):.1f} s\n"
        )
        sizes = {"CSR h5ad": csr.stat().st_size, "CSC h5ad": csc.stat().st_size}
        sizes.update({name: disk(path) for name, path in stores.items()})
        if "col" in stores:
            sizes["row + col X (two arrays)"] = disk(stores["row"]) + x_disk(stores["col"])
        print("| on disk | MB | X only MB |\n|---|---:|---:|")
        for name, size in sizes.items():
            x = x_disk(stores[name]) if name in stores else None
            print(f"| {name} | {size / 2**20:,.0f} | {'' if x is None else f'{x / 2**20:,.0f}'} |")

        formats = {"CSR": (H5AD_QUERY, csr), "CSC": (H5AD_QUERY, csc)}
        formats.update({name: (SOMA_QUERY, path) for name, path in stores.items()})
        warm(csr, csc, *stores.values())
        names = list(formats)
        print(
            "\nSeconds (median of interleaved runs) and, in brackets, the ratio to the better "
            "h5ad layout; peak RSS MB below each query.\n"
        )
        header = [*names, "two arrays"] if "col" in stores else names
        print("| query | " + " | ".join(header) + " |")
        print("|---|" + "---:|" * len(header))
        genes = [f"ENSG{i:011d}".lower() for i in range(args.genes)]
        for label, (query, arg) in queries(n_cells, genes, args.samples).items():
            if label[1] not in args.queries:
                continue
            t, m = time_query(formats, query, arg, args.repeats, label)
            shown = names
            if "col" in stores:
                two = "col" if query == "genes" else "row"
                t["two arrays"], m["two arrays"] = t[two], m[two]
                shown = [*names, "two arrays"]
            best = min(t["CSR"], t["CSC"])
            cells = [f"{t[f]:.3f} ({t[f] / best:.1f}x)" for f in shown]
            print(f"| {label} | " + " | ".join(cells) + " |")
            print("| peak RSS MB | " + " | ".join(f"{m[f]:,.0f}" for f in shown) + " |", flush=True)
        print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        if not args.keep:
            shutil.rmtree(work)


if __name__ == "__main__":
    main()

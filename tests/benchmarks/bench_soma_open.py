#!/usr/bin/env python
"""Benchmark: what opening a SOMA store grown by appends costs, and what the merge of the
journal's metadata files and the removal of unused schema versions save.

    python tests/benchmarks/bench_soma_open.py                        # 64 appends, ~5 min
    python tests/benchmarks/bench_soma_open.py --samples 16 --repeats 7

The samples are small in genes and non-zeros (50 genes, 3 per cell) and real-sized in cells,
so that obs and the opens dominate. Stores, built from the same samples:

* ``arrays consolidated``: one `update_store` per sample (``max_fragments=None``), then the
  arrays consolidated and the experiment's metadata left as the appends wrote it (two
  journal files per append): the store as kbagg left it before 2026-12-07;
* ``schemas kept``: the same store after `consolidate_store` without the removal of the
  schema versions no fragment uses (every append adds two to obs): kbagg before 2026-12-08;
* ``all consolidated``: the same store after `consolidate_store`;
* ``one step``: the second store's cells, read back and written by
  ``tiledbsoma.io.from_anndata`` in one call (the same obs columns; one schema per array).

Each probe runs in a fresh child, every store interleaved, ``--repeats`` rounds: it times
opening the experiment, opening obs, reading all of obs, and the whole child (import
included), and the child's peak RSS. Medians, and ratios to ``one step``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
from bench_access import run_child  # noqa: E402
from concat_helpers import write_sparse_h5ad  # noqa: E402

BUILD = """
import json, shutil, sys
from kbagg.soma.store import update_store
store, *pairs = sys.argv[1:]
pairs = [p.split("=", 1) for p in pairs]
for k in range(1, len(pairs) + 1):
    update_store(store, dict(pairs[:k]), run_id=f"run{k}", manifest_path=store + ".json",
                 project="bench", log=lambda line: None, max_fragments=None)
"""

# Steps left out (comma-separated): "metadata", the metadata merge made to fail, as where
# libtiledb cannot be found; "schemas", the removal of unused schema versions.
CONSOLIDATE = """
import sys
import kbagg.soma.fragments as fragments
from kbagg.soma.store import consolidate_store
store, skipped = sys.argv[1], sys.argv[2].split(",")
def skip(uri):
    raise OSError("skipped by the benchmark")
if "metadata" in skipped:
    fragments.consolidate_group_metadata = skip
if "schemas" in skipped:
    fragments.fragment_schema_names = skip
consolidate_store(store, 1, log=lambda line: None)
"""

ONE_STEP = """
import sys, warnings
import anndata as ad
import tiledbsoma as soma
import tiledbsoma.io as soma_io
warnings.simplefilter("ignore")
source, out = sys.argv[1:]
with soma.Experiment.open(source) as exp, exp.axis_query("RNA") as q:
    a = q.to_anndata(X_name="counts", obs_id_name="obs_id", var_id_name="gene_id")
b = ad.AnnData(obs=a.obs.drop(columns="soma_joinid", errors="ignore"),
               var=a.var.drop(columns="soma_joinid", errors="ignore"))
b.layers["counts"] = a.X
soma_io.from_anndata(out, b, "RNA", X_layer_name="counts", obs_id_name="obs_id",
                     var_id_name="gene_id", uns_keys=[])
"""

PROBE = """
import json, sys, time
t_start = time.perf_counter()
import tiledbsoma as soma
from kbagg.soma import read_context
context = read_context()
t0 = time.perf_counter()
with soma.Experiment.open(sys.argv[1], context=context) as exp:
    t1 = time.perf_counter()
    obs = exp.obs
    t2 = time.perf_counter()
    n = len(obs.read().concat().to_pandas())
    t3 = time.perf_counter()
print(json.dumps({"open experiment": t1 - t0, "open obs": t2 - t1, "read obs": t3 - t2,
                  "whole child": t3 - t_start, "n_obs": n}))
"""

STEPS = ("open experiment", "open obs", "read obs", "whole child")


def _files(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for f in folder.iterdir() if f.is_file() and f.suffix != ".vac")


def describe(store: Path) -> dict:
    return {
        "experiment metadata files": _files(store / "__meta"),
        "obs schemas": _files(store / "obs" / "__schema"),
        "X schemas": _files(store / "ms" / "RNA" / "X" / "counts" / "__schema"),
        "metadata KB": round(sum(f.stat().st_size for f in (store / "__meta").iterdir()) / 1024, 1),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--cells-per-sample", type=int, default=1500)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    args = p.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_soma_open_"))
    work.mkdir(parents=True, exist_ok=True)
    genes = [f"G{i:04d}" for i in range(50)]
    pairs = []
    for i in range(args.samples):
        path = work / f"s{i:03d}.h5ad"
        write_sparse_h5ad(path, args.cells_per_sample, genes, 3, seed=i)
        pairs.append(f"s{i:03d}={path}")
    arrays, kept = work / "arrays_consolidated", work / "schemas_kept"
    full, one = work / "all_consolidated", work / "one"
    for store in (arrays, kept, full, one):
        shutil.rmtree(store, ignore_errors=True)
    wall, rss, _ = run_child(BUILD, arrays, *pairs)
    print(f"{args.samples} appends: {wall:.1f} s, peak RSS {rss:.0f} MB", flush=True)
    shutil.copytree(arrays, kept)
    shutil.copytree(arrays, full)
    for store, skipped in ((arrays, "metadata,schemas"), (kept, "schemas"), (full, "")):
        wall, rss, _ = run_child(CONSOLIDATE, store, skipped)
        print(f"consolidate {store.name}: {wall:.2f} s, peak RSS {rss:.0f} MB", flush=True)
    run_child(ONE_STEP, full, one)
    stores = {
        "arrays consolidated": arrays,
        "schemas kept": kept,
        "all consolidated": full,
        "one step": one,
    }

    times = {name: {s: [] for s in STEPS} for name in stores}
    rss = {name: [] for name in stores}
    n_obs = set()
    for _ in range(args.repeats):
        for name, store in stores.items():
            _, mb, out = run_child(PROBE, store)
            got = json.loads(out.strip().splitlines()[-1])
            n_obs.add(got.pop("n_obs"))
            for step in STEPS:
                times[name][step].append(got[step])
            rss[name].append(mb)
    if len(n_obs) != 1:
        raise RuntimeError(f"the stores hold different numbers of cells: {n_obs}")

    print(f"\n{args.samples} samples x {args.cells_per_sample} cells, {args.repeats} rounds")
    print("| store | " + " | ".join(describe(one)) + " |")
    print("|---|" + "---:|" * len(describe(one)))
    for name, store in stores.items():
        print(f"| {name} | " + " | ".join(f"{v:,}" for v in describe(store).values()) + " |")
    print("\nmedian ms (ratio to one step)")
    print("| store | " + " | ".join(STEPS) + " | peak RSS MB |")
    print("|---|" + "---:|" * (len(STEPS) + 1))
    for name in stores:
        cells = []
        for step in STEPS:
            ms = statistics.median(times[name][step]) * 1000
            base = statistics.median(times["one step"][step]) * 1000
            cells.append(f"{ms:.1f} ({ms / base:.2f}x)")
        print(f"| {name} | " + " | ".join(cells) + f" | {statistics.median(rss[name]):.0f} |")
    if args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

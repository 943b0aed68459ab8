#!/usr/bin/env python
"""Benchmark: the aggregate .h5mu (kbagg.aggregate.mudata.concat_h5mu) against the h5ad aggregate
of the RNA alone (the anchor) and against building the same MuData in memory with mudata.

    python tests/benchmarks/bench_h5mu.py                 # 4 samples, ~1 minute
    python tests/benchmarks/bench_h5mu.py --samples 8 --cells 10000 --genes 30000 \\
        --nnz-per-cell 2000 --repeats 3 --workdir /tmp/bench_h5mu

Each sample has an rna h5ad (random CSR, written in chunks by tests/concat_helpers.py), a
prot h5ad (30 antibodies, all stored) and a hashtag h5ad (4 hashtags) with the same cells.
Every method runs as a fresh child process (peak RSS = the child's own ru_maxrss via
wait4), the methods interleaved, `--repeats` times; the table shows medians and the ratio
to the anchor measured in the same run:

- ``rna h5ad``: `concat_on_disk` of the rna files (what the h5ad aggregate costs);
- ``h5mu kbagg``: `concat_h5mu` of all modalities (concat_on_disk per modality + assembly);
- ``h5mu kbagg, rna reused``: the same with the rna modality taken from the h5ad aggregate
  (made once, beforehand), as rule aggregate_h5mu does: only the feature modalities are
  concatenated;
- ``h5mu in memory``: read every file, `anndata.concat` per modality, `mudata.MuData`,
  `write_h5mu` (the simple way, whose memory grows with the data).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from concat_helpers import child_peak_rss_mb, write_sparse_h5ad  # noqa: E402

from kbagg.concat import concat_on_disk  # noqa: E402

RNA_ONLY = """
import sys
from kbagg.concat.engine import concat_on_disk
out, *pairs = sys.argv[1:]
concat_on_disk(dict(p.split("=", 1) for p in pairs), out, progress=False)
"""

KBAGG_H5MU = """
import sys
from kbagg.aggregate.mudata import concat_h5mu
out, *triples = sys.argv[1:]
inputs = {}
for t in triples:
    sample, modality, path = t.split("=", 2)
    inputs.setdefault(sample, {})[modality] = path
concat_h5mu(inputs, out, progress=False)
"""

# What rule aggregate_h5mu runs: the rna modality is the h5ad aggregate (argv[2]), reused.
KBAGG_H5MU_REUSE = """
import sys
from kbagg.aggregate.mudata import concat_h5mu
out, rna_aggregate, *triples = sys.argv[1:]
inputs = {}
for t in triples:
    sample, modality, path = t.split("=", 2)
    inputs.setdefault(sample, {})[modality] = path
concat_h5mu(inputs, out, progress=False, rna_aggregate=rna_aggregate)
"""

IN_MEMORY_H5MU = """
import sys, warnings
import anndata as ad, mudata
warnings.simplefilter("ignore")
out, *triples = sys.argv[1:]
by_modality = {}
for t in triples:
    sample, modality, path = t.split("=", 2)
    by_modality.setdefault(modality, {})[sample] = ad.read_h5ad(path)
mods = {m: ad.concat(a, label="sample", index_unique="-", merge="same")
        for m, a in by_modality.items()}
mudata.write_h5mu(out, mudata.MuData(mods))
"""


def generate(workdir: Path, samples: int, cells: int, genes: int, nnz: int) -> dict:
    names = [f"ENSG{i:011d}" for i in range(genes)]
    files = {}
    for i in range(samples):
        sample = f"s{i:03d}"
        files[sample] = {
            "rna": workdir / f"{sample}_rna.h5ad",
            "prot": workdir / f"{sample}_prot.h5ad",
            "hashtag": workdir / f"{sample}_hashtag.h5ad",
        }
        write_sparse_h5ad(files[sample]["rna"], cells, names, nnz, seed=i)
        write_sparse_h5ad(files[sample]["prot"], cells, [f"ADT{j}" for j in range(30)], 30)
        write_sparse_h5ad(files[sample]["hashtag"], cells, [f"HTO{j}" for j in range(4)], 4)
    return files


def run(code: str, out: Path, args: list[str]) -> tuple[float, float]:
    os.sync()
    start = time.perf_counter()
    status, rss_mb, err = child_peak_rss_mb([sys.executable, "-c", code, str(out), *args])
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(err[-3000:])
    out.unlink()
    return wall, rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--cells", type=int, default=4000)
    parser.add_argument("--genes", type=int, default=8000)
    parser.add_argument("--nnz-per-cell", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.workdir is not None:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench_h5mu_", dir=args.workdir))
    try:
        files = generate(workdir, args.samples, args.cells, args.genes, args.nnz_per_cell)
        rna_pairs = [f"{s}={m['rna']}" for s, m in files.items()]
        triples = [f"{s}={mod}={p}" for s, m in files.items() for mod, p in m.items()]
        rna_aggregate = workdir / "rna_aggregate.h5ad"  # rule aggregate's output, made once
        concat_on_disk({s: m["rna"] for s, m in files.items()}, rna_aggregate, progress=False)
        methods = {
            "rna h5ad (anchor)": (RNA_ONLY, workdir / "rna.h5ad", rna_pairs),
            "h5mu kbagg": (KBAGG_H5MU, workdir / "all.h5mu", triples),
            "h5mu kbagg, rna reused": (
                KBAGG_H5MU_REUSE,
                workdir / "reuse.h5mu",
                [str(rna_aggregate), *triples],
            ),
            "h5mu in memory": (IN_MEMORY_H5MU, workdir / "mem.h5mu", triples),
        }
        in_mb = sum(p.stat().st_size for m in files.values() for p in m.values()) / 2**20
        load = os.getloadavg()
        print(
            f"# {args.samples} samples x {args.cells} cells, rna {args.genes} genes "
            f"{args.nnz_per_cell} nnz/cell + 30 ADT + 4 HTO: {in_mb:,.0f} MB of input; "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
        )
        results = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, (code, out, method_args) in methods.items():  # interleaved
                results[name].append(run(code, out, method_args))
        anchor_wall = statistics.median(w for w, _ in results["rna h5ad (anchor)"])
        anchor_rss = statistics.median(r for _, r in results["rna h5ad (anchor)"])
        print(
            "| method | wall s (median) | peak RSS MB (median) | wall vs anchor | RSS vs anchor |"
        )
        print("|---|---:|---:|---:|---:|")
        for name, rows in results.items():
            wall = statistics.median(w for w, _ in rows)
            rss = statistics.median(r for _, r in rows)
            print(
                f"| {name} | {wall:.2f} | {rss:,.0f} | {wall / anchor_wall:.2f} | "
                f"{rss / anchor_rss:.2f} |"
            )
        load = os.getloadavg()
        print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    finally:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()

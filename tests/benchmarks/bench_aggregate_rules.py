#!/usr/bin/env python
"""Benchmark: the workflow's aggregate rules (aggregate, for filtered and raw, and
aggregate_h5mu) of two kbagg checkouts on the same per-sample inputs, through Snakemake.

    git worktree add --detach /tmp/before <commit>      # and /tmp/after, or any checkout
    python tests/benchmarks/bench_aggregate_rules.py --demo-run DEMO \\
        --before /tmp/before --after /tmp/after --workdir /tmp/bench_agg \\
        --cells 20000 --genes 2000 --nnz-per-cell 1000 --repeats 3

DEMO is a finished demo run (`snakemake --cores 2` on the shipped config, in a copy of the
repository). Its results, resources and .snakemake go into WORKDIR/<version> beside that
checkout's files, then every sample's matrices are replaced by larger ones: `filtered.h5ad`
by --cells cells (the demo's cells and obs, tiled) of a random count matrix of --genes genes
and --nnz-per-cell non-zeros per cell, the feature modalities (prot, hashtag) tiled to the
same cells, `raw.h5ad` by --raw-barcodes barcodes of --raw-nnz non-zeros. Both versions get
the same files. Each round deletes the aggregate outputs and runs `snakemake --cores 2
--rerun-triggers mtime` on them (nothing upstream reruns), the versions interleaved, their
order rotating. Per rule: wall s, CPU s and max RSS from Snakemake's benchmark file; the
run's wall time as a whole. Prints a markdown table of medians (peak RSS: the largest).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGETS = ["results/aggregate/filtered.h5ad", "results/aggregate/raw.h5ad"]
TARGETS += ["results/aggregate/filtered.h5mu"]
FEATURE_FILES = {"prot.h5ad": "kb_prot", "hashtag.h5ad": "kb_hashtag"}


def copy_checkout(checkout: Path, dest: Path) -> None:
    """The checkout's tracked files, as a fresh clone has them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=checkout, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = checkout / name.decode()
        if source.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name.decode())


def scaled_inputs(demo: Path, data: Path, args) -> None:
    """Every sample's matrices at the benchmark's size, written once into `data`."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    genes = pd.DataFrame(
        {"gene_name": [f"Gene{i}" for i in range(args.genes)]},
        index=pd.Index([f"ENSG{i:011d}" for i in range(args.genes)], name="gene_id"),
    )

    def counts(n: int, nnz: int) -> sp.csr_matrix:
        rows = [
            np.sort(np.argsort(rng.random((min(1000, n - i), args.genes)), axis=1)[:, :nnz])
            for i in range(0, n, 1000)
        ]
        data = rng.poisson(2.0, n * nnz).astype(np.float64) + 1  # kb writes float64
        indptr = np.arange(n + 1, dtype=np.int64) * nnz
        indices = np.concatenate(rows).ravel().astype(np.int32)
        return sp.csr_matrix((data, indices, indptr), shape=(n, args.genes))

    def tiled(adata: ad.AnnData, n: int) -> ad.AnnData:
        rows = np.arange(n) % adata.n_obs
        out = adata[rows].copy()
        out.obs_names = [f"{b}.{k // adata.n_obs}" for k, b in enumerate(adata.obs_names[rows])]
        return out

    for folder in sorted((demo / "results" / "samples").iterdir()):
        out = data / folder.name
        out.mkdir(parents=True, exist_ok=True)
        filtered = ad.read_h5ad(folder / "filtered.h5ad")
        cells = tiled(filtered, args.cells)
        ad.AnnData(
            counts(args.cells, args.nnz_per_cell), obs=cells.obs, var=genes, uns=filtered.uns
        ).write_h5ad(out / "filtered.h5ad")
        for name in FEATURE_FILES:
            if (folder / name).exists():
                tiled(ad.read_h5ad(folder / name), args.cells).write_h5ad(out / name)
        barcodes = tiled(ad.read_h5ad(folder / "raw.h5ad"), args.raw_barcodes)
        matrix = counts(args.raw_barcodes, args.raw_nnz)
        ad.AnnData(matrix, obs=barcodes.obs, var=genes).write_h5ad(out / "raw.h5ad")


def prepare(version: str, checkout: Path, demo: Path, data: Path, workdir: Path) -> Path:
    rundir = workdir / version
    shutil.rmtree(rundir, ignore_errors=True)
    copy_checkout(checkout, rundir)
    for name in ("results", "resources", ".snakemake"):
        shutil.copytree(demo / name, rundir / name, symlinks=True)
    shutil.rmtree(rundir / "results" / "aggregate", ignore_errors=True)
    now = time.time()
    for sample in data.iterdir():
        target = rundir / "results" / "samples" / sample.name
        for path in sample.iterdir():
            stat = (target / path.name).stat()
            shutil.copyfile(path, target / path.name)
            if path.name in ("filtered.h5ad", "raw.h5ad"):  # as old as the demo's
                os.utime(target / path.name, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            else:  # feature modalities: newer than the filtered matrix they read
                os.utime(target / path.name, (now, now))
                os.utime(target / FEATURE_FILES[path.name] / "run_info.json", (now, now))
    return rundir


def run_round(rundir: Path) -> dict:
    for name in ("filtered.h5ad", "raw.h5ad", "filtered.h5mu"):
        (rundir / "results" / "aggregate" / name).unlink(missing_ok=True)
    shutil.rmtree(rundir / "benchmarks" / "aggregate", ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(rundir / "src")}
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--rerun-triggers", "mtime"]
    start = time.perf_counter()
    proc = subprocess.run([*command, "--", *TARGETS], cwd=rundir, env=env, capture_output=True)
    total = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{rundir}: snakemake failed\n{proc.stderr.decode()[-3000:]}")
    ran = sum(
        line.startswith(("rule ", "localrule ")) for line in proc.stderr.decode().splitlines()
    )
    if ran != 3:
        sys.exit(f"{rundir}: {ran} jobs ran, not the 3 aggregate jobs")
    rules = {}
    for tsv in (rundir / "benchmarks" / "aggregate").glob("*.tsv"):
        with open(tsv) as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        rules[tsv.stem] = {k: float(row[k]) for k in ("s", "cpu_time", "max_rss")}
    return {"total_s": total, "rules": rules}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-run", type=Path, required=True)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_aggregate_rules"))
    parser.add_argument("--cells", type=int, default=20000, help="cells per sample")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--nnz-per-cell", type=int, default=1000)
    parser.add_argument("--raw-barcodes", type=int, default=8000)
    parser.add_argument("--raw-nnz", type=int, default=200, help="non-zeros per raw barcode")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    data = args.workdir / "data"
    shutil.rmtree(data, ignore_errors=True)
    scaled_inputs(args.demo_run, data, args)
    rundirs = {
        v: prepare(v, getattr(args, v), args.demo_run, data, args.workdir)
        for v in ("before", "after")
    }
    for rundir in rundirs.values():
        run_round(rundir)  # warm-up, not counted
    runs = {v: [] for v in rundirs}
    for i in range(args.repeats):
        for v in list(rundirs)[:: 1 if i % 2 == 0 else -1]:
            runs[v].append(run_round(rundirs[v]))
            rules = runs[v][-1]["rules"]
            print(f"round {i + 1} {v}: {runs[v][-1]['total_s']:.1f} s;", rules, flush=True)

    median = statistics.median
    print(
        "\n| version | rounds | rules' wall s | "
        "rules' CPU s | aggregate filtered CPU s | aggregate raw CPU s | aggregate_h5mu CPU s "
        "| peak RSS MB | Snakemake run wall s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for v, done in runs.items():

        def of(key: str, rule: str | None = None, done=done) -> float:
            return median(
                [
                    sum(r[key] for name, r in run["rules"].items() if rule in (None, name))
                    for run in done
                ]
            )

        peak = max(r["max_rss"] for run in done for r in run["rules"].values())
        print(
            f"| {v} | {len(done)} | {of('s'):.1f} | {of('cpu_time'):.2f} | "
            f"{of('cpu_time', 'filtered'):.2f} | {of('cpu_time', 'raw'):.2f} | "
            f"{of('cpu_time', 'filtered_h5mu'):.2f} | {peak:.0f} | "
            f"{median([run['total_s'] for run in done]):.1f} |"
        )


if __name__ == "__main__":
    main()

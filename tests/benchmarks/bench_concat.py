#!/usr/bin/env python
"""Benchmark: kbagg's concat engine against anndata and against plain copies, on the same
generated inputs, each method a fresh child process, methods interleaved and repeated.

    python tests/benchmarks/bench_concat.py                      # small, all layouts
    python tests/benchmarks/bench_concat.py --layout all --files 8 --cells 10000 \\
        --genes 30000 --nnz-per-cell 2000 --repeats 5 --threads 1,2   # docs/benchmarks.md
    python tests/benchmarks/bench_concat.py --suite compression --levels 1,4,6 --threads 1,2,4
    python tests/benchmarks/bench_concat.py --suite zarr
    python tests/benchmarks/bench_concat.py --suite gene-major

Input layouts (float32, ``--nnz-per-cell`` stored entries per cell):

* ``same``: every file has all genes in the same order (one kb reference): no remap.
* ``subset``: each file lacks a random 5% of the genes, the rest in the same order.
* ``shuffled``: as ``subset``, and each file has its genes in its own random order.
* ``csc``: as ``same``, stored as CSC.
* ``dense``: as ``same``, stored dense, with ``--cells / 8`` cells per file (a dense
  10,000 x 30,000 float32 file would be 1.2 GB).

Each table row is the median of ``--repeats`` runs; every round runs every method once, in
the same order. Ratios are medians of one method over another from the same run. Peak RSS is
the child's own ru_maxrss (via wait4, through a small fork/exec trampoline). The 1-minute
load average is printed before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from concat_helpers import child_usage, write_sparse_h5ad  # noqa: E402

CLI = [sys.executable, "-m", "kbagg.concat.cli"]  # kbagg-concat
LAYOUTS = ("same", "subset", "shuffled", "csc", "dense")

ANNDATA_ON_DISK = """
import sys, anndata as ad
from anndata.experimental import concat_on_disk
out, join, *pairs = sys.argv[1:]
files = dict(p.split("=", 1) for p in pairs)
concat_on_disk(files, out, join=join, label="sample", index_unique="-", merge="same")
"""

ANNDATA_IN_MEMORY = """
import sys, anndata as ad
out, join, *pairs = sys.argv[1:]
files = dict(p.split("=", 1) for p in pairs)
adatas = {k: ad.read_h5ad(v) for k, v in files.items()}
ad.concat(adatas, join=join, label="sample", index_unique="-", merge="same").write_h5ad(out)
"""

# The floor: the same matrix bytes (X/data and X/indices, or a dense X) read and written
# through h5py, with no processing (no remapping, no obs/var, no anndata import), into chunked
# datasets like the engine's; COMPRESSION is h5py's own filter pipeline doing the work.
H5PY_COPY = """
import sys, h5py, numpy as np
out, compression, *paths = sys.argv[1:]
method, _, level = compression.partition(":")
filters = {"gzip": dict(compression="gzip", compression_opts=int(level or 4), shuffle=True),
           "lzf": dict(compression="lzf", shuffle=True)}.get(method, {})
step = 1 << 21
with h5py.File(paths[0], "r") as f:
    keys = ["X"] if isinstance(f["X"], h5py.Dataset) else ["X/data", "X/indices"]
    if keys == ["X"]:  # dense: whole rows per step
        step -= step % f["X"].shape[1]
sizes = []
for p in paths:
    with h5py.File(p, "r") as f:
        sizes.append(f[keys[0]].size)
with h5py.File(out, "w") as o:
    dst = {}
    for k in keys:
        with h5py.File(paths[0], "r") as f:
            dt = f[k].dtype
        dst[k] = o.create_dataset(k.replace("/", "_"), (sum(sizes),), dt,
                                  chunks=(max(1, min(1 << 18, sum(sizes))),), **filters)
    bufs = {k: np.empty(step, d.dtype) for k, d in dst.items()}
    pos = 0
    for p, n in zip(paths, sizes):
        with h5py.File(p, "r") as f:
            for a in range(0, n, step):
                m = min(step, n - a)
                for k, d in dst.items():
                    src = f[k]
                    if src.ndim == 2:
                        w = src.shape[1]
                        bufs[k][:m] = src[a // w : (a + m) // w].ravel()
                    else:
                        src.read_direct(bufs[k], np.s_[a : a + m], np.s_[:m])
                    d.write_direct(bufs[k], np.s_[:m], np.s_[pos : pos + m])
                pos += m
"""

GENE_MAJOR = """
import sys
from kbagg.concat.gene_major import write_gene_major
src, out, compression, threads = sys.argv[1:]
write_gene_major(src, out, compression=compression, threads=int(threads))
"""

GENE_MAJOR_ANNDATA = """
import sys, anndata as ad
src, out = sys.argv[1:]
a = ad.read_h5ad(src)
a.X = a.X.tocsc()
a.write_h5ad(out)
"""

READ_GENES = """
import sys, time, numpy as np, anndata as ad
path, n = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
a = ad.read_h5ad(path, backed="r")
genes = np.linspace(0, a.n_vars - 1, n).astype(int)
x = a[:, genes].to_memory().X
print(f"{time.perf_counter() - t0:.3f}")
"""


def inputs_for(args, workdir: Path, layout: str) -> dict[str, Path]:
    """The inputs of a layout: generated into ``workdir``, or kept under ``--inputs DIR`` and
    reused by later runs with the same sizes."""
    size = (args.files, args.cells, args.genes, args.nnz_per_cell)
    if args.inputs is None:
        folder = workdir / layout
    else:
        folder = args.inputs / f"{layout}-{'x'.join(map(str, size))}"
        if (folder / "complete").exists():
            return {p.stem: p for p in sorted(folder.glob("s*.h5ad"))}
    folder.mkdir(parents=True, exist_ok=True)
    paths = generate(folder, layout, *size)
    (folder / "complete").touch()
    return paths


def generate(workdir: Path, layout: str, n_files: int, cells: int, genes: int, nnz: int):
    rng = np.random.default_rng(42)
    names = np.array([f"ENSG{i:011d}" for i in range(genes)])
    paths = {}
    for i in range(n_files):
        own = names
        if layout in ("subset", "shuffled"):
            own = names[np.sort(rng.choice(genes, genes - genes // 20, replace=False))]
        if layout == "shuffled":
            own = rng.permutation(own)
        path = paths[f"s{i:03d}"] = workdir / f"s{i:03d}.h5ad"
        if layout == "dense":
            _write_dense(path, max(1, cells // 8), list(own), nnz, seed=i)
        else:
            fmt = "csc" if layout == "csc" else "csr"
            write_sparse_h5ad(path, cells, list(own), nnz, fmt=fmt, seed=i)
    return paths


def _write_dense(path: Path, cells: int, genes: list[str], nnz: int, seed: int) -> None:
    sparse = path.with_suffix(".tmp.h5ad")
    write_sparse_h5ad(sparse, cells, genes, nnz, seed=seed)
    with h5py.File(sparse, "r") as src, h5py.File(path, "w") as dst:
        for key in src:
            if key != "X":
                src.copy(src[key], dst, name=key)
        dst.attrs.update(dict(src.attrs))
        x = dst.create_dataset("X", (cells, len(genes)), np.float32)
        x.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        indptr = src["X/indptr"][:]
        step = 1000
        for r0 in range(0, cells, step):
            r1 = min(r0 + step, cells)
            a, b = indptr[r0], indptr[r1]
            block = np.zeros((r1 - r0, len(genes)), np.float32)
            rows = np.repeat(np.arange(r1 - r0), np.diff(indptr[r0 : r1 + 1]))
            block[rows, src["X/indices"][a:b]] = src["X/data"][a:b]
            x[r0:r1] = block
    sparse.unlink()


def run_child(cmd: list[str], stdout=subprocess.DEVNULL) -> tuple[float, float, float]:
    """Wall seconds, the child's own peak RSS in MB and its CPU seconds (all threads)."""
    t0 = time.perf_counter()
    status, rss_mb, cpu_s, err = child_usage(cmd, stdout=stdout)
    wall = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {err[-2000:]}")
    return wall, rss_mb, cpu_s


def output_mb(path: Path) -> float:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
    return path.stat().st_size / 2**20


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def method_command(method: str, paths: dict[str, Path], join: str, out: Path, args) -> list:
    """The child command of a method name such as ``kbagg:t2:gzip:4`` or ``h5py-copy:gzip:4``."""
    pairs = [f"{k}={v}" for k, v in paths.items()]
    name, _, options = method.partition(":")
    if name == "cat":
        return [shutil.which("cat"), *map(str, paths.values())]
    if name == "kbagg":
        threads, _, compression = options.partition(":")
        cmd = [*CLI, "-o", str(out), "--quiet", "--join", join]
        if threads:
            cmd += ["--threads", threads.removeprefix("t")]
        if compression:
            cmd += ["--compression", compression]
        if args.chunk_entries:
            cmd += ["--chunk-entries", str(args.chunk_entries)]
        return cmd + pairs
    if name == "h5py-copy":
        return [
            sys.executable,
            "-c",
            H5PY_COPY,
            str(out),
            options or "none",
            *map(str, paths.values()),
        ]
    if name == "anndata.concat_on_disk":
        return [sys.executable, "-c", ANNDATA_ON_DISK, str(out), join, *pairs]
    if name == "anndata.concat":
        return [sys.executable, "-c", ANNDATA_IN_MEMORY, str(out), join, *pairs]
    raise ValueError(f"unknown method {method!r}")


def measure_rounds(
    commands: dict[str, tuple[list, Path]], repeats: int, inputs: list[Path]
) -> dict[str, dict]:
    """Run every command once per round, ``repeats`` rounds; per method the runs' figures.

    Before each run the inputs are read into the page cache again: this VM reclaims cold
    page cache within minutes even with most of its memory free (``fincore`` showed half of
    each input gone between two rounds), so without it later runs read from disk."""
    runs: dict[str, list] = {m: [] for m in commands}
    for _ in range(repeats):
        for method, (cmd, out) in commands.items():
            warm(inputs)
            os.sync()  # the previous method's writeback must not slow this one
            time.sleep(0.5)
            if cmd[0] == shutil.which("cat"):
                with open(out, "wb") as fh:
                    wall, rss, cpu = run_child(cmd, stdout=fh)
            else:
                wall, rss, cpu = run_child(cmd)
            runs[method].append((wall, rss, output_mb(out), cpu))
            remove(out)
    return {
        m: {
            "wall": statistics.median(r[0] for r in rs),
            "walls": [r[0] for r in rs],
            "rss": statistics.median(r[1] for r in rs),
            "rss_max": max(r[1] for r in rs),
            "mb": statistics.median(r[2] for r in rs),
            "cpu": statistics.median(r[3] for r in rs),
        }
        for m, rs in runs.items()
    }


def warm(paths) -> None:
    """Read the inputs into the page cache (``measure_rounds`` does it before every run)."""
    for q in paths:
        with open(q, "rb") as fh:
            while fh.read(1 << 24):
                pass


def size_mb(paths) -> float:
    return sum(q.stat().st_size for q in paths) / 2**20


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def print_table(title: str, results: dict, refs: list[str]) -> None:
    print(f"\n{title}\n")
    head = "| method | wall s (median) | runs | CPU s | peak RSS MB | out MB |"
    head += "".join(f" vs {r} |" for r in refs)
    print(head)
    print("|---|---:|---|---:|---:|---:|" + "---:|" * len(refs))
    for m, r in results.items():
        cells = []
        for ref in refs:
            if ref not in results or ref == m:
                cells.append("")
            else:
                base = results[ref]
                cells.append(
                    f"{base['wall'] / r['wall']:.2f}x faster, RSS {r['rss'] / base['rss']:.2f}x"
                )
        runs = " ".join(f"{w:.2f}" for w in r["walls"])
        print(
            f"| {m} | {r['wall']:.2f} | {runs} | {r['cpu']:.2f} | {r['rss']:,.0f} | {r['mb']:,.0f} |"
            + "".join(f" {c} |" for c in cells),
            flush=True,
        )


def measure_and_print(
    title: str, commands: dict, repeats: int, refs: list[str], inputs: list[Path]
) -> None:
    """Interleaved rounds of `commands` on `inputs`, then their table under `title` with the
    load average before and after (the machine is shared: the reader judges the figures by
    it)."""
    before = load()
    results = measure_rounds(commands, repeats, inputs)
    print_table(f"{title}; load average {before} before, {load()} after", results, refs)


def suite_layouts(args, workdir: Path) -> None:
    layouts = LAYOUTS if args.layout == "all" else args.layout.split(",")
    joins = ("inner", "outer") if args.join == "both" else (args.join,)
    for layout in layouts:
        lay_dir = workdir / f"run-{layout}"
        lay_dir.mkdir()
        paths = inputs_for(args, workdir, layout)
        mb = size_mb(paths.values())
        anndata_ref = (
            "anndata.concat_on_disk"
            if layout in ("same", "subset", "shuffled")
            else "anndata.concat"
        )
        methods = ["cat", "h5py-copy"] + [f"kbagg:t{t}" for t in args.threads.split(",")]
        methods.append(anndata_ref)
        if args.with_in_memory and anndata_ref != "anndata.concat":
            methods.append("anndata.concat")
        for join in joins:
            commands = {
                m: (
                    method_command(m, paths, join, lay_dir / "out.h5ad", args),
                    lay_dir / "out.h5ad",
                )
                for m in methods
            }
            measure_and_print(
                f"### layout {layout}, {join} join: {len(paths)} files, {mb:,.0f} MB of input",
                commands,
                args.repeats,
                [anndata_ref, "h5py-copy"],
                list(paths.values()),
            )
        shutil.rmtree(lay_dir)


def suite_compression(args, workdir: Path) -> None:
    """Per gzip level: h5py writing the filter itself, then the engine at each thread count;
    then ISA-L levels against h5py's gzip:1 (the nearest ratio), in the same rounds."""
    paths = inputs_for(args, workdir, "same")
    mb = size_mb(paths.values())
    threads = args.threads.split(",")
    tables = [(f"gzip:{level}", [f"gzip:{level}"]) for level in args.levels.split(",") if level]
    isal = [f"isal:{level}" for level in args.isal_levels.split(",") if level]
    if isal:
        tables.append(("gzip:1", isal))
    for reference, codecs in tables:
        methods = [f"h5py-copy:{reference}"]
        methods += [f"kbagg:t{t}:{codec}" for codec in codecs for t in threads]
        out = workdir / "out.h5ad"
        commands = {m: (method_command(m, paths, "inner", out, args), out) for m in methods}
        measure_and_print(
            f"### {', '.join(codecs)} (shuffle + deflate) against h5py's own {reference}: "
            f"{len(paths)} files, {mb:,.0f} MB of input",
            commands,
            args.repeats,
            [f"h5py-copy:{reference}"],
            list(paths.values()),
        )
    check_same_values(paths, workdir, args)


def check_same_values(paths, workdir: Path, args) -> None:
    """The engine's deflate outputs read back equal to h5py's gzip copy (X/data, X/indices);
    with zlib, its stored chunks are even byte for byte HDF5's own."""
    level = args.levels.split(",")[0] or "1"
    reference = workdir / "h5.h5ad"
    run_child(method_command(f"h5py-copy:gzip:{level}", paths, "inner", reference, args))
    isal = [f"isal:{lv}" for lv in args.isal_levels.split(",") if lv]
    for codec in [f"gzip:{level}", *isal[:1]]:
        out = workdir / "kb.h5ad"
        run_child(method_command(f"kbagg:t2:{codec}", paths, "inner", out, args))
        with h5py.File(out, "r") as fa, h5py.File(reference, "r") as fb:
            same = all(
                np.array_equal(fa[f"X/{k}"][:], fb[f"X_{k}"][:]) for k in ("data", "indices")
            )
            chunk = fa["X/data"].id.read_direct_chunk((0,))[1]
            same_bytes = chunk == fb["X_data"].id.read_direct_chunk((0,))[1]
        print(
            f"\nkbagg {codec} vs h5py gzip:{level}: X/data and X/indices read back identical: "
            f"{same}; first stored chunk byte-identical: {same_bytes}"
        )
        out.unlink()
    reference.unlink()


def suite_zarr(args, workdir: Path) -> None:
    paths = inputs_for(args, workdir, args.zarr_layout)
    mb = size_mb(paths.values())
    for join in ("inner", "outer") if args.join == "both" else (args.join,):
        commands = {}
        out = workdir / "out.zarr"
        # The default (blosc:1), and zstd:3, anndata's own zarr codec.
        for codec in ("blosc:1", "zstd:3"):
            for t in args.threads.split(","):
                m = f"kbagg:t{t}:{codec}"
                commands[m] = (method_command(m, paths, join, out, args), out)
        pairs = [f"{k}={v}" for k, v in paths.items()]
        commands["anndata.concat_on_disk->zarr"] = (
            [sys.executable, "-c", ANNDATA_ON_DISK, str(workdir / "ad.zarr"), join, *pairs],
            workdir / "ad.zarr",
        )
        commands["kbagg:t1 (h5ad, none)"] = (
            method_command("kbagg:t1", paths, join, workdir / "out.h5ad", args),
            workdir / "out.h5ad",
        )
        measure_and_print(
            f"### zarr output, layout {args.zarr_layout}, {join} join: {len(paths)} files, "
            f"{mb:,.0f} MB of input",
            commands,
            args.repeats,
            ["anndata.concat_on_disk->zarr"],
            list(paths.values()),
        )


def suite_gene_major(args, workdir: Path) -> None:
    paths = inputs_for(args, workdir, "same")
    agg = workdir / "agg.h5ad"
    run_child(method_command("kbagg:t2", paths, "inner", agg, args))
    mb = size_mb([agg])
    out = workdir / "gm.h5ad"
    commands = {
        f"kbagg gene-major t{t}": (
            [sys.executable, "-c", GENE_MAJOR, str(agg), str(out), "none", t],
            out,
        )
        for t in args.threads.split(",")
    }
    commands["anndata read + tocsc + write"] = (
        [sys.executable, "-c", GENE_MAJOR_ANNDATA, str(agg), str(out)],
        out,
    )
    measure_and_print(
        f"### gene-major copy of a {mb:,.0f} MB CSR aggregate",
        commands,
        args.repeats,
        ["anndata read + tocsc + write"],
        [agg],
    )
    run_child([sys.executable, "-c", GENE_MAJOR, str(agg), str(out), "none", "2"])
    print("\n| read 10 genes, backed | CSR aggregate s | gene-major s |\n|---|---:|---:|")
    for _ in range(args.repeats):
        times = [
            subprocess.run(
                [sys.executable, "-c", READ_GENES, str(p), "10"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            for p in (agg, out)
        ]
        print(f"| run | {times[0]} | {times[1]} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--suite", choices=("layouts", "compression", "zarr", "gene-major"), default="layouts"
    )
    p.add_argument("--layout", default="all", help=f"one or more of {','.join(LAYOUTS)}, or all")
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--cells", type=int, default=2000)
    p.add_argument("--genes", type=int, default=5000)
    p.add_argument("--nnz-per-cell", type=int, default=500)
    p.add_argument("--join", choices=("inner", "outer", "both"), default="inner")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", default="1,2", help="engine thread counts to run, e.g. 1,2,4")
    p.add_argument("--levels", default="1,4,6", help="gzip levels (compression suite)")
    p.add_argument("--isal-levels", default="1", help="ISA-L levels (compression suite)")
    p.add_argument("--zarr-layout", default="same", choices=LAYOUTS[:3])
    p.add_argument("--with-in-memory", action="store_true", help="also run anndata.concat")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    p.add_argument(
        "--inputs",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep generated inputs under DIR and reuse them in later runs of the same sizes",
    )
    p.add_argument("--chunk-entries", type=int, default=None, help="engine budget")
    args = p.parse_args(argv)
    if args.workdir is not None:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench_concat_", dir=args.workdir))
    print(
        f"# {args.suite}: {args.files} files x {args.cells} cells x {args.genes} genes, "
        f"{args.nnz_per_cell} nnz/cell, {args.repeats} interleaved rounds, "
        f"{os.cpu_count()} CPUs, load average {load()}"
    )
    try:
        {
            "layouts": suite_layouts,
            "compression": suite_compression,
            "zarr": suite_zarr,
            "gene-major": suite_gene_major,
        }[args.suite](args, workdir)
    finally:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark: prepare the 10x barcode on-list once and pass `kb count -w`, vs letting kb copy
(decompress) its bundled on-list into every sample's output folder.

    python tests/benchmarks/bench_onlist.py                     # 2 samples, ~3 minutes
    python tests/benchmarks/bench_onlist.py --repeats 3         # docs/benchmarks.md, ~7 min
    python tests/benchmarks/bench_onlist.py --samples 4 --workdir /tmp/bench_onlist --keep

Uses the real 10x v3 PBMC libraries and the human MT reference from ../shared/testdata
(the reference is built with `kb ref` in the work folder first, not timed in the table).
Sample i is PBMC library i mod 2. For each sample, `kb count` runs with the workflow's own
arguments (see kbagg.count.kb_count.kb_count_args), once without `-w` and once with `-w <prepared
on-list>`; the one-off preparation is `kbagg.kb.technology.write_onlist('10xv3', ...)`, as the
workflow's `onlist` rule runs it. Each call is a fresh child process, timed by wall clock; disk is what
each sample's kb folder holds afterwards (allocated blocks, like `du`). With --repeats R each
call runs R times and its median wall time counts. The copy step itself is also read from
kb's log (time from "Copying pre-packaged" to the next step), which is free of the run-to-run
noise of a whole `kb count`. Both modes must give the same matrices, which is checked.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO.parent / "shared" / "testdata"
PBMC = TESTDATA / "human_pbmc_cellplex_10xv3"
LIBRARIES = [
    (PBMC / "PBMC1_S2_L001_R1_001.fastq.gz", PBMC / "PBMC1_S2_L001_R2_001.fastq.gz"),
    (PBMC / "PBMC2_S1_L001_R1_001.fastq.gz", PBMC / "PBMC2_S1_L001_R2_001.fastq.gz"),
]
MT = TESTDATA / "human_mt"
KB = (
    str(Path(sys.executable).with_name("kb"))
    if Path(sys.executable).with_name("kb").exists()
    else "kb"
)


def run(command: list[str], log: Path) -> float:
    """Run a child process, its output to `log`; return its wall time in seconds."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - start
    text = log.read_text()
    if proc.returncode != 0 or "An exception occurred" in text:
        sys.exit(f"failed ({proc.returncode}): {' '.join(command)}\n{text[-3000:]}")
    return elapsed


def disk_mb(folder: Path) -> float:
    """Allocated size of a folder in MB, like `du -s`."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total / 1e6


def count_command(
    ref: Path, outdir: Path, fastqs, threads: int, memory: str, onlist: Path | None
) -> list[str]:
    """`kb count` as the workflow's kb_count rule calls it (kbagg.count.kb_count.kb_count_args)."""
    command = [KB, "count", "-i", str(ref / "index.idx"), "-g", str(ref / "t2g.txt")]
    command += ["-x", "10xv3", "-o", str(outdir), "--tmp", str(outdir / "tmp")]
    command += ["-t", str(threads), "-m", memory, "--h5ad", "--overwrite"]
    if onlist is not None:
        command += ["-w", str(onlist)]
    return [*command, "--filter", "bustools", *map(str, fastqs)]


def copy_step_seconds(log: Path) -> float | None:
    """Seconds kb spent copying its on-list, from the timestamps of its log lines."""
    stamps = []
    for line in log.read_text().splitlines():
        m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]", line)
        if m:
            t = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000
            stamps.append((t, line))
    for (t, line), (t_next, _) in zip(stamps, stamps[1:], strict=False):
        if "Copying pre-packaged" in line:
            return t_next - t
    return None


def same_matrix(a: Path, b: Path) -> bool:
    x, y = ad.read_h5ad(a), ad.read_h5ad(b)
    return (
        x.shape == y.shape
        and list(x.obs_names) == list(y.obs_names)
        and list(x.var_names) == list(y.var_names)
        and (x.X != y.X).nnz == 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2, help="samples (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="kb count -t (default 2)")
    parser.add_argument("--memory", default="1000M", help="kb count -m (default 1000M)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per call; median counts")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if not PBMC.is_dir() or not MT.is_dir():
        sys.exit(f"real test data not found at {TESTDATA}")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_onlist-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        ref = workdir / "ref"
        shutil.rmtree(ref, ignore_errors=True)
        ref.mkdir()
        ref_s = run(
            [
                KB,
                "ref",
                "-i",
                str(ref / "index.idx"),
                "-g",
                str(ref / "t2g.txt"),
                "-f1",
                str(ref / "cdna.fa"),
                "--tmp",
                str(ref / "tmp"),
                str(MT / "MT.fa.gz"),
                str(MT / "MT.gtf.gz"),
            ],
            workdir / "ref.log",
        )
        onlist = workdir / "onlists" / "10xv3.txt"
        onlist.unlink(missing_ok=True)
        prep_s = run(
            [
                sys.executable,
                "-c",
                "import sys; from kbagg.kb.technology import write_onlist; "
                "write_onlist('10xv3', sys.argv[1])",
                str(onlist),
            ],
            workdir / "onlist.log",
        )
        onlist_mb = onlist.stat().st_size / 1e6
        print(
            f"kb ref (human MT): {ref_s:.1f} s; on-list prepared once: {prep_s:.2f} s, "
            f"{onlist_mb:.0f} MB",
            file=sys.stderr,
        )

        times = {"copy": [], "w": []}
        disks = {"copy": [], "w": []}
        copy_steps = []
        for i in range(args.samples):
            fastqs = LIBRARIES[i % len(LIBRARIES)]
            runs = {"copy": [], "w": []}
            for r in range(args.repeats):
                # Alternate which mode goes first so neither always runs on a warm cache.
                for mode in ("copy", "w") if (i + r) % 2 == 0 else ("w", "copy"):
                    outdir = workdir / mode / f"s{i}"
                    shutil.rmtree(outdir, ignore_errors=True)
                    outdir.mkdir(parents=True)
                    command = count_command(
                        ref,
                        outdir,
                        fastqs,
                        args.threads,
                        args.memory,
                        onlist if mode == "w" else None,
                    )
                    log = workdir / f"count_{mode}_s{i}_r{r}.log"
                    runs[mode].append(run(command, log))
                    if mode == "copy":
                        copy_steps.append(copy_step_seconds(log))
                    print(
                        f"sample {i} ({fastqs[0].name.split('_')[0]}) run {r + 1}, "
                        f"{'-w' if mode == 'w' else 'no -w'}: {runs[mode][-1]:.1f} s, "
                        f"{disk_mb(outdir):.1f} MB",
                        file=sys.stderr,
                    )
            for mode in runs:
                times[mode].append(statistics.median(runs[mode]))
                disks[mode].append(disk_mb(workdir / mode / f"s{i}"))
            for kind in ("counts_unfiltered", "counts_filtered"):
                a = workdir / "copy" / f"s{i}" / kind / "adata.h5ad"
                b = workdir / "w" / f"s{i}" / kind / "adata.h5ad"
                if not same_matrix(a, b):
                    sys.exit(f"sample {i}: {kind} differs between the two modes")
            copied = workdir / "copy" / f"s{i}" / "10x_version3_whitelist.txt"
            if copied.exists() and not filecmp.cmp(copied, onlist, shallow=False):
                sys.exit(f"sample {i}: kb's copied on-list differs from the prepared one")

        n = args.samples
        copy_total, w_total = sum(times["copy"]), sum(times["w"])
        copy_disk, w_disk = float(np.mean(disks["copy"])), float(np.mean(disks["w"]))
        rows = [
            ("kb copies its on-list (no `-w`)", copy_total, copy_total / n, copy_disk, "-"),
            (
                "prepared once + `-w` (incl. preparation)",
                w_total + prep_s,
                (w_total + prep_s) / n,
                w_disk,
                f"{onlist_mb:.0f} MB once",
            ),
        ]
        print(
            f"\n{n} samples (10x v3 PBMC, 10k read pairs each, human MT reference), "
            f"kb count -t {args.threads} -m {args.memory}, kb-python "
            f"{kb_version()}, median of {args.repeats} run(s) per call; on-list preparation "
            f"{prep_s:.2f} s\n"
        )
        print(
            "| mode | wall total (s) | wall per sample (s) | disk per sample folder (MB) "
            "| shared on-list |"
        )
        print("|---|---:|---:|---:|---:|")
        for name, total, per, disk, shared in rows:
            print(f"| {name} | {total:.1f} | {per:.1f} | {disk:.2f} | {shared} |")
        print(
            f"| ratio (no `-w` / `-w`) | {copy_total / (w_total + prep_s):.2f}x "
            f"| {copy_total / (w_total + prep_s):.2f}x | {copy_disk / w_disk:.0f}x | |"
        )
        steps = [c for c in copy_steps if c is not None]
        if steps:
            print(
                f"\nkb's own on-list copy step (from its log), per sample: median "
                f"{statistics.median(steps):.2f} s (min {min(steps):.2f}, max {max(steps):.2f})"
            )
        print(
            f"per-sample kb count alone: no -w {', '.join(f'{t:.1f}' for t in times['copy'])}"
            f" s; -w {', '.join(f'{t:.1f}' for t in times['w'])} s"
        )
        print(
            f"disk for {n} samples: no -w {copy_disk * n:.0f} MB; "
            f"-w {w_disk * n + onlist_mb:.0f} MB (incl. the shared on-list)"
        )
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not args.keep:
            for sub in ("copy", "w", "ref", "onlists"):
                shutil.rmtree(workdir / sub, ignore_errors=True)


def kb_version() -> str:
    from importlib.metadata import version

    return version("kb-python")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark: CPU time of the FASTQ pair check (kbagg.count.fastq_check) next to `kb count`
on the same 10x v3 lane, with ISA-L and with the standard library's zlib.

    python tests/benchmarks/bench_fastq_check.py                  # 1M read pairs, ~4 min idle
    python tests/benchmarks/bench_fastq_check.py --pairs 4000000  # the bigger run, ~10 min idle
    python tests/benchmarks/bench_fastq_check.py --workdir /tmp/bench_fq  # kept; inputs reused

Inputs: the two real 10x v3 PBMC libraries of ../shared/testdata (20,000 read pairs) repeated
to --pairs read pairs, each copy's read names suffixed (":<copy>") so names stay unique,
written with gzip level 4 (bcl2fastq's default). `kb count -x 10xv3 -t 2 -m 1G --h5ad` runs
with an index built by `kb ref` from the human MT genome and the 10x v3 on-list decompressed
once and passed with `-w` (neither step is timed). Each call is a fresh child process; its
CPU time (user + sys) and peak RSS come from os.wait4, which include the children it waited
for (kallisto and bustools for kb; ru_maxrss is the largest single process). The check's
child also reports the time spent inside check_lane (without interpreter start and imports).
The calls are interleaved, the order rotating each repeat (each check runs --check-repeats
times per kb count run, since it is cheap and its figures are noisier); medians are shown.
The check must report exactly --pairs reads. Prints a markdown table; ratios are against
`kb count` in the same run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO.parent / "shared" / "testdata"
PBMC = TESTDATA / "human_pbmc_cellplex_10xv3"
LIBRARIES = ["PBMC1_S2_L001", "PBMC2_S1_L001"]
MT = TESTDATA / "human_mt"
KB = (
    str(Path(sys.executable).with_name("kb"))
    if Path(sys.executable).with_name("kb").exists()
    else "kb"
)

CHECK_CHILD = """
import json, sys, time
from kbagg.count.fastq_check import check_lane
start = time.process_time()
record = check_lane(sys.argv[1], sys.argv[2], min_lengths=(28, 0), inflate=sys.argv[3])
print(json.dumps({"reads": record.reads, "check_cpu_s": time.process_time() - start}))
"""


def build_lane(workdir: Path, pairs: int) -> tuple[Path, Path]:
    """R1/R2 of `pairs` read pairs: the real PBMC reads repeated, names made unique."""
    paths = tuple(workdir / f"bench{pairs}_S1_L001_{r}_001.fastq.gz" for r in ("R1", "R2"))
    if all(p.exists() for p in paths):
        return paths
    for read, path in zip(("R1", "R2"), paths, strict=True):
        source = []
        for library in LIBRARIES:
            with gzip.open(PBMC / f"{library}_{read}_001.fastq.gz", "rb") as handle:
                lines = handle.read().split(b"\n")
            source += [lines[i : i + 4] for i in range(0, len(lines) - 1, 4)]
        tmp = path.with_name(path.name + ".tmp")
        with gzip.open(tmp, "wb", compresslevel=4) as out:
            written, copy = 0, 0
            while written < pairs:
                chunk = []
                for header, seq, plus, qual in source[: pairs - written]:
                    name, _, comment = header.partition(b" ")
                    chunk.append(b"%s:%d %s\n%s\n%s\n%s\n" % (name, copy, comment, seq, plus, qual))
                out.write(b"".join(chunk))
                written += len(chunk)
                copy += 1
        tmp.rename(path)
    return paths


# Forks the command from this small interpreter, so the child's ru_maxrss is its own (a child
# forked from the benchmark itself would inherit the benchmark's peak; see concat_helpers).
TRAMPOLINE = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}, out)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_child(command: list[str], log: Path, env: dict | None = None) -> dict:
    """Run a child process; its wall time, and from os.wait4 its CPU time (user + sys, incl.
    its waited-for children) and peak RSS."""
    usage = log.with_suffix(".usage.json")
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(
            [sys.executable, "-c", TRAMPOLINE, str(usage), *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    wall = time.perf_counter() - start
    text = log.read_text()
    if proc.returncode != 0 or "An exception occurred" in text:
        sys.exit(f"failed ({proc.returncode}): {' '.join(command)}\n{text[-3000:]}")
    return {"wall_s": wall, **json.loads(usage.read_text()), "log": text}


def kb_ref(workdir: Path) -> Path:
    ref = workdir / "ref"
    if (ref / "index.idx").exists():
        return ref
    ref.mkdir(parents=True, exist_ok=True)
    command = [KB, "ref", "-i", str(ref / "index.idx"), "-g", str(ref / "t2g.txt")]
    command += ["-f1", str(ref / "cdna.fa"), "--tmp", str(ref / "tmp")]
    run_child([*command, str(MT / "MT.fa.gz"), str(MT / "MT.gtf.gz")], workdir / "ref.log")
    return ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000, help="read pairs (default 1M)")
    parser.add_argument("--repeats", type=int, default=3, help="kb count runs; median counts")
    parser.add_argument(
        "--check-repeats", type=int, default=2, help="check runs per kb count run (default 2)"
    )
    parser.add_argument("--threads", type=int, default=2, help="kb count -t (default 2)")
    parser.add_argument("--memory", default="1G", help="kb count -m (default 1G)")
    parser.add_argument(
        "--workdir", type=Path, help="kept, inputs reused (default: a temporary folder)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if not PBMC.is_dir() or not MT.is_dir():
        sys.exit(f"real test data not found at {TESTDATA}")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_fastq_check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "src"))
    from kbagg.kb.technology import write_onlist

    load_before = os.getloadavg()
    try:
        started = time.perf_counter()
        r1, r2 = build_lane(workdir, args.pairs)
        ref = kb_ref(workdir)
        onlist = workdir / "onlist_10xv3.txt"
        if not onlist.exists():
            write_onlist("10xv3", onlist)
        print(
            f"inputs ready in {time.perf_counter() - started:.0f} s: R1 "
            f"{r1.stat().st_size / 1e6:.0f} MB, R2 {r2.stat().st_size / 1e6:.0f} MB",
            file=sys.stderr,
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p
            ),
        }
        outdir = workdir / "kb_out"
        kb_command = [KB, "count", "-i", str(ref / "index.idx"), "-g", str(ref / "t2g.txt")]
        kb_command += ["-x", "10xv3", "-o", str(outdir), "--tmp", str(outdir / "tmp")]
        kb_command += ["-t", str(args.threads), "-m", args.memory, "--h5ad", "--overwrite"]
        kb_command += ["-w", str(onlist), str(r1), str(r2)]
        calls = {
            "kb count": (kb_command, None),
            "check (isal)": ([sys.executable, "-c", CHECK_CHILD, str(r1), str(r2), "isal"], env),
            "check (zlib)": ([sys.executable, "-c", CHECK_CHILD, str(r1), str(r2), "zlib"], env),
        }
        results: dict[str, list[dict]] = {name: [] for name in calls}
        names = list(calls)
        checks = names[1:]
        for r in range(args.repeats):
            # kb count once, the checks --check-repeats times each; the order rotates.
            order = ["kb count"] + checks * args.check_repeats
            shift = r % len(order)
            for i, name in enumerate(order[shift:] + order[:shift]):
                command, child_env = calls[name]
                if name == "kb count":
                    shutil.rmtree(outdir, ignore_errors=True)
                result = run_child(
                    command,
                    workdir / f"{'_'.join(re.findall(r'[a-z]+', name))}_{r}_{i}.log",
                    child_env,
                )
                if name == "kb count":
                    if not (outdir / "counts_unfiltered" / "adata.h5ad").exists():
                        sys.exit(f"kb count wrote no matrix; see {workdir}")
                else:
                    report = json.loads(result["log"].strip().splitlines()[-1])
                    if report["reads"] != args.pairs:
                        sys.exit(f"{name}: {report['reads']} reads, expected {args.pairs}")
                    result["check_cpu_s"] = report["check_cpu_s"]
                results[name].append(result)
                print(
                    f"repeat {r + 1} {name}: wall {result['wall_s']:.2f} s, cpu "
                    f"{result['cpu_s']:.2f} s, peak RSS {result['rss_mb']:.0f} MB",
                    file=sys.stderr,
                )
        load_after = os.getloadavg()

        def median(name, key):
            values = [res[key] for res in results[name] if key in res]
            return statistics.median(values) if values else None

        anchor_cpu, anchor_wall = median("kb count", "cpu_s"), median("kb count", "wall_s")
        print(
            f"\n{args.pairs:,} read pairs (10x v3 PBMC reads repeated; R1 "
            f"{r1.stat().st_size / 1e6:.0f} MB + R2 {r2.stat().st_size / 1e6:.0f} MB gzip), "
            f"kb count -x 10xv3 -t {args.threads} -m {args.memory} --h5ad -w (human MT index), "
            f"median of {args.repeats} (kb) and {args.repeats * args.check_repeats} (checks) "
            f"interleaved runs; load average {load_before[0]:.2f} before, "
            f"{load_after[0]:.2f} after\n"
        )
        print(
            "| call | CPU (s) | CPU / kb count | wall (s) | wall / kb count | peak RSS (MB) "
            "| CPU inside check_lane (s) | reads/s (CPU) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name in names:
            cpu, wall, rss = median(name, "cpu_s"), median(name, "wall_s"), median(name, "rss_mb")
            inside = median(name, "check_cpu_s")
            print(
                f"| {name} | {cpu:.2f} | {cpu / anchor_cpu:.3f} | {wall:.2f} | "
                f"{wall / anchor_wall:.3f} | {rss:.0f} | "
                f"{'-' if inside is None else f'{inside:.2f}'} | "
                f"{'-' if inside is None else f'{args.pairs / inside / 1e6:.2f} M'} |"
            )
        isal, stdlib = median("check (isal)", "cpu_s"), median("check (zlib)", "cpu_s")
        print(f"\nzlib / isal CPU: {stdlib / isal:.2f}x")
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

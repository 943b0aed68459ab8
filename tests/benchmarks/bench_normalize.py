#!/usr/bin/env python
"""Depth normalization (`aggregate.normalize: mapped`): kbagg's steps against the anchor
`bustools count` of the same BUS file (the count kb itself runs for the raw matrix), on a
simulated sample.

    PYTHONPATH=src python tests/benchmarks/bench_normalize.py --workdir /tmp/bench_norm --cells 10000 --umis 1400 --repeats 3

Data (written once into WORKDIR, not timed): --cells called cells with --umis molecules
each, reads per molecule drawn as in tests/test_normalize.py (mean 2.10 reads per UMI, the
52.4% sequencing saturation of 10x's 5k_pbmc_protein_v3), a quarter of the molecules split
over two equivalence classes of one gene, 2,000 genes; sorted like kb's output.unfiltered.bus.

Steps, each a fresh child process, interleaved, order rotating per repeat; medians reported:
* anchor: `bustools count --genecounts --umi-gene` of the whole BUS file;
* rates: `kbagg.normalize.thin.mapped_reads_per_cell` (rule normalize_rates' pass over it);
* normalize: `kbagg.normalize.thin.normalize_sample` at rate 0.5 (thin, write, recount).
Wall time by the clock, peak RSS from os.wait4 (the parent holds no data).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

GENERATE = r"""
import sys, json, numpy as np
from pathlib import Path
sys.path.insert(0, sys.argv[4])
sys.path.insert(0, sys.argv[5])
import test_normalize as t
t.GENES = int(sys.argv[3])
from kbagg.normalize.bus import decode_sequences
work = Path(sys.argv[1]); work.mkdir(parents=True, exist_ok=True)
cells, umis = map(int, sys.argv[2].split("x"))
rng = np.random.default_rng(0)
kb, barcodes, (cell, gene, reads) = t._kb_dir(work, rng, cells, umis)
(work / "barcodes.txt").write_text("\n".join(barcodes) + "\n")
(work / "genes.txt").write_text("\n".join(f"G{g}" for g in range(t.GENES)) + "\n")
print(json.dumps({"cells": len(barcodes), "molecules": int(len(reads)), "reads": int(reads.sum()),
                  "bus_mb": (kb / "output.unfiltered.bus").stat().st_size / 1e6}))
"""

RATES = r"""
import sys
from pathlib import Path
from kbagg.normalize.bus import read_header
from kbagg.normalize.thin import called_barcodes, mapped_reads_per_cell
work = Path(sys.argv[1]); bus = work / "kb" / "output.unfiltered.bus"
names = (work / "barcodes.txt").read_text().split()
print(mapped_reads_per_cell(bus, called_barcodes("s", names, read_header(bus).barcode_length)).sum())
"""

NORMALIZE = r"""
import sys, json
from pathlib import Path
from kb_python.config import get_bustools_binary_path
from kbagg.normalize.thin import normalize_sample
work = Path(sys.argv[1])
r = normalize_sample("s", work / "kb", work / "t2g.txt", json.loads((work / "kb" / "kb_info.json").read_text()),
    (work / "barcodes.txt").read_text().split(), (work / "genes.txt").read_text().split(),
    0.5, 0, get_bustools_binary_path(), workdir=work)
print(r.counts.sum())
"""


def run(command: list[str], env: dict) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    assert os.waitstatus_to_exitcode(status) == 0, command
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--cells", type=int, default=10000)
    parser.add_argument("--umis", type=int, default=1400)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    tests = Path(__file__).resolve().parents[1]
    work = args.workdir
    if not (work / "kb" / "output.unfiltered.bus").exists():
        size = f"{args.cells}x{args.umis}"
        gen = [sys.executable, "-c", GENERATE, str(work), size, str(args.genes), str(tests)]
        subprocess.run([*gen, str(SRC)], env=env, check=True)
    # asked of a child: the parent stays small, so children's ru_maxrss is their own
    bustools = subprocess.run(
        [
            sys.executable,
            "-c",
            "from kb_python.config import get_bustools_binary_path as g; print(g())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    kb = work / "kb"
    anchor = [bustools, "count", "-o", str(work / "anchor"), "-g"]
    anchor += [str(work / "t2g.txt"), "-e", str(kb / "matrix.ec"), "-t"]
    anchor += [str(kb / "transcripts.txt"), "--genecounts", "--umi-gene"]
    anchor += [str(kb / "output.unfiltered.bus")]
    steps = {
        "anchor": anchor,
        "rates": [sys.executable, "-c", RATES, str(work)],
        "normalize": [sys.executable, "-c", NORMALIZE, str(work)],
    }
    names = list(steps)
    times = {n: [] for n in names}
    peaks = {n: [] for n in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            seconds, peak = run(steps[name], env)
            times[name].append(seconds)
            peaks[name].append(peak)
    bus_mb = (kb / "output.unfiltered.bus").stat().st_size / 1e6
    print(
        f"BUS file {bus_mb:.0f} MB, {args.cells} cells x {args.umis} UMIs, {args.repeats} repeats"
    )
    print("| step | median s | x anchor | peak RSS MB |")
    print("|---|---|---|---|")
    base = statistics.median(times["anchor"])
    for name in names:
        median = statistics.median(times[name])
        print(f"| {name} | {median:.1f} | {median / base:.2f} | {max(peaks[name]):.0f} |")


if __name__ == "__main__":
    main()

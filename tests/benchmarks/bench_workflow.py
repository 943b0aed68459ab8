#!/usr/bin/env python
"""Benchmark: the whole workflow (`snakemake --cores 2`) against the same work by hand
(`kb ref`, `kb count` per sample, `anndata.concat` + `write_h5ad`), and where the difference
goes.

    python tests/benchmarks/bench_workflow.py --workdir /tmp/bench_wf            # 1 repeat
    python tests/benchmarks/bench_workflow.py --workdir /tmp/bench_wf --repeats 3
    python tests/benchmarks/bench_workflow.py --workdir /tmp/bench_wf --repeats 2 --modes hand lean  # docs/benchmarks.md

Data: the project's simulator (`kbagg.simulate.demo.write_demo`) writes 4 gene-expression
samples (10x v3 and v2 mixed, two of them in 2 lanes), 2,000 genes, the simulator's realistic
droplet model (`HardCells`: --cells cells of 1,400 median UMIs, small cells, ~8% doublets,
6,000 empty droplets), about 1 M read pairs per sample at the default --cells 280. It is
generated once into WORKDIR/data (a few minutes) and reused; nothing is timed there.

Modes, each a fresh child process per step, timed by wall clock, peak RSS by os.wait4 (for
Snakemake: the largest single process of its tree):

* hand: `kb ref` with the reference rule's arguments; `kb count` per sample, one after the
  other, with the arguments the workflow's kb_count rule gave kb (read from its logs: the
  config's threads 2 on --cores 2 make Snakemake run them one at a time with `-t 2`), except
  `-w`: by hand kb uses its own bundled on-list, so the workflow's on-list preparation
  counts as its cost; then `anndata.concat` of kb's filtered matrices (join, label and
  index_unique of the config) and `write_h5ad`.
* lean: the workflow doing the same work: `qc.multiqc: false`, `qc.doublets: false`, no
  feature libraries, no SOMA (QC per sample and the summary still run).
* default: the default config (MultiQC and Scrublet on).

Before the timed runs, one lean run (not timed) warms the page cache and gives the kb
arguments for the hand mode. Modes are interleaved, the order rotating each repeat; every
run starts from the inputs only (the workflow's results, resources, logs, benchmarks and
.snakemake are deleted; so is the on-list). The lean result must equal the hand result
(same cells, genes and counts), which is checked.

Where the time goes, per workflow run: each job's interval comes from its Snakemake
benchmark file (`s`, and the file's mtime as its end). Every moment of the run's wall time is
shared equally among the jobs running then; moments with no job running are Snakemake's own
(start-up before the first job, between jobs, after the last). The per-rule sums add up to
the run's wall time and are set against the hand steps. Separately measured: Python start-up
plus the imports of each rule script (fresh processes, as Snakemake's `script:` runs them:
the preamble unpickles the `snakemake` object), Snakemake's parse and DAG (`-n`), and the
aggregate's provenance (SHA-256 of the inputs and `git describe`).

Prints markdown tables; raw figures go to WORKDIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
KB = str(Path(PYTHON).with_name("kb")) if Path(PYTHON).with_name("kb").exists() else "kb"
SNAKEFILE = REPO / "workflow" / "Snakefile"
WORKFLOW_OUTPUTS = ("results", "resources", "logs", "benchmarks", ".snakemake")
MODES = ("hand", "lean", "default")
# Config keys each workflow mode sets on top of the schema's defaults.
MODE_CONFIG = {
    "lean": {"qc": {"multiqc": False, "doublets": False}},
    "default": {},
}
# Benchmark file folder (or top-level file stem) -> rule name, where they differ.
BENCH_RULE = {"qc": "qc_sample", "qc_summary": "qc_summary", "multiqc": "multiqc"}

CONCAT_CHILD = """
import sys, anndata as ad
out, join, label, index_unique, *pairs = sys.argv[1:]
adatas = {}
for pair in pairs:
    name, path = pair.split("=", 1)
    adatas[name] = ad.read_h5ad(path)
ad.concat(adatas, join=join, label=label, index_unique=index_unique or None).write_h5ad(out)
"""

# As tests/concat_helpers.py's child_peak_rss_mb, plus CPU time: fork+exec from a tiny
# process, so ru_maxrss is the child tree's (its largest process) and not this process's;
# user + system CPU of everything the child waited for (kb's kallisto and bustools too).
# Every 0.2 s it also samples each process of the child's tree from /proc (own CPU, CPU of
# reaped children, parent, command line) and writes them to argv[1] (unless "-"): that
# gives Snakemake's own CPU and each job's.
TRAMPOLINE = """
import json, os, sys, time
tree_out, command = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    os.execv(command[0], command)
tick, seen = os.sysconf("SC_CLK_TCK"), {}

def sample(p):
    try:
        with open(f"/proc/{p}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{p}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\\0", b" ").decode(errors="replace").strip()
        kids = []
        for task in os.listdir(f"/proc/{p}/task"):  # children of every thread
            with open(f"/proc/{p}/task/{task}/children") as f:
                kids += f.read().split()
    except (OSError, IndexError, ValueError):
        return
    own, key = (int(v[11]) + int(v[12])) / tick, f"{p}:{v[19]}"
    cmd = cmd or seen.get(key, {}).get("cmd", "")  # a zombie's command line is empty
    seen[key] = {"pid": p, "ppid": int(v[1]), "cmd": cmd, "own": own,
                 "with_reaped": own + (int(v[13]) + int(v[14])) / tick}
    for kid in kids:
        sample(int(kid))

while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    sample(pid)
    time.sleep(0.2)
if tree_out != "-":
    with open(tree_out, "w") as f:
        json.dump({"root": pid, "processes": list(seen.values())}, f)
cpu = usage.ru_utime + usage.ru_stime
sys.stderr.write(f"\\nCPU_S={cpu} MAXRSS_KB={usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def demo_spec(cells: int):
    """4 gene-expression samples, 10x v3 and v2 mixed, ~1 M read pairs each at cells=280."""
    from kbagg.simulate.spec import DemoSpec, HardCells, SampleSpec

    hard = HardCells(n_small_cells=cells // 10, cell_umis_median=1400.0)
    layout = [("s1", "10xv3", 2), ("s2", "10xv2", 1), ("s3", "10xv3", 1), ("s4", "10xv2", 2)]
    return DemoSpec(
        seed=23,
        n_genes=2000,
        samples=tuple(
            SampleSpec(
                name,
                technology,
                lanes,
                n_cells=cells,
                n_empty=6000,
                metadata={"condition": ("control", "treated")[i % 2], "donor": f"d{i // 2}"},
                hard=hard,
            )
            for i, (name, technology, lanes) in enumerate(layout)
        ),
    )


def make_data(data: Path, cells: int) -> None:
    """Simulate the data set into `data` unless it is there (samples.tsv is written last)."""
    stamp = data / "bench_spec.json"
    if (data / "samples.tsv").exists():
        made = json.loads(stamp.read_text())["cells"] if stamp.exists() else None
        if made != cells:
            sys.exit(f"{data} holds data for --cells {made}; use another --workdir")
        return
    from kbagg.simulate.demo import write_demo

    print(f"simulating 4 samples into {data} (a few minutes) ...", flush=True)
    start = time.perf_counter()
    write_demo(data, demo_spec(cells))
    stamp.write_text(json.dumps({"cells": cells}))
    print(f"simulated in {time.perf_counter() - start:.0f} s", flush=True)


def write_config(workdir: Path, mode: str) -> Path:
    data = workdir / "data"
    config = {
        "samples": str(data / "samples.tsv"),
        "reference": {"fasta": str(data / "genome.fa"), "gtf": str(data / "genes.gtf")},
        **MODE_CONFIG[mode],
    }
    path = workdir / f"{mode}.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def clean(folder: Path, names) -> None:
    for name in names:
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def run_child(command: list[str], log: Path, tree: Path | None = None) -> dict:
    """Run `command` (stdout and stderr to `log`); return its wall and CPU time (s), peak
    RSS (MB) and the epoch times it started and ended; its process tree's samples to `tree`."""
    with open(log, "w") as out:
        started, start = time.time(), time.perf_counter()
        proc = subprocess.run(
            [PYTHON, "-c", TRAMPOLINE, str(tree or "-"), *command], stdout=out, stderr=out
        )
        wall, ended = time.perf_counter() - start, time.time()
    text = log.read_text()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {shlex.join(command)}\n{text[-3000:]}")
    last = "CPU_S=" + text.rsplit("\nCPU_S=", 1)[1]
    figures = dict(item.split("=") for item in last.split())
    return {
        "wall_s": wall,
        "cpu_s": float(figures["CPU_S"]),
        "peak_rss_mb": int(figures["MAXRSS_KB"]) / 1024,
        "started": started,
        "ended": ended,
    }


# --- the workflow -------------------------------------------------------------------------
def run_workflow(workdir: Path, mode: str, tag: str) -> dict:
    rundir = workdir / f"run_{mode}"
    rundir.mkdir(exist_ok=True)
    clean(rundir, WORKFLOW_OUTPUTS)
    command = [PYTHON, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(rundir)]
    command += ["--cores", "2", "--configfile", str(write_config(workdir, mode))]
    tree = workdir / f"tree_{mode}_{tag}.json"
    run = run_child(command, workdir / f"snakemake_{mode}_{tag}.log", tree)
    jobs = read_benchmarks(rundir)
    return {
        **run,
        "cpu": cpu_by_rule(json.loads(tree.read_text())),
        "load": os.getloadavg()[0],
        "jobs": jobs,
        "shares": wall_shares(jobs, run["started"], run["ended"]),
    }


def read_benchmarks(rundir: Path) -> list[dict]:
    """Every job's rule, wall time, CPU time, peak RSS and interval from its benchmark file."""
    jobs = []
    for path in sorted((rundir / "benchmarks").rglob("*.tsv")):
        relative = path.relative_to(rundir / "benchmarks")
        key = relative.parts[0] if len(relative.parts) > 1 else path.stem
        header, values = path.read_text().splitlines()[:2]
        row = dict(zip(header.split("\t"), values.split("\t"), strict=True))
        end = path.stat().st_mtime
        jobs.append(
            {
                "rule": BENCH_RULE.get(key, key),
                "job": str(relative.with_suffix("")),
                "s": float(row["s"]),
                "cpu_time": float(row["cpu_time"]),
                "max_rss": float(row["max_rss"]),
                "start": end - float(row["s"]),
                "end": end,
            }
        )
    return jobs


def cpu_by_rule(tree: dict) -> dict[str, float]:
    """CPU seconds of Snakemake's own process and of each rule's jobs (summed), from the
    samples of the process tree. A process's CPU is the larger of its own plus its reaped
    children's at its last sample and its own plus its sampled children's (a child that
    ended after the parent's last sample still counts)."""
    procs = {f"{p['pid']}:{i}": p for i, p in enumerate(tree["processes"])}
    children: dict[int, list[dict]] = {}
    for p in procs.values():
        children.setdefault(p["ppid"], []).append(p)

    def total(p: dict, depth: int = 0) -> float:
        kids = [] if depth > 50 else children.get(p["pid"], [])
        return max(p["with_reaped"], p["own"] + sum(total(k, depth + 1) for k in kids))

    shares: dict[str, float] = {}
    for p in procs.values():
        if p["pid"] == tree["root"]:
            shares["snakemake process"] = shares.get("snakemake process", 0.0) + p["own"]
            continue
        if Path(p["cmd"].split(" ", 1)[0]).name == "cbc":
            key = "snakemake: ILP scheduler (cbc)"
            shares[key] = shares.get(key, 0.0) + total(p)
            continue
        script = re.search(r"\.snakemake/scripts/tmp\w+\.(\w+)\.py", p["cmd"])
        if script and "python" in p["cmd"].split()[0]:
            rule = script.group(1)
            shares[rule] = shares.get(rule, 0.0) + total(p)
    return shares


def wall_shares(jobs: list[dict], started: float, ended: float) -> dict[str, float]:
    """Split [started, ended] among the jobs running at each moment (equal shares); the
    time with no job running is Snakemake's: start-up, between jobs, and the tail."""
    points = sorted({started, ended, *(j["start"] for j in jobs), *(j["end"] for j in jobs)})
    points = [min(max(p, started), ended) for p in points]
    first = min((j["start"] for j in jobs), default=ended)
    last = max((j["end"] for j in jobs), default=started)
    shares: dict[str, float] = {}
    for a, b in zip(points, points[1:], strict=False):
        if b <= a:
            continue
        running = [j["rule"] for j in jobs if j["start"] < b and j["end"] > a]
        if running:
            for rule in running:
                shares[rule] = shares.get(rule, 0.0) + (b - a) / len(running)
        else:
            key = (
                "snakemake: start-up (parse, DAG)"
                if b <= first
                else "snakemake: after the last job"
                if a >= last
                else "snakemake: between jobs (no job running)"
            )
            shares[key] = shares.get(key, 0.0) + (b - a)
    return shares


# --- by hand ------------------------------------------------------------------------------
def kb_call(log: Path) -> list[str]:
    """The kb arguments a rule ran, from its log line `[label] $ kb ARGS`."""
    for line in log.read_text().splitlines():
        if "] $ kb " in line:
            return shlex.split(line.split("] $ kb ", 1)[1])
    sys.exit(f"{log}: no kb call found")


def replace_options(args: list[str], values: dict[str, str | None]) -> list[str]:
    """`args` with the value of each option in `values` replaced (None: option dropped)."""
    out, i = [], 0
    while i < len(args):
        if args[i] in values:
            if values[args[i]] is not None:
                out += [args[i], values[args[i]]]
            i += 2
        else:
            out.append(args[i])
            i += 1
    return out


def absolute(args: list[str], base: Path) -> list[str]:
    """Relative paths that exist under `base` made absolute (the workflow runs in its dir)."""
    return [str(base / a) if not a.startswith("-") and (base / a).exists() else a for a in args]


def hand_commands(workdir: Path) -> dict:
    """kb ref and kb count commands by hand, from the arguments the lean workflow used."""
    rundir, hand = workdir / "run_lean", workdir / "hand"
    ref = hand / "ref"
    ref_args = kb_call(rundir / "logs" / "reference.log")
    flags = {"-i": "index.idx", "-g": "t2g.txt", "-f1": "cdna.fa", "-f2": "nascent.fa"}
    flags |= {"-c1": "c1.txt", "-c2": "c2.txt"}
    ref_args = replace_options(
        ref_args, {f: str(ref / name) for f, name in flags.items()} | {"--tmp": str(ref / "tmp")}
    )
    counts = {}
    samples = sorted(p.stem for p in (rundir / "logs" / "kb_count").glob("*.log"))
    for sample in samples:
        args = kb_call(rundir / "logs" / "kb_count" / f"{sample}.log")
        out = hand / sample
        args = replace_options(
            args,
            {
                "-i": str(ref / "index.idx"),
                "-g": str(ref / "t2g.txt"),
                "-o": str(out),
                "--tmp": str(out / "tmp"),
                "-w": None,
            },
        )
        counts[sample] = absolute(args, rundir)
    return {
        "ref": absolute(ref_args, rundir),
        "count": counts,
        "aggregate": recorded_config(rundir / "results" / "aggregate" / "filtered.h5ad"),
    }


def recorded_config(h5ad: Path) -> dict:
    """join, label and index_unique as the aggregate recorded them (uns['kbagg']['config'])."""
    import h5py
    from anndata.io import read_elem

    with h5py.File(h5ad, "r") as f:
        config = read_elem(f["uns/kbagg/config/aggregate"])
    return {k: config[k] for k in ("join", "label", "index_unique")}


def run_hand(workdir: Path, commands: dict, tag: str) -> dict:
    hand = workdir / "hand"
    clean(workdir, ["hand"])
    hand.mkdir()
    steps = {}
    steps["kb ref"] = run_child([KB, *commands["ref"]], hand / "kb_ref.log")
    for sample, args in commands["count"].items():
        steps[f"kb count {sample}"] = run_child([KB, *args], hand / f"kb_count_{sample}.log")
    agg = commands["aggregate"]
    pairs = [f"{s}={hand / s / 'counts_filtered' / 'adata.h5ad'}" for s in commands["count"]]
    steps["anndata.concat + write_h5ad"] = run_child(
        [PYTHON, "-c", CONCAT_CHILD, str(hand / "aggregate.h5ad"), agg["join"], agg["label"]]
        + [agg["index_unique"] or "", *pairs],
        hand / "concat.log",
    )
    return {
        "wall_s": sum(s["wall_s"] for s in steps.values()),
        "cpu_s": sum(s["cpu_s"] for s in steps.values()),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in steps.values()),
        "load": os.getloadavg()[0],
        "steps": steps,
    }


# --- separately measured costs ------------------------------------------------------------
# What Snakemake's script preamble imports (unpickling the `snakemake` object: snakemake.io).
SCRIPT_PREAMBLE = [
    "import pickle",
    "import snakemake.io",
    "from snakemake.logging import logger",
    "from snakemake.iocontainers import Snakemake",
]


def script_imports(rule: str) -> str:
    """What a rule's job runs before its work: Snakemake's script preamble (unpickling the
    `snakemake` object imports snakemake.io) and the script's top-level imports."""
    import ast

    tree = ast.parse((REPO / "scripts" / f"{rule}.py").read_text())
    imports = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    return "\n".join(SCRIPT_PREAMBLE + [i for i in imports if "__future__" not in i])


def startup_seconds(code: str, repeats: int) -> dict[str, float]:
    """Median wall and CPU time of a fresh `python -c CODE` (start-up + imports)."""
    walls, cpus = [], []
    for _ in range(repeats):
        start, before = time.perf_counter(), os.times()
        subprocess.run([PYTHON, "-c", code], check=True)
        after = os.times()
        walls.append(time.perf_counter() - start)
        cpus.append(
            after.children_user
            + after.children_system
            - before.children_user
            - before.children_system
        )
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


def dry_run_seconds(workdir: Path, repeats: int) -> float:
    """Median wall time of `snakemake -n` (parse the workflow, the sheet, build the DAG)."""
    rundir = workdir / "run_dry"
    walls = []
    for _ in range(repeats):
        rundir.mkdir(exist_ok=True)
        clean(rundir, WORKFLOW_OUTPUTS)
        command = [PYTHON, "-m", "snakemake", "-n", "-s", str(SNAKEFILE), "-d", str(rundir)]
        command += ["--cores", "2", "--configfile", str(write_config(workdir, "lean"))]
        walls.append(run_child(command, workdir / "snakemake_dry.log")["wall_s"])
    return statistics.median(walls)


PROVENANCE_CHILD = """
import json, sys, time
from pathlib import Path
start = time.perf_counter()
from kbagg.aggregate.provenance import collect, file_record, workflow_version
imported = time.perf_counter()
rundir, samples = Path(sys.argv[1]), sys.argv[2:]
matrices = {s: rundir / f"results/samples/{s}/filtered.h5ad" for s in samples}
kb_infos = {s: rundir / f"results/samples/{s}/kb/kb_info.json" for s in samples}
t0 = time.perf_counter(); [file_record(p) for p in matrices.values()]
t1 = time.perf_counter(); workflow_version()
t2 = time.perf_counter(); collect(matrices, {}, {}, kb_infos)
t3 = time.perf_counter()
print(json.dumps({"import_s": imported - start, "sha256_s": t1 - t0, "git_describe_s": t2 - t1,
                  "collect_s": t3 - t2}))
"""


def provenance_seconds(rundir: Path, samples: list[str]) -> dict:
    out = subprocess.run(
        [PYTHON, "-c", PROVENANCE_CHILD, str(rundir), *samples],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


def check_same_result(workdir: Path) -> str:
    """The lean workflow's aggregate and the hand one hold the same cells, genes and counts."""
    import anndata as ad
    import numpy as np

    workflow = ad.read_h5ad(workdir / "run_lean" / "results" / "aggregate" / "filtered.h5ad")
    hand = ad.read_h5ad(workdir / "hand" / "aggregate.h5ad")
    if set(workflow.obs_names) != set(hand.obs_names) or set(workflow.var_names) != set(
        hand.var_names
    ):
        sys.exit("the lean workflow's aggregate and the hand one differ in cells or genes")
    hand = hand[workflow.obs_names, workflow.var_names]
    if not np.array_equal(workflow.X.toarray(), hand.X.toarray()):
        sys.exit("the lean workflow's aggregate and the hand one differ in counts")
    return f"{workflow.n_obs:,} cells x {workflow.n_vars:,} genes, equal counts"


# --- tables -------------------------------------------------------------------------------
def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else 0.0


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


SNAKEMAKE_ROWS = (
    "snakemake: start-up (parse, DAG)",
    "snakemake: between jobs (no job running)",
    "snakemake: after the last job",
)
HAND_OF_RULE = {"reference": "kb ref", "kb_count": "kb count", "aggregate": "anndata.concat"}


def hand_share(hand_runs: list[dict], rule: str, key: str = "wall_s") -> float:
    """The hand steps' median wall (or CPU) time that corresponds to a workflow rule."""
    prefix = HAND_OF_RULE.get(rule)
    if prefix is None:
        return 0.0
    return median(
        sum(s[key] for name, s in run["steps"].items() if name.startswith(prefix))
        for run in hand_runs
    )


def print_part_table(parts, flows, runs, hand, total_key: str, value_of) -> None:
    """One row per part: the hand run's share, then each workflow mode's median and its
    difference from hand; the last row is the runs' `total_key` (wall_s or cpu_s)."""
    print("| part | hand (s) |" + "".join(f" {m} (s) | {m} - hand (s) |" for m in flows))
    print("|---|---:|" + "---:|---:|" * len(flows))
    for part in [*parts, None]:
        h = hand_share(hand, part, total_key) if part else median(r[total_key] for r in hand)
        cells = ""
        for mode in flows:
            if part:
                w = median(value_of(r, part) for r in runs[mode])
            else:
                w = median(r[total_key] for r in runs[mode])
            cells += f" {fmt(w)} | {fmt(w - h):>6} |"
        print(f"| {part or '**total**'} | {fmt(h)} |{cells}")


def print_tables(results: dict) -> None:
    runs = results["runs"]
    hand = runs.get("hand", [])
    flows = [m for m in ("lean", "default") if runs.get(m)]
    hand_wall = median(r["wall_s"] for r in hand)

    hand_cpu = median(r["cpu_s"] for r in hand)
    print("\n## Whole run: wall and CPU time, ratios against by hand, peak RSS\n")
    print(
        "CPU: user + system of the whole process tree (kallisto and bustools included), less"
        " sensitive to the machine's other load than wall time; of it, Snakemake's own"
        " process (parse, DAG, scheduling, job bookkeeping; sampled every 0.2 s).\n"
    )
    print(
        "| mode | runs | wall (s), median | min-max (s) | wall ratio to hand | CPU (s) |"
        " CPU ratio to hand | Snakemake process CPU (s) | peak RSS (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode in ("hand", *flows):
        mode_runs = runs.get(mode, [])
        if not mode_runs:
            continue
        walls = [r["wall_s"] for r in mode_runs]
        cpu = median(r["cpu_s"] for r in mode_runs)
        ratio = f"{median(walls) / hand_wall:.2f}x" if hand_wall else "-"
        cpu_ratio = f"{cpu / hand_cpu:.2f}x" if hand_cpu else "-"
        rss = median(r["peak_rss_mb"] for r in mode_runs)
        own = "-"
        if mode != "hand":
            own = fmt(median(r["cpu"].get("snakemake process", 0.0) for r in mode_runs))
        print(
            f"| {mode} | {len(walls)} | {fmt(median(walls))} | {fmt(min(walls))}-{fmt(max(walls))}"
            f" | {ratio} | {fmt(cpu)} | {cpu_ratio} | {own} | {fmt(rss, 0)} |"
        )

    if hand:
        print("\n## By hand, per step (median)\n")
        print("| step | wall (s) | CPU (s) | peak RSS (MB) |")
        print("|---|---:|---:|---:|")
        for name in hand[0]["steps"]:
            wall = median(r["steps"][name]["wall_s"] for r in hand)
            cpu = median(r["steps"][name]["cpu_s"] for r in hand)
            rss = median(r["steps"][name]["peak_rss_mb"] for r in hand)
            print(f"| {name} | {fmt(wall)} | {fmt(cpu)} | {fmt(rss, 0)} |")

    if not flows:
        return
    rules = []
    for mode in flows:
        for run in runs[mode]:
            rules += [k for k in run["shares"] if k not in rules and k not in SNAKEMAKE_ROWS]
    order = ["reference", "onlist", "fastq_check", "kb_count", "cells", "qc_sample"]
    order += ["qc_summary", "multiqc", "aggregate"]
    rules = sorted(rules, key=lambda r: order.index(r) if r in order else len(order))
    print("\n## Where the wall time goes (median share of each run's wall time, s)\n")
    print(
        "Each moment is shared equally among the jobs running then; time with no job running"
        " is Snakemake's own. The hand column is the matching hand step.\n"
    )

    def wall_of(run: dict, part: str) -> float:
        return run["shares"].get(part, 0.0)

    print_part_table([*rules, *SNAKEMAKE_ROWS], flows, runs, hand, "wall_s", wall_of)

    print("\n## Where the CPU time goes (median, s)\n")
    print(
        "Each job's CPU: its script's Python process with everything it waited for (kb,"
        " kallisto, bustools), from /proc samples every 0.2 s; 'other' is the rest of the"
        " run's CPU (shell wrappers, processes shorter than a sample).\n"
    )

    def cpu_of(run: dict, part: str) -> float:
        if part == "other":
            return run["cpu_s"] - sum(run["cpu"].values())
        return run["cpu"].get(part, 0.0)

    cpu_parts = [*rules, "snakemake process", "snakemake: ILP scheduler (cbc)", "other"]
    print_part_table(cpu_parts, flows, runs, hand, "cpu_s", cpu_of)

    print("\n## Jobs: count, wall and CPU per job, start-up + imports per job (medians)\n")
    print(
        "Wall per job from Snakemake's benchmark files, CPU per job from the process samples;"
        " peak RSS from the benchmark files (sampled: misses kb's short-lived bustools);"
        " start-up + imports: CPU of a fresh Python running the rule script's preamble and"
        " imports and nothing else.\n"
    )
    startup = results.get("startup", {})
    print(
        "| rule | mode | jobs | wall per job (s) | CPU per job (s) | peak RSS per job (MB)"
        " | start-up + imports CPU per job (s) | share of the job's CPU |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for mode in flows:
        for rule in rules:
            jobs = [[j for j in r["jobs"] if j["rule"] == rule] for r in runs[mode]]
            if not jobs[0]:
                continue
            wall = median(j["s"] for js in jobs for j in js)
            per_run = zip(runs[mode], jobs, strict=True)
            cpu = median(r["cpu"].get(rule, 0.0) / len(js) for r, js in per_run)
            rss = median(j["max_rss"] for js in jobs for j in js)
            start = startup.get(rule, {}).get("cpu_s")
            start_text = fmt(start, 2) if start is not None else "-"
            share = f"{100 * start / cpu:.0f}%" if start is not None and cpu else "-"
            print(
                f"| {rule} | {mode} | {len(jobs[0])} | {fmt(wall, 2)} | {fmt(cpu, 2)} | "
                f"{fmt(rss, 0)} | {start_text} | {share} |"
            )
    if startup:
        print(
            f"\nFresh `python -c pass`: {fmt(startup['python']['cpu_s'], 2)} s CPU"
            f" ({fmt(startup['python']['wall_s'], 2)} s wall); `import anndata`:"
            f" {fmt(startup['anndata']['cpu_s'], 2)} s CPU ({fmt(startup['anndata']['wall_s'], 2)}"
            " s wall); Snakemake's script preamble: "
            f"{fmt(startup['preamble']['cpu_s'], 2)} s CPU."
        )
    if "dry_run_s" in results:
        print(f"`snakemake -n` (parse, sheet, DAG): {fmt(results['dry_run_s'], 2)} s.")
    if "provenance" in results:
        p = results["provenance"]
        print(
            f"Provenance in the aggregate: SHA-256 of the inputs {fmt(p['sha256_s'], 3)} s,"
            f" git describe {fmt(p['git_describe_s'], 3)} s, all of collect()"
            f" {fmt(p['collect_s'], 3)} s (its imports {fmt(p['import_s'], 2)} s)."
        )
    if "same_result" in results:
        print(f"Lean workflow aggregate vs hand: {results['same_result']}.")


# --- main ---------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_workflow"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cells", type=int, default=280, help="normal cells per sample")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--startup-repeats", type=int, default=5)
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the untimed lean run when WORKDIR holds the hand commands of an earlier one",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="print the tables of WORKDIR/results.json"
    )
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    if args.report_only:
        print_tables(json.loads((workdir / "results.json").read_text()))
        return
    workdir.mkdir(parents=True, exist_ok=True)
    # The children import this checkout's kbagg, not another one installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at start: {load}; {os.cpu_count()} CPUs", flush=True)
    make_data(workdir / "data", args.cells)

    saved = workdir / "hand_commands.json"
    if not (args.no_warmup and saved.exists()):
        print("warm-up: one lean workflow run (not timed) ...", flush=True)
        run_workflow(workdir, "lean", "warmup")
        saved.write_text(json.dumps(hand_commands(workdir), indent=1))
    commands = json.loads(saved.read_text())
    print("by hand:\n  kb " + shlex.join(commands["ref"]), flush=True)
    for sample_args in commands["count"].values():
        print("  kb " + shlex.join(sample_args))
    print(f"  anndata.concat({commands['aggregate']}) + write_h5ad", flush=True)

    results = {"runs": {m: [] for m in args.modes}, "loads": []}
    for repeat in range(args.repeats):
        order = args.modes[repeat % len(args.modes) :] + args.modes[: repeat % len(args.modes)]
        for mode in order:
            tag = f"r{repeat}"
            if mode == "hand":
                run = run_hand(workdir, commands, tag)
            else:
                run = run_workflow(workdir, mode, tag)
            results["runs"][mode].append(run)
            results["loads"].append(os.getloadavg())
            (workdir / "results.json").write_text(json.dumps(results, indent=1))
            print(
                f"repeat {repeat + 1}/{args.repeats} {mode}: {run['wall_s']:.1f} s, peak RSS"
                f" {run['peak_rss_mb']:.0f} MB, load {run['load']:.2f}",
                flush=True,
            )

    if "hand" in args.modes and "lean" in args.modes:
        results["same_result"] = check_same_result(workdir)
    if "lean" in args.modes:
        results["provenance"] = provenance_seconds(workdir / "run_lean", list(commands["count"]))
    startup = {
        "python": "pass",
        "anndata": "import anndata",
        "preamble": "\n".join(SCRIPT_PREAMBLE),
        **{r: script_imports(r) for r in ("reference", "onlist", "fastq_check", "kb_count")},
        **{r: script_imports(r) for r in ("cells", "qc_sample", "qc_summary", "multiqc")},
        "aggregate": script_imports("aggregate"),
    }
    results["startup"] = {}
    for name, code in startup.items():
        results["startup"][name] = startup_seconds(code, args.startup_repeats)
    results["dry_run_s"] = dry_run_seconds(workdir, 3)
    (workdir / "results.json").write_text(json.dumps(results, indent=1))
    print_tables(results)
    loads = [x[0] for x in results["loads"]]
    end = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\nload average (1 min) after each run: {min(loads):.2f}-{max(loads):.2f}"
        f" (at the end: {end}); {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()

"""The concat benchmark's suites still run end to end, at a tiny size (their figures are
not checked here: performance is measured by running them, see docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent / "benchmarks" / "bench_concat.py"
TINY = ["--files", "2", "--cells", "200", "--genes", "500", "--nnz-per-cell", "20"]


def run_bench(tmp_path: Path, *args: str) -> str:
    workdir = tmp_path / "work"
    cmd = [sys.executable, str(BENCH), *TINY, "--repeats", "1", "--workdir", str(workdir), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def table_rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("method", "run") and len(cells) > 2:
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_layout_suite_times_every_method(tmp_path):
    out = run_bench(tmp_path, "--layout", "shuffled,csc", "--threads", "2")
    rows = table_rows(out)
    for method in ("cat", "h5py-copy", "kbagg:t2"):
        assert method in rows, out
    assert "anndata.concat_on_disk" in rows and "anndata.concat" in rows, out
    assert float(rows["kbagg:t2"][0]) > 0
    assert out.count("### layout") == 2


@pytest.mark.slow
def test_compression_zarr_and_gene_major_suites_run(tmp_path):
    out = run_bench(
        tmp_path, "--suite", "compression", "--levels", "1", "--isal-levels", "1", "--threads", "2"
    )
    assert "kbagg:t2:gzip:1" in table_rows(out), out
    assert "kbagg gzip:1 vs h5py gzip:1: X/data and X/indices read back identical: True" in out
    assert "first stored chunk byte-identical: True" in out
    out = run_bench(tmp_path, "--suite", "zarr", "--threads", "2")
    assert "kbagg:t2:blosc:1" in table_rows(out), out
    out = run_bench(tmp_path, "--suite", "gene-major", "--threads", "2")
    assert "kbagg gene-major t2" in table_rows(out), out


@pytest.mark.slow
def test_soma_build_benchmark_runs_against_a_baseline_checkout(tmp_path):
    """bench_soma_parallel with --baseline-src (this checkout as its own baseline) and both
    store layouts: every build mode runs and the builds hold the same values, a two_arrays
    store's copy too (the benchmark stops otherwise)."""
    bench = BENCH.parent / "bench_soma_parallel.py"
    src = Path(__file__).parents[1] / "src"
    cmd = [
        sys.executable, str(bench), "--samples", "2", "--cells", "50", "--genes", "300",
        "--nnz-per-cell", "20", "--writers", "1", "--repeats", "1",
        "--baseline-src", str(src), "--workdir", str(tmp_path),
        "--layouts", "gene_query", "two_arrays",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(done.stdout)
    assert {"baseline one-job append", "one-job append", "1 writer job"} <= set(rows), done.stdout
    assert rows["baseline one-job append"][3] == "1.00x"  # wall s, CPU s, cells/s, speed
    assert float(rows["1 writer job"][1]) > 0  # CPU seconds of its three processes
    assert {"one-job append, layout two_arrays", "1 writer job, layout two_arrays"} <= set(rows)


@pytest.mark.slow
def test_soma_open_benchmark_runs_and_merges_the_journal_files_and_schemas(tmp_path):
    """bench_soma_open at a tiny size: the store it leaves as kbagg did before holds the
    journal's 2 files per append (and the creation's), the consolidated one a single file;
    obs's two schema versions per append are kept but in the fully consolidated store."""
    bench = BENCH.parent / "bench_soma_open.py"
    cmd = [
        sys.executable, str(bench), "--samples", "3", "--cells-per-sample", "100",
        "--repeats", "1", "--workdir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    files, times = done.stdout.split("median ms")  # the stores' files, then the timings
    rows = table_rows(files)
    assert rows["arrays consolidated"][0] == "7" and rows["all consolidated"][0] == "1", rows
    assert rows["one step"][0] == "1", done.stdout
    assert rows["schemas kept"][0] == "1", rows
    assert rows["schemas kept"][1] == rows["arrays consolidated"][1] == "6"  # obs schemas
    assert rows["all consolidated"][1] == rows["all consolidated"][2] == "1"  # obs, X
    stores = {"arrays consolidated", "schemas kept", "all consolidated", "one step"}
    assert set(table_rows(times)) >= stores

"""Bounded memory and crash safety of the CLI, on inputs much larger than its budget."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
from concat_helpers import (
    CLI,
    assert_matches_reference,
    child_peak_rss_mb,
    read_quiet,
    reference_concat,
    run_cli,
    write_sparse_h5ad,
)

GENES = [f"ENSG{i:011d}" for i in range(4000)]


@pytest.fixture(scope="module")
def big_inputs(tmp_path_factory):
    """Three ~100 MB inputs (12.5M entries each): CSR on all genes, CSR on a gene subset in
    a different order (forces remapping and sorting), and CSC (forces the transpose path)."""
    d = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    subset = list(rng.permutation(GENES)[:3000])
    specs = {
        "full": {"genes": GENES, "fmt": "csr"},
        "subset": {"genes": subset, "fmt": "csr"},
        "csc": {"genes": GENES, "fmt": "csc"},
    }
    paths = {}
    for i, (name, spec) in enumerate(specs.items()):
        paths[name] = d / f"{name}.h5ad"
        write_sparse_h5ad(paths[name], 12_500, spec["genes"], 1000, fmt=spec["fmt"], seed=i)
    return paths


def _cli_cmd(out, inputs, *extra):
    return [*CLI, "-o", str(out), "--quiet", *extra] + [f"{n}={p}" for n, p in inputs.items()]


def _assert_peak_bounded(tmp_path, inputs, out, *options) -> None:
    total_mb = sum(p.stat().st_size for p in inputs.values()) / 2**20
    assert total_mb > 280
    # Baseline: the same CLI (all imports, same code paths) on a tiny input.
    tiny = tmp_path / "tiny.h5ad"
    write_sparse_h5ad(tiny, 10, GENES[:50], 5)
    tiny_out = tmp_path / f"t{out.suffix}"
    status, baseline, err = child_peak_rss_mb(_cli_cmd(tiny_out, {"t": tiny}, *options))
    assert status == 0, err
    budget = ["--chunk-entries", "500000", *options]  # ~4 MB per chunk
    status, peak, err = child_peak_rss_mb(_cli_cmd(out, inputs, *budget))
    assert status == 0, err
    # Any single input matrix is 100 MB; loading one whole would blow through this margin.
    assert peak < baseline + 60, f"peak {peak:.0f} MB vs baseline {baseline:.0f} MB"


@pytest.mark.parametrize("join", ["inner", "outer"])
def test_peak_memory_is_bounded(tmp_path, big_inputs, join):
    out = tmp_path / "o.h5ad"
    _assert_peak_bounded(tmp_path, big_inputs, out, "--join", join)
    out = read_quiet(out, backed="r")
    assert out.n_obs == 37_500
    assert out.X.shape[1] == (3000 if join == "inner" else 4000)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("suffix", "options"),
    [
        (".h5ad", ["--compression", "gzip:1", "--threads", "3"]),
        (".zarr", ["--threads", "2"]),  # blosc
        (".zarr", ["--compression", "zstd", "--threads", "2"]),
    ],
)
def test_peak_memory_is_bounded_with_compression(tmp_path, big_inputs, suffix, options):
    out = tmp_path / f"o{suffix}"
    _assert_peak_bounded(tmp_path, big_inputs, out, "--join", "outer", *options)
    assert read_quiet(out).X.shape == (37_500, 4000)


def test_killed_run_leaves_no_output_and_rerun_succeeds(tmp_path, big_inputs):
    inputs = {k: big_inputs[k] for k in ("subset", "csc")}
    out = tmp_path / "out.h5ad"
    # A small budget makes the run (mostly the CSC transpose) take a few seconds.
    cmd = _cli_cmd(out, inputs, "--join", "outer")
    slow_cmd = cmd + ["--chunk-entries", "50000"]
    proc = subprocess.Popen(slow_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    temp = tmp_path / f".out.h5ad.tmp-{proc.pid}"
    deadline = time.monotonic() + 60
    while not temp.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let it write some matrix data
    assert proc.poll() is None, "run finished before it could be killed; make inputs bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert temp.exists()  # clearly named leftover of the killed run

    run_cli(*cmd[len(CLI) :], check=True)
    assert out.exists()
    assert not temp.exists(), "stale temp file of a dead run was not cleaned up"
    assert not list(tmp_path.glob(".out.h5ad.tmp-*"))
    assert_matches_reference(out, reference_concat(inputs, join="outer"))


def test_sigterm_removes_temp_file(tmp_path, big_inputs):
    out = tmp_path / "out.h5ad"
    cmd = _cli_cmd(out, {"csc": big_inputs["csc"]}, "--chunk-entries", "50000")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    temp = tmp_path / f".out.h5ad.tmp-{proc.pid}"
    deadline = time.monotonic() + 60
    while not temp.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert not out.exists() and not temp.exists()

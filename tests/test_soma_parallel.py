"""The parallel build (kbagg.soma.parallel): reserve, write each sample, finish. Real
tiledbsoma: values equal a one-step build, after a writer is SIGKILLed and rerun, and with
writers in separate processes at once."""

# ruff: noqa: E402, F811  (the fixture `inputs` is imported from test_soma)
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

soma = pytest.importorskip("tiledbsoma", reason="the SOMA store needs tiledbsoma (extra 'soma')")
from concat_helpers import REPO
from test_soma import (  # noqa: F401 - a fixture
    SAMPLES,
    aggregate,
    assert_arrays_match,
    assert_same_cells,
    inputs,
    update,
)

from kbagg.soma.layouts import LAYOUTS, TWO_ARRAYS
from kbagg.soma.parallel import finish_store, reserved_samples, write_sample
from kbagg.soma.store import StoreError, read_store

QUIET = {"log": lambda line: None}


def one_step(inputs, tmp_path, names):
    ref = tmp_path / "one_step"
    update(ref, inputs, names, tmp_path, run="ref")
    return read_store(ref)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reserve_write_finish_equals_one_step(inputs, tmp_path, layout):
    store = tmp_path / "store"
    update(store, inputs, ["s1", "s2"], tmp_path, run="r1", layout=layout)  # one job first
    manifest = update(store, inputs, list(SAMPLES), tmp_path, run="r2", reserve=True, layout=layout)
    assert manifest["appended"] == ["s3", "s4"]
    assert set(reserved_samples(store)) == {"s3", "s4"}
    with pytest.raises(StoreError, match="sample s4 is reserved but has no writer marker"):
        finish_store(store, {"s3": {}}, **QUIET)
    other = "gene_query" if layout == TWO_ARRAYS else TWO_ARRAYS
    with pytest.raises(StoreError, match=f"reserved with layout '{layout}', not '{other}'"):
        write_sample(store, "s3", layout=other, **QUIET)
    markers = {
        n: write_sample(store, n, marker_path=tmp_path / f"{n}.json", layout=layout, **QUIET)
        for n in ("s4", "s3")
    }
    assert markers["s3"].keys() == {"counts"}
    with pytest.raises(StoreError, match="sample s4 layer counts holds"):
        finish_store(store, {**markers, "s4": {"counts": markers["s4"]["counts"] + 1}}, **QUIET)
    if layout == TWO_ARRAYS:  # the copy is checked too: empty s4's range in it alone
        start, end = reserved_samples(store)["s4"]
        with soma.SparseNDArray.open(str(store / "ms/RNA/X/counts_by_gene"), "d") as arr:
            arr.delete_cells((slice(start, end - 1),))
        with pytest.raises(StoreError, match="sample s4 layer counts_by_gene holds 0 non-zeros"):
            finish_store(store, markers, **QUIET)
        write_sample(store, "s4", **QUIET)  # the rerun writes both again
    done = finish_store(store, {n: tmp_path / f"{n}.json" for n in markers}, layout=layout, **QUIET)
    assert done["committed"] == ["s3", "s4"] and reserved_samples(store) == {}
    with pytest.raises(StoreError, match="sample s3 is committed, not reserved"):
        write_sample(store, "s3", **QUIET)
    direct = one_step(inputs, tmp_path, list(SAMPLES))
    got = read_store(store)
    assert_same_cells(got, direct.copy())
    pd.testing.assert_index_equal(got.obs_names, direct.obs_names)
    assert_arrays_match(store, aggregate(inputs, list(SAMPLES), tmp_path), layout)


KILLED_WRITER = """
import os, signal, sys
import tiledbsoma
from kbagg.soma.parallel import write_sample
original, calls = tiledbsoma.SparseNDArray.write, [0]
def killing(*args, **kwargs):
    calls[0] += 1
    result = original(*args, **kwargs)
    if calls[0] == int(sys.argv[3]):  # after this fragment is committed
        os.kill(os.getpid(), signal.SIGKILL)
    return result
tiledbsoma.SparseNDArray.write = killing
write_sample(sys.argv[1], sys.argv[2], marker_path=sys.argv[4])
"""

WRITER = """
import sys
from kbagg.soma.parallel import write_sample
write_sample(sys.argv[1], sys.argv[2], marker_path=sys.argv[3])
"""


def _child(code: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-c", code, *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow  # child processes
@pytest.mark.parametrize("layout", LAYOUTS)
def test_killed_writer_rerun_and_concurrent_writers_equal_one_step(inputs, tmp_path, layout):
    store = tmp_path / "store"
    update(store, inputs, list(SAMPLES), tmp_path, run="r1", reserve=True, layout=layout)
    # s1 is killed after two of its four layers are written (committed fragments); in two
    # arrays after counts, their copy and mature, before mature's copy
    after = 3 if layout == TWO_ARRAYS else 2
    killed = _child(KILLED_WRITER, store, "s1", after, tmp_path / "s1.json")
    _, err = killed.communicate()
    assert killed.returncode == -9, err.decode()
    assert not (tmp_path / "s1.json").exists()
    # the rerun of s1 and the other writers, all at once in separate processes
    procs = [_child(WRITER, store, n, tmp_path / f"{n}.json") for n in SAMPLES]
    for p in procs:
        _, err = p.communicate()
        assert p.returncode == 0, err.decode()
    finish_store(store, {n: tmp_path / f"{n}.json" for n in SAMPLES}, **QUIET)
    direct = one_step(inputs, tmp_path, list(SAMPLES))
    got = read_store(store)
    assert_same_cells(got, direct.copy())
    pd.testing.assert_index_equal(got.obs_names, direct.obs_names)
    assert_arrays_match(store, aggregate(inputs, list(SAMPLES), tmp_path), layout)


def test_one_job_update_completes_an_unfinished_parallel_build(inputs, tmp_path):
    store = tmp_path / "store"
    update(store, inputs, list(SAMPLES), tmp_path, run="r1", reserve=True)
    write_sample(store, "s2", **QUIET)  # one writer ran; nothing was finished
    lines = []
    update(store, inputs, list(SAMPLES), tmp_path, run="r2", log=lines.append)
    assert reserved_samples(store) == {}
    assert any("completed the reserved sample(s) s1, s2, s3, s4" in line for line in lines)
    direct = one_step(inputs, tmp_path, list(SAMPLES))
    assert_same_cells(read_store(store), direct.copy())


def test_rerun_writer_removes_what_a_stale_write_left_in_its_range(inputs, tmp_path):
    """A killed writer may leave entries the rerun does not write (an older matrix of the
    sample): `write_sample` empties the sample's range first, so none survive."""
    store = tmp_path / "store"
    update(store, inputs, list(SAMPLES), tmp_path, run="r1", reserve=True)
    start, _ = reserved_samples(store)["s1"]
    direct = one_step(inputs, tmp_path, list(SAMPLES))
    first_cell = direct.obs_names[(direct.obs["sample"] == "s1").to_numpy()][0]  # joinid start
    with soma.Experiment.open(str(store)) as exp:
        var = exp.ms["RNA"].var.read().concat().to_pandas()
        x_name = next(iter(exp.ms["RNA"].X))
    x = direct.layers.get(x_name, direct.X)
    row = x[direct.obs_names.get_loc(first_cell)]
    row = row.toarray().ravel() if hasattr(row, "toarray") else np.asarray(row).ravel()
    zero_gene = direct.var_names[row == 0][0]  # a gene the sample's first cell lacks
    gene_joinid = int(var.loc[var["gene_id"] == zero_gene, "soma_joinid"].iloc[0])
    with soma.Experiment.open(str(store), "w") as exp:
        array = exp.ms["RNA"].X[x_name]
        stale = pa.Table.from_pydict(
            {
                "soma_dim_0": pa.array([start], pa.int64()),
                "soma_dim_1": pa.array([gene_joinid], pa.int64()),
                "soma_data": pa.array([7], array.schema.field("soma_data").type),
            }
        )
        array.write(stale)
    markers = {
        n: write_sample(store, n, marker_path=tmp_path / f"{n}.json", **QUIET) for n in SAMPLES
    }
    finish_store(store, {n: tmp_path / f"{n}.json" for n in markers}, **QUIET)
    assert_same_cells(read_store(store), direct.copy())


def test_limit_tiledb_threads_holds_new_contexts_to_the_jobs_threads(monkeypatch):
    # TileDB sizes its pools by the machine's cores: a 1-thread job kept 1.4 cores busy
    import tiledbsoma

    from kbagg.soma.context import TILEDB_THREAD_SETTINGS, limit_tiledb_threads

    for name in TILEDB_THREAD_SETTINGS:
        monkeypatch.delenv(name, raising=False)  # restored after the test

    def levels() -> tuple[str, str]:
        config = tiledbsoma.SOMATileDBContext().native_context.config()
        return config["sm.compute_concurrency_level"], config["sm.io_concurrency_level"]

    default = levels()  # sized by the machine's cores
    limit = str(int(default[0]) + 1)  # differs from the default on any machine
    limit_tiledb_threads(int(limit))
    assert levels() == (limit, limit)
    monkeypatch.setenv(TILEDB_THREAD_SETTINGS[0], "5")  # the user's own setting is kept
    limit_tiledb_threads(1)
    assert levels()[0] == "5"


def test_soma_rules_take_their_threads_and_memory_from_resources_soma(tmp_path):
    from test_config_names import dry_run

    proc = dry_run(
        tmp_path,
        aggregate={"soma": {"enabled": True}},
        resources={"soma": {"threads": 2, "mem_mb": 3000}, "aggregate": {"mem_mb": 2500}},
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said[-3000:]
    jobs = {}
    for block in said.split("\nrule ")[1:]:
        name = block.split(":", 1)[0]
        threads = re.search(r"^\s+threads: (\d+)", block, re.M)
        memory = re.search(r"mem_mb=(\d+)", block)
        jobs[name] = (int(threads.group(1)) if threads else 1, memory and int(memory.group(1)))
    for rule in ("soma_register", "soma_write", "soma"):
        assert jobs[rule] == (2, 3000), (rule, jobs.get(rule))
    assert jobs["aggregate"][1] == 2500  # resources.aggregate still sizes the concat

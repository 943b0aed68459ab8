"""The appendable SOMA store: equal to the h5ad aggregate, append-only, crash-safe, locked."""

# ruff: noqa: E402  (the module is skipped, before importing it, where tiledbsoma is absent)

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

soma = pytest.importorskip("tiledbsoma", reason="the SOMA store needs tiledbsoma (extra 'soma')")
import tiledbsoma.io as soma_io
from concat_helpers import REPO, dense, read_quiet

from kbagg.checksum import sha256
from kbagg.concat.engine import concat_on_disk
from kbagg.soma import query_layer, read_context
from kbagg.soma.context import SerialExecutor
from kbagg.soma.layouts import LAYOUTS, TWO_ARRAYS, by_gene
from kbagg.soma.obsm import add_obsm
from kbagg.soma.store import RUN_COLUMN, StoreError, read_store, update_store

GENES = [f"ENSG{i:04d}" for i in range(12)]
KB_LAYERS = ("mature", "nascent", "ambiguous")
# Overlapping gene sets, so the store's genes are a true union; s3 has no kb layers.
SAMPLES = {
    "s1": {"genes": GENES[:8], "n": 6, "layers": KB_LAYERS},
    "s2": {"genes": GENES[3:11], "n": 5, "layers": KB_LAYERS},
    "s3": {"genes": GENES[::2], "n": 4, "layers": ()},
    "s4": {"genes": GENES[1:], "n": 7, "layers": KB_LAYERS},
}
META = pd.DataFrame({"sample": list(SAMPLES), "condition": ["ctrl", "treated", "ctrl", "treated"]})


def write_sample(path: Path, genes, n, layers, seed, *, n_genes_dtype=np.int64) -> Path:
    """A small kb-like per-sample h5ad: float64 CSR counts, QC columns, nullable booleans."""
    rng = np.random.default_rng(seed)
    counts = (rng.random((n, len(genes))) < 0.5) * rng.integers(1, 30, (n, len(genes)))
    X = sp.csr_matrix(counts.astype(np.float64))
    obs = pd.DataFrame(index=pd.Index([f"AAAC{i:04d}" for i in range(n)], name="barcode"))
    obs["n_umis"] = np.asarray(X.sum(axis=1)).ravel()
    obs["n_genes"] = np.diff(X.indptr).astype(n_genes_dtype)
    obs["doublet_score"] = rng.random(n)
    flags = pd.array(rng.random(n) < 0.3, dtype="boolean")
    flags[0] = pd.NA
    obs["predicted_doublet"] = flags
    var = pd.DataFrame(
        {"gene_name": [g.replace("ENSG", "GENE") for g in genes]},
        index=pd.Index(genes, name="gene_id"),
    )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    for i, layer in enumerate(layers):
        adata.layers[layer] = sp.csr_matrix(counts * (i + 1) % 7, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)
    return path


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "inputs"
    folder.mkdir()
    return {
        name: write_sample(folder / f"{name}.h5ad", seed=i, **spec)
        for i, (name, spec) in enumerate(SAMPLES.items())
    }


def update(store, inputs, names, tmp_path, run="r1", **kw) -> dict:
    kw.setdefault("project", "P")
    kw.setdefault("log", lambda line: None)
    kw.setdefault("obs_metadata", META)
    return update_store(
        store,
        {n: inputs[n] for n in names},
        run_id=run,
        manifest_path=tmp_path / f"manifest-{run}.json",
        **kw,
    )


def aggregate(inputs, names, tmp_path) -> ad.AnnData:
    out = tmp_path / "aggregate.h5ad"
    concat_on_disk(
        {n: inputs[n] for n in names}, out, join="outer", obs_metadata=META, progress=False
    )
    return read_quiet(out)


def assert_same_cells(store: ad.AnnData, ref: ad.AnnData, *, exact_categories=("sample",)):
    """Equal after aligning by obs_id and gene_id: X, layers, obs (values and dtypes, the
    run column aside) and var. Category order is compared for ``exact_categories`` only:
    elsewhere the store keeps the order values were first added in."""
    assert sorted(store.obs_names) == sorted(ref.obs_names)
    assert sorted(store.var_names) == sorted(ref.var_names)
    store = store[ref.obs_names, ref.var_names]
    assert store.X.dtype == ref.X.dtype
    np.testing.assert_array_equal(dense(store.X), dense(ref.X))
    layers = sorted(k for k in ref.layers if k is not None)
    assert sorted(k for k in store.layers if k is not None) == layers
    for k in layers:
        assert store.layers[k].dtype == ref.layers[k].dtype, k
        np.testing.assert_array_equal(dense(store.layers[k]), dense(ref.layers[k]), err_msg=k)
    columns = sorted(c for c in ref.obs.columns if c != RUN_COLUMN)
    assert sorted(c for c in store.obs.columns if c != RUN_COLUMN) == columns
    for col in columns:
        got, want = store.obs[col], ref.obs[col]
        if isinstance(want.dtype, pd.CategoricalDtype):
            assert isinstance(got.dtype, pd.CategoricalDtype), col
            assert list(got.astype(object)) == list(want.astype(object)), col
            if col in exact_categories:
                assert list(got.cat.categories) == list(want.cat.categories), col
        else:
            pd.testing.assert_series_equal(got, want, check_names=False, check_index=False)
    pd.testing.assert_series_equal(
        store.var["gene_name"].astype(str), ref.var["gene_name"].astype(str), check_names=False
    )


def assert_arrays_match(store: Path, ref: ad.AnnData, layout: str, *, seed: int = 0) -> None:
    """Every X array of the store, the gene-major copies of layout two_arrays included, read
    through tiledbsoma's queries by gene (three gene names), by sample (the first and last)
    and by random cells, equals the aggregate's same slice; the store has a copy of each
    layer exactly when its layout is two_arrays, and `query_layer` names it for genes."""
    genes = [g for g in ("GENE0000", "GENE0006", "GENE0011") if g in set(ref.var["gene_name"])]
    samples = list(dict.fromkeys(ref.obs["sample"].astype(str)))
    cells = np.sort(np.random.default_rng(seed).choice(ref.n_obs, ref.n_obs // 2, replace=False))
    # serial reads: tiledbsoma 2.3.0's threaded to_anndata crashed test runs (docs/soma.md)
    with soma.Experiment.open(str(store), context=read_context(threads=False)) as exp:
        names = set(exp.ms["RNA"].X)
        base = {n for n in names if not n.endswith("_by_gene")}
        want = {by_gene(n) for n in base} if layout == TWO_ARRAYS else set()
        assert names - base == want
        for layer in sorted(base):
            assert query_layer(exp, layer) == (by_gene(layer) if want else layer)
            assert query_layer(exp, layer, by="cell") == layer
        queries = [soma.AxisQuery(value_filter=f"gene_name == '{g}'") for g in genes]
        queries = [("var", q) for q in queries]
        queries += [("obs", soma.AxisQuery(value_filter=f"sample == '{s}'")) for s in samples]
        queries.append(("obs", soma.AxisQuery(coords=(cells,))))
        for name in sorted(names):
            layer = name.removesuffix("_by_gene") if name in want else name
            for axis, query in queries:
                with exp.axis_query("RNA", **{f"{axis}_query": query}) as q:
                    got = q.to_anndata(X_name=name, obs_id_name="obs_id", var_id_name="gene_id")
                sub = ref[got.obs_names, got.var_names]
                expected = sub.X if layer == "counts" else sub.layers[layer]
                np.testing.assert_array_equal(
                    dense(got.X), dense(expected), err_msg=f"{name} {axis} {query}"
                )
                if axis == "var":
                    assert got.n_obs == ref.n_obs


def test_serial_executor_runs_each_call_at_once_in_the_calling_thread():
    pool = SerialExecutor()
    caller = threading.get_ident()
    # a part that submits parts (tiledbsoma's partitioned X read) and waits on them
    nested = pool.submit(lambda: list(pool.map(lambda k: (k, threading.get_ident()), range(3))))
    assert nested.done() and nested.result() == [(k, caller) for k in range(3)]
    failed = pool.submit(lambda: 1 / 0)
    assert failed.done() and isinstance(failed.exception(), ZeroDivisionError)
    pool.shutdown()


def test_serial_reads_equal_threaded_reads(inputs, tmp_path):
    store = tmp_path / "store"
    update(store, inputs, list(SAMPLES), tmp_path)
    where = {"obs_query": soma.AxisQuery(value_filter="sample == 's2'")}
    got = {}
    for threads in (True, False):
        with soma.Experiment.open(str(store), context=read_context(threads=threads)) as exp:
            assert isinstance(exp.context.threadpool, SerialExecutor) is not threads
            with exp.axis_query("RNA", **where) as q:
                got[threads] = q.to_anndata(X_name="counts", obs_id_name="obs_id")
    assert got[False].n_obs == SAMPLES["s2"]["n"]
    pd.testing.assert_frame_equal(got[False].obs, got[True].obs)
    np.testing.assert_array_equal(dense(got[False].X), dense(got[True].X))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_store_equals_outer_join_aggregate(inputs, tmp_path, layout):
    store = tmp_path / "store"
    manifest = update(store, inputs, list(SAMPLES), tmp_path, layout=layout)
    ref = aggregate(inputs, list(SAMPLES), tmp_path)
    assert_same_cells(read_store(store), ref)
    assert_arrays_match(store, ref, layout)
    assert manifest["layout"] == layout
    # to_anndata itself agrees, but for the nullable booleans it hands back as objects
    with soma.Experiment.open(str(store), context=read_context(threads=False)) as exp:
        plain = soma_io.to_anndata(exp, "RNA", X_layer_name="counts", obs_id_name="obs_id")
    assert plain.obs["predicted_doublet"].dtype == object
    assert list(plain.obs[RUN_COLUMN].unique()) == ["r1"]
    on_disk = json.loads((tmp_path / "manifest-r1.json").read_text())
    assert on_disk == manifest
    assert manifest["action"] == "created" and manifest["appended"] == list(SAMPLES)
    assert manifest["n_obs"] == sum(s["n"] for s in SAMPLES.values())
    assert manifest["n_vars"] == len(GENES)  # every gene is in some sample
    for name, path in inputs.items():
        assert manifest["samples"][name] == {
            "sha256": sha256(path),
            "n_obs": SAMPLES[name]["n"],
            "run": "r1",
        }
    with soma.Experiment.open(str(store)) as exp:
        journal = json.loads(exp.metadata["kbagg_store"])
    assert {n: e["sha256"] for n, e in journal["samples"].items()} == {
        n: sha256(p) for n, p in inputs.items()
    }


def test_journal_is_a_typed_record_that_round_trips(inputs, tmp_path):
    """The journal in the store's metadata reads into `Journal` and writes back to the same
    text; a damaged one is a StoreError naming the store."""
    from kbagg.soma.journal import Journal

    store = tmp_path / "store.soma"
    update(store, inputs, list(inputs)[:2], tmp_path)
    with soma.Experiment.open(str(store)) as exp:
        raw = exp.metadata["kbagg_store"]
    journal = Journal.from_json(raw)
    assert journal.to_json() == raw
    assert set(journal.own("P")) == set(list(inputs)[:2]) and journal.pending is None
    assert journal.samples[list(inputs)[0]].sha256 == sha256(inputs[list(inputs)[0]])
    with pytest.raises(StoreError, match="store.soma: its journal: key 'measurement' is missing"):
        Journal.from_json('{"samples": {}}', source=f"{store}: its journal")
    with pytest.raises(StoreError, match="store.soma: its journal: not a kbagg store journal"):
        Journal.from_json("[1, 2]", source=f"{store}: its journal")


def _fragments(store: Path) -> dict[str, float]:
    """Every fragment file of every array, with its modification time."""
    return {
        str(p.relative_to(store)): p.stat().st_mtime_ns
        for p in store.rglob("*")
        if p.is_file() and "__fragments" in p.parts
    }


def _cells_in_fragments(store: Path) -> dict[str, int]:
    """Cells stored in each array's fragments, counting a rewritten cell once per write."""
    out = {}
    with soma.Experiment.open(str(store)) as exp:
        arrays = {"obs": exp.obs, "var": exp.ms["RNA"].var, **exp.ms["RNA"].X}
        for name, array in arrays.items():
            out[name] = array._handle.fragment_cell_count()  # what to_anndata uses too
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_appends_equal_one_shot_and_leave_old_cells_alone(inputs, tmp_path, layout):
    two_then_four = tmp_path / "appended"
    update(two_then_four, inputs, ["s1", "s2"], tmp_path, run="r1", layout=layout)
    before = _fragments(two_then_four)
    manifest = update(two_then_four, inputs, list(SAMPLES), tmp_path, run="r2", layout=layout)
    assert manifest["action"] == "appended" and manifest["appended"] == ["s3", "s4"]
    assert manifest["samples"]["s1"]["run"] == "r1" and manifest["samples"]["s4"]["run"] == "r2"

    one_shot = tmp_path / "one_shot"
    update(one_shot, inputs, list(SAMPLES), tmp_path, run="r3")
    appended, direct = read_store(two_then_four), read_store(one_shot)
    assert_same_cells(appended, direct.copy())
    ref = aggregate(inputs, list(SAMPLES), tmp_path)
    assert_same_cells(appended, ref)
    assert_arrays_match(two_then_four, ref, layout)
    runs = appended.obs.groupby("sample", observed=True)[RUN_COLUMN].unique()
    assert {s: list(r) for s, r in runs.items()} == {
        "s1": ["r1"],
        "s2": ["r1"],
        "s3": ["r2"],
        "s4": ["r2"],
    }

    # Old fragments are untouched (same files, same mtimes: nothing was rewritten or
    # consolidated), and the fragments hold each cell once: had any cell of s1 or s2 been
    # written again, the count would exceed the cells the store holds.
    after = _fragments(two_then_four)
    assert {k: after[k] for k in before} == before
    assert len(after) > len(before)
    with soma.Experiment.open(str(two_then_four)) as exp:
        held = {"obs": exp.obs.count, "var": exp.ms["RNA"].var.count}
        held.update({k: a.nnz for k, a in exp.ms["RNA"].X.items()})
    assert _cells_in_fragments(two_then_four) == held
    assert held["obs"] == sum(s["n"] for s in SAMPLES.values())

    # The same set again: nothing at all is written.
    again = update(two_then_four, inputs, list(SAMPLES), tmp_path, run="r4", layout=layout)
    assert again["action"] == "unchanged" and again["appended"] == []
    assert _fragments(two_then_four) == after


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_layer_new_to_the_store_comes_with_an_append(inputs, tmp_path, layout):
    """A store begun with s3 (counts only) gets kb's layers from the samples appended later:
    the X arrays the store lacks are created (with their gene-major copies in layout
    two_arrays), those it has are written in place."""
    store = tmp_path / "store"
    update(store, inputs, ["s3"], tmp_path, run="r1", layout=layout)
    with soma.Experiment.open(str(store)) as exp:
        assert set(exp.ms["RNA"].X) == {"counts"} | (
            {"counts_by_gene"} if layout == TWO_ARRAYS else set()
        )
    manifest = update(store, inputs, list(SAMPLES), tmp_path, run="r2", layout=layout)
    assert manifest["action"] == "appended"
    ref = aggregate(inputs, list(SAMPLES), tmp_path)
    assert_same_cells(read_store(store), ref, exact_categories=())
    assert_arrays_match(store, ref, layout)


def test_changing_the_layout_rebuilds_and_an_atlas_refuses_it(inputs, tmp_path):
    """The layout is journaled: another one rebuilds this project's store, in either
    direction, and the log and manifest say why; a store holding another project's cells
    is not rebuilt but refused, before anything is written."""
    store = tmp_path / "store"
    update(store, inputs, ["s1", "s2"], tmp_path, run="r1", layout="gene_query")
    assert_arrays_match(store, aggregate(inputs, ["s1", "s2"], tmp_path), "gene_query")
    ref = aggregate(inputs, list(SAMPLES), tmp_path)
    for run, layout in (("r2", TWO_ARRAYS), ("r3", "gene_query")):
        lines = []
        manifest = update(
            store, inputs, list(SAMPLES), tmp_path, run=run, layout=layout, log=lines.append
        )
        assert manifest["action"] == "rebuilt", manifest
        other = "gene_query" if layout == TWO_ARRAYS else TWO_ARRAYS
        assert manifest["reason"] == f"layout changed from {other!r} to {layout!r}"
        assert any("rebuilding" in line and "layout changed" in line for line in lines)
        assert_same_cells(read_store(store), ref)
        assert_arrays_match(store, ref, layout)
        with soma.Experiment.open(str(store)) as exp:
            assert json.loads(exp.metadata["kbagg_store"])["layout"] == layout
    before = _fragments(store)
    hint = r"\(set aggregate.soma.layout: gene_query to append in the store's layout\)"
    with pytest.raises(StoreError, match=f"cannot be rebuilt: layout changed.*{hint}"):
        update(store, inputs, ["s1"], tmp_path, run="r4", layout=TWO_ARRAYS, project="Q")
    assert _fragments(store) == before


def test_changed_or_removed_sample_rebuilds(inputs, tmp_path):
    store = tmp_path / "store"
    update(store, inputs, list(SAMPLES), tmp_path, run="r1")
    write_sample(inputs["s2"], seed=99, **SAMPLES["s2"])  # new counts for s2
    lines = []
    manifest = update(store, inputs, list(SAMPLES), tmp_path, run="r2", log=lines.append)
    assert manifest["action"] == "rebuilt"
    assert "sample s2 input changed" in manifest["reason"]
    assert any("rebuilding" in line and "s2" in line for line in lines)
    assert_same_cells(read_store(store), aggregate(inputs, list(SAMPLES), tmp_path))

    manifest = update(store, inputs, ["s1", "s3", "s4"], tmp_path, run="r3")
    assert manifest["action"] == "rebuilt"
    assert manifest["reason"] == "sample s2 left the sample set"
    assert_same_cells(read_store(store), aggregate(inputs, ["s1", "s3", "s4"], tmp_path))
    assert not list(tmp_path.glob(".store.*-*"))  # no build or old directories left

    # a new sample-table column changes every row, and adds an obs column
    batch = META.assign(batch=["b1", "b1", "b2", "b2"])
    manifest = update(store, inputs, ["s1", "s3", "s4"], tmp_path, run="r4", obs_metadata=batch)
    assert manifest["action"] == "rebuilt"
    assert "sample s1 sample-table row changed" in manifest["reason"]
    assert list(read_store(store).obs["batch"].unique()) == ["b1", "b2"]

    manifest = update(store, inputs, ["s1"], tmp_path, run="r5", index_unique="_")
    assert manifest["reason"].startswith("index_unique changed from '-' to '_'")
    assert read_store(store).obs_names[0] == "AAAC0000_s1"


KILLER = """
import os, signal, sys
import tiledbsoma, tiledbsoma.io
from kbagg.soma.store import update_store
target, after = sys.argv[1], int(sys.argv[2])
cls, method = {
    "matrix": (tiledbsoma.SparseNDArray, "write"),
    "dataframe": (tiledbsoma.DataFrame, "write"),
    "prepare": (tiledbsoma.io.ExperimentAmbientLabelMapping, "prepare_experiment"),
}[target]
original, calls = getattr(cls, method), [0]
def killing(*args, **kwargs):
    calls[0] += 1
    if calls[0] == after:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(cls, method, killing)
store, manifest, layout, *pairs = sys.argv[3:]
import pandas as pd
meta = pd.DataFrame({"sample": ["s1", "s2", "s3", "s4"],
                     "condition": ["ctrl", "treated", "ctrl", "treated"]})
update_store(store, dict(p.split("=", 1) for p in pairs), run_id="killed",
             manifest_path=manifest, obs_metadata=meta, project="P", layout=layout)
"""


def run_killed(
    store, inputs, tmp_path, target, after, layout="gene_query"
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    pairs = [f"{n}={p}" for n, p in inputs.items()]
    cmd = [sys.executable, "-c", KILLER, target, str(after), str(store), str(tmp_path / "k.json")]
    cmd.append(layout)
    return subprocess.run(cmd + pairs, capture_output=True, text=True, env=env, check=False)


@pytest.mark.slow  # a child process per case: ~10 s each on a loaded machine
@pytest.mark.parametrize(
    ("start", "target", "after", "repaired", "layout"),
    [
        # s1, s2 in the store; s3 (counts only) is appended, s4 killed after its counts
        (["s1", "s2"], "matrix", 3, "s4", "gene_query"),
        # the same in two arrays: s3's counts and their copy written, s4 killed after its
        # counts and before their gene-major copy
        (["s1", "s2"], "matrix", 4, "s4", TWO_ARRAYS),
        # killed while writing s3's obs rows (dataframe writes: obs, then var, per sample)
        (["s1", "s2"], "dataframe", 1, "s3", "gene_query"),
        # killed after s3's registration was journaled, before the store was resized
        (["s1", "s2"], "prepare", 1, "s3", "gene_query"),
        # killed during a fresh build: only a sibling build directory is left
        ([], "matrix", 5, None, "gene_query"),
    ],
)
def test_kill_during_append_then_rerun_equals_one_shot(
    inputs, tmp_path, start, target, after, repaired, layout
):
    store = tmp_path / "store"
    if start:
        update(store, inputs, start, tmp_path, run="r1", layout=layout)
    proc = run_killed(store, inputs, tmp_path, target, after, layout)
    assert proc.returncode == -9, proc.stderr
    assert not (tmp_path / "k.json").exists()
    if repaired:
        with soma.Experiment.open(str(store)) as exp:
            assert json.loads(exp.metadata["kbagg_store"])["pending"]["sample"] == repaired
    else:
        assert not store.exists() and list(tmp_path.glob(".store.build-*"))

    if layout == TWO_ARRAYS:  # the kill left s4 in counts and not in its copy
        with soma.Experiment.open(str(store)) as exp:
            X = exp.ms["RNA"].X
            assert X["counts"].nnz > X["counts_by_gene"].nnz
    lines = []
    manifest = update(
        store, inputs, list(SAMPLES), tmp_path, run="r2", log=lines.append, layout=layout
    )
    assert (manifest["repaired"] or {}).get("sample") == repaired
    if repaired:
        assert any(f"half-written append of sample {repaired}" in line for line in lines)
        assert manifest["action"] == "appended"
    one_shot = tmp_path / "one_shot"
    update(one_shot, inputs, list(SAMPLES), tmp_path, run="r3")
    direct = read_store(one_shot)
    got = read_store(store)
    assert_same_cells(got, direct.copy())
    pd.testing.assert_index_equal(got.obs_names, direct.obs_names)  # same joinid order too
    assert_arrays_match(store, aggregate(inputs, list(SAMPLES), tmp_path), layout)
    assert not list(tmp_path.glob(".store.*-*"))


HOLDER = """
import sys, time
from kbagg.soma.lock import store_lock
with store_lock(sys.argv[1], None, print):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_lock_serializes_updates(inputs, tmp_path):
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store), "2"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=rf"another kbagg run \(pid {holder.pid}\)"):
            update(store, inputs, ["s1"], tmp_path, lock_timeout_s=0)
        assert not store.exists()
        lines = []
        update(store, inputs, ["s1"], tmp_path, log=lines.append)  # waits for the holder
        assert holder.wait(timeout=30) == 0
        assert any(
            f"waiting for the lock on {store} (held by pid {holder.pid})" in line for line in lines
        )
    finally:
        holder.kill()
        holder.wait()


def test_concurrent_updates_do_not_interleave(inputs, tmp_path):
    store = tmp_path / "store"
    results = {}

    def run(tag):
        results[tag] = update(store, inputs, list(SAMPLES), tmp_path, run=tag)

    threads = [threading.Thread(target=run, args=(tag,)) for tag in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["action"] for r in results.values()) == ["created", "unchanged"]
    assert_same_cells(read_store(store), aggregate(inputs, list(SAMPLES), tmp_path))


# ---------------------------------------------------------------------------- atlases


def atlas_from(tmp_path, inputs, names, **kw) -> Path:
    atlas = tmp_path / "elsewhere" / "atlas"
    update(atlas, inputs, names, tmp_path, run="atlas", project="other", **kw)
    return atlas


def test_append_to_an_outside_atlas(inputs, tmp_path):
    tissue = META.assign(tissue=["lung", "lung", None, None])
    atlas = atlas_from(tmp_path, inputs, ["s1", "s2"], obs_metadata=tissue)
    manifest = update(atlas, inputs, ["s3", "s4"], tmp_path, run="mine")
    assert manifest["action"] == "appended"
    assert manifest["n_obs_other_projects"] == SAMPLES["s1"]["n"] + SAMPLES["s2"]["n"]
    got = read_store(atlas)
    # the atlas's extra column is missing for the appended cells, as in an outer join
    assert got.obs["tissue"].isna().groupby(got.obs["sample"], observed=True).all().to_dict() == {
        "s1": False,
        "s2": False,
        "s3": True,
        "s4": True,
    }
    ref = aggregate(inputs, list(SAMPLES), tmp_path)
    ref.obs["tissue"] = got.obs["tissue"].reindex(ref.obs_names)
    assert_same_cells(got, ref)

    # a changed input of this project cannot be rebuilt in someone else's atlas
    write_sample(inputs["s3"], seed=42, **SAMPLES["s3"])
    with pytest.raises(StoreError, match="holds cells of other projects.*sample s3 input changed"):
        update(atlas, inputs, ["s3", "s4"], tmp_path, run="mine2")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_store_without_a_journal_keeps_the_layout_its_arrays_show(inputs, tmp_path, layout):
    """An experiment kbagg did not make (here: a journal removed) is two_arrays when every X
    layer has its gene-major copy: appending in its layout works, in the other it stops
    before writing (half the store would lack the copies, or the new cells would)."""
    other = "gene_query" if layout == TWO_ARRAYS else TWO_ARRAYS
    store = tmp_path / "store"
    update(store, inputs, ["s1", "s2"], tmp_path, run="r1", layout=layout, project="other")
    with soma.Experiment.open(str(store), "w") as exp:
        del exp.metadata["kbagg_store"]
    with pytest.raises(StoreError, match=f"layout changed from '{layout}' to '{other}'"):
        update(store, inputs, ["s3"], tmp_path, run="r2", layout=other)
    update(store, inputs, ["s3", "s4"], tmp_path, run="r3", layout=layout)
    assert_arrays_match(store, aggregate(inputs, list(SAMPLES), tmp_path), layout)


def _obs_count(uri) -> int:
    with soma.Experiment.open(str(uri)) as exp:
        return exp.obs.count


def test_atlas_conflicts_stop_before_writing(inputs, tmp_path):
    atlas = atlas_from(tmp_path, inputs, ["s1", "s2"])
    n, files = _obs_count(atlas), _fragments(atlas)

    # an obs_id already present: the same sample added again by another project
    with pytest.raises(StoreError, match=r"obs_id\(s\) of sample s1 are already in the store"):
        update(atlas, inputs, ["s1"], tmp_path)

    # an obs column whose type differs
    odd = write_sample(tmp_path / "odd.h5ad", seed=7, **SAMPLES["s3"], n_genes_dtype=np.float64)
    with pytest.raises(StoreError, match="obs column 'n_genes' is int64 in the store but double"):
        update(atlas, {**inputs, "s3": odd}, ["s3"], tmp_path)

    # another measurement name
    with pytest.raises(StoreError, match="measurement is RNA, not 'ATAC'"):
        update(atlas, inputs, ["s3"], tmp_path, measurement="ATAC")
    assert _obs_count(atlas) == n and _fragments(atlas) == files

    # a var without gene_id (an experiment that kbagg did not make)
    foreign = tmp_path / "foreign"
    adata = read_quiet(inputs["s1"])
    adata.var.index.name = None
    adata.obs.index = adata.obs.index + "-x"
    adata.obs.index.name = "obs_id"
    soma_io.from_anndata(str(foreign), ad.AnnData(obs=adata.obs, var=adata.var), "RNA")
    with pytest.raises(StoreError, match="var of measurement 'RNA' has no 'gene_id' column"):
        update(foreign, inputs, ["s3"], tmp_path)


# ---------------------------------------------------------------------------- obsm


def obsm_cli(argv: list[str]) -> subprocess.CompletedProcess:
    """kbagg-soma-obsm in a child process: the CLI leaves by os._exit, as every kbagg tool."""
    command = [sys.executable, "-m", "kbagg.soma.cli", *argv]
    return subprocess.run(command, capture_output=True, text=True)


def test_add_obsm_round_trips_and_refuses_unknown_cells(inputs, tmp_path):
    store = tmp_path / "store"
    update(store, inputs, ["s1", "s2"], tmp_path)
    cells = read_store(store).obs_names
    named = cells[::2]
    embedding = np.arange(len(named) * 2, dtype=np.float64).reshape(-1, 2) + 0.5
    assert add_obsm(store, "X_umap", embedding, named, log=lambda line: None) == len(named)
    got = read_store(store).obsm["X_umap"]
    expected = np.zeros((len(cells), 2))
    expected[cells.get_indexer(named)] = embedding
    np.testing.assert_array_equal(dense(got), expected)

    with pytest.raises(
        StoreError, match=r"2 of 3 obs_ids are not in the store \(e.g. nope1, nope2\)"
    ):
        add_obsm(store, "X_umap", np.ones((3, 2)), [cells[0], "nope1", "nope2"])

    table = tmp_path / "qc.tsv"
    pd.DataFrame({"obs_id": cells, "pct_mito": np.arange(len(cells)) / 4, "score": 2.0}).to_csv(
        table, sep="\t", index=False
    )
    done = obsm_cli(["--store", str(store), "--key", "qc", "--table", str(table)])
    assert done.returncode == 0, done.stderr
    got = read_store(store).obsm["qc"]
    np.testing.assert_array_equal(
        dense(got), np.column_stack([np.arange(len(cells)) / 4, np.full(len(cells), 2.0)])
    )
    with soma.Experiment.open(str(store)) as exp:
        assert json.loads(exp.ms["RNA"].obsm["qc"].metadata["kbagg_columns"]) == [
            "pct_mito",
            "score",
        ]

    # a .npy and its obs_ids, for the last three cells, integer values
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(cells[-3:]) + "\n")
    np.save(tmp_path / "emb.npy", np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.int32))
    argv = ["--store", str(store), "--key", "X_int", "--npy", str(tmp_path / "emb.npy")]
    done = obsm_cli([*argv, "--obs-ids", str(ids)])
    assert done.returncode == 0, done.stderr
    got = dense(read_store(store).obsm["X_int"])
    np.testing.assert_array_equal(got[-3:], [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert not got[:-3].any()

    pd.DataFrame({"obs_id": ["ghost"], "x": [1.0]}).to_csv(table, sep="\t", index=False)
    done = obsm_cli(["--store", str(store), "--key", "other", "--table", str(table)])
    assert done.returncode == 1
    assert done.stderr.startswith("error:") and "ghost" in done.stderr

"""Fragments kept in check: update_store consolidates and vacuums the store's arrays once they
hold more than ``max_fragments`` fragments, and the values read stay those of the h5ad
aggregate; a kill mid-consolidation, then a rerun, leaves an equal store."""

# ruff: noqa: E402  (the module is skipped, before importing it, where tiledbsoma is absent)

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

soma = pytest.importorskip("tiledbsoma", reason="the SOMA store needs tiledbsoma (extra 'soma')")
from concat_helpers import REPO, dense, write_sparse_h5ad
from test_soma import (
    GENES,
    KB_LAYERS,
    aggregate,
    assert_arrays_match,
    assert_same_cells,
    run_killed,
    write_sample,
)

from kbagg.concat.engine import concat_on_disk
from kbagg.soma import read_context
from kbagg.soma.layouts import LAYOUTS
from kbagg.soma.libtiledb import fragment_schema_names
from kbagg.soma.store import (
    consolidate_store,
    fragment_counts,
    read_store,
    schema_counts,
    update_store,
)

N_SAMPLES = 12
BOUND = 4


@pytest.fixture
def twelve(tmp_path) -> dict[str, Path]:
    """Twelve small samples over overlapping gene sets (new genes arrive with later samples)."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    return {
        f"t{i:02d}": write_sample(
            folder / f"t{i:02d}.h5ad", GENES[i % 5 : 7 + i % 6], 3 + i % 4, KB_LAYERS, seed=i
        )
        for i in range(N_SAMPLES)
    }


def _reference(inputs, tmp_path):
    out = tmp_path / "aggregate.h5ad"
    concat_on_disk(inputs, out, join="outer", progress=False)
    from concat_helpers import read_quiet

    return read_quiet(out)


def _append_one_by_one(store: Path, samples: dict, tmp_path: Path, **kw) -> dict:
    """One `update_store` per sample, each adding the next (runs r1, r2, ...), project P;
    ``kw`` as for update_store (``log`` defaults to none). Returns the last manifest."""
    kw.setdefault("log", lambda line: None)
    names = list(samples)
    for k in range(1, len(names) + 1):
        manifest = update_store(
            store,
            {n: samples[n] for n in names[:k]},
            run_id=f"r{k}",
            manifest_path=tmp_path / "m.json",
            project="P",
            **kw,
        )
    return manifest


def _arrays_only(counts: dict[str, int]) -> dict[str, int]:
    """`fragment_counts` without the groups' metadata files (``<group>/__meta``)."""
    return {name: n for name, n in counts.items() if not name.endswith("__meta")}


def _fragment_folders(store: Path) -> int:
    """Every fragment folder on disk, committed or not: what vacuum must keep small."""
    return sum(1 for p in store.rglob("__fragments") for f in p.iterdir() if f.is_dir())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_appends_keep_fragments_bounded_and_values_equal(twelve, tmp_path, layout):
    store = tmp_path / "store"
    names = list(twelve)
    consolidations, expected = 0, 0  # expected: X's fragments under the rule
    meta_consolidations = 0
    for k in range(1, N_SAMPLES + 1):
        manifest = update_store(
            store,
            {n: twelve[n] for n in names[:k]},
            run_id=f"r{k}",
            manifest_path=tmp_path / "manifest.json",
            project="P",
            log=lambda line: None,
            max_fragments=BOUND,
            layout=layout,
        )
        assert manifest["appended"] == [names[k - 1]]
        counts = fragment_counts(store)
        assert counts == manifest["fragments"]
        # The bound: without consolidation X would hold k fragments after k appends, and the
        # experiment 2k + 1 metadata files (the journal, written twice per append).
        assert max(counts.values()) <= BOUND, (k, counts)
        # Every append adds a schema version to every array (obs two), and TileDB reads them
        # all on each open: without their removal obs would hold 2k after k appends.
        assert manifest["schemas"] == schema_counts(store)
        assert max(manifest["schemas"].values()) <= BOUND, (k, manifest["schemas"])
        consolidations += "ms/RNA/X/counts" in manifest["consolidated"]
        expected = 1 if expected + 1 > BOUND else expected + 1
        assert counts["ms/RNA/X/counts"] == expected, k
        if "__meta" in manifest["consolidated"]:
            assert manifest["consolidated"]["__meta"][0] > BOUND
            meta_consolidations += 1
    assert consolidations == 2  # after appends 5 and 9
    assert meta_consolidations >= N_SAMPLES * 2 // BOUND - 1
    # vacuumed: the replaced fragments are gone from disk, not only from reads
    assert _fragment_folders(store) == sum(_arrays_only(counts).values())

    ref = _reference(twelve, tmp_path)
    got = read_store(store)
    for col in ("n_umis", "doublet_score"):  # the obs of the inputs (no sample table here)
        pd.testing.assert_series_equal(
            got.obs[col].reindex(ref.obs_names), ref.obs[col], check_names=False
        )
    got = got[ref.obs_names, ref.var_names]
    np.testing.assert_array_equal(dense(got.X), dense(ref.X))
    for layer in KB_LAYERS:
        np.testing.assert_array_equal(dense(got.layers[layer]), dense(ref.layers[layer]))

    # Through the query paths: by gene (var value filter) and by cell (obs value filter,
    # and coordinates), each against the aggregate's same slice. Serial reads (docs/soma.md).
    with soma.Experiment.open(str(store), context=read_context(threads=False)) as exp:
        for gene_name in ("GENE0000", "GENE0006", "GENE0011"):
            where = soma.AxisQuery(value_filter=f"gene_name == '{gene_name}'")
            with exp.axis_query("RNA", var_query=where) as q:
                a = q.to_anndata(X_name="counts", obs_id_name="obs_id", var_id_name="gene_id")
            want = ref[a.obs_names, ref.var["gene_name"] == gene_name]
            np.testing.assert_array_equal(dense(a.X), dense(want.X), err_msg=gene_name)
            assert a.n_obs == ref.n_obs
        for sample in ("t00", "t07"):
            where = soma.AxisQuery(value_filter=f"sample == '{sample}'")
            with exp.axis_query("RNA", obs_query=where) as q:
                a = q.to_anndata(X_name="counts", obs_id_name="obs_id", var_id_name="gene_id")
            want = ref[ref.obs["sample"] == sample][:, a.var_names]
            assert list(a.obs_names) == list(want.obs_names)
            np.testing.assert_array_equal(dense(a.X), dense(want.X), err_msg=sample)
        cells = np.arange(1, ref.n_obs, 5)
        with exp.axis_query("RNA", obs_query=soma.AxisQuery(coords=(cells,))) as q:
            a = q.to_anndata(X_name="counts", obs_id_name="obs_id", var_id_name="gene_id")
        want = ref[a.obs_names, a.var_names]
        np.testing.assert_array_equal(dense(a.X), dense(want.X))
    # every X array, the gene-major copies of two_arrays too, after the consolidations
    assert_arrays_match(store, ref, layout)


def test_no_consolidation_below_the_threshold_or_when_off(twelve, tmp_path):
    store = tmp_path / "store"
    names = list(twelve)[:6]
    for k in range(1, 7):
        manifest = update_store(
            store,
            {n: twelve[n] for n in names[:k]},
            run_id=f"r{k}",
            manifest_path=tmp_path / "m.json",
            project="P",
            log=lambda line: None,
            max_fragments=None,
        )
        assert manifest["consolidated"] == {}
    counts = fragment_counts(store)
    # one fragment per append in each array; the journal's two writes per append, and the
    # experiment's creation, in its metadata
    assert counts["ms/RNA/X/counts"] == 6 and counts["__meta"] == 2 * 6 + 1
    # a resize and new enumeration values: two schema versions of obs per append, none removed
    assert schema_counts(store)["obs"] == 2 * 6
    lines = []
    assert consolidate_store(store, 13, log=lines.append) == {}
    done = consolidate_store(store, log=lines.append)  # default 1: merge every array
    assert done["ms/RNA/X/counts"] == [6, 1] and done["obs"] == [6, 1]
    assert done["__meta"] == [13, 1]
    assert any("consolidated __meta: 13 -> 1 metadata file(s)" in line for line in lines)
    assert any("consolidated ms/RNA/X/counts: 6 -> 1" in line for line in lines)
    # one fragment, written with the latest schema: the other versions are gone
    assert set(schema_counts(store).values()) == {1}
    assert any("removed 11 schema version(s) of obs" in line for line in lines)
    assert_same_cells(read_store(store), _reference({n: twelve[n] for n in names}, tmp_path))
    # the array evolves and reads as before with only its latest schema left
    names = list(twelve)[:7]
    manifest = update_store(
        store,
        {n: twelve[n] for n in names},
        run_id="r7",
        manifest_path=tmp_path / "m.json",
        project="P",
        log=lambda line: None,
        max_fragments=None,
    )
    assert manifest["appended"] == [names[-1]]
    assert_same_cells(read_store(store), _reference({n: twelve[n] for n in names}, tmp_path))


def test_the_journal_metadata_merges_into_one_file_and_reads_the_same(twelve, tmp_path):
    """The journal is written twice per append, each write a file that every open of the
    store reads (129 files, 7 ms of each open, after 64 appends): TileDB merges them into one
    and the journal, the store and the next append are as before."""
    from kbagg.soma.journal import read_journal
    from kbagg.soma.libtiledb import consolidate_group_metadata

    store, names = tmp_path / "store", list(twelve)
    _append_one_by_one(store, {n: twelve[n] for n in names[:4]}, tmp_path, max_fragments=None)
    before = read_journal(str(store))
    assert fragment_counts(store)["__meta"] == 9
    consolidate_group_metadata(store)
    assert fragment_counts(store)["__meta"] == 1
    assert sorted(p.name for p in (store / "__meta").iterdir() if p.suffix == ".vac") == []
    assert read_journal(str(store)) == before
    manifest = update_store(
        store,
        {n: twelve[n] for n in names[:5]},
        run_id="r5",
        manifest_path=tmp_path / "m.json",
        project="P",
        log=lambda line: None,
        max_fragments=None,
    )
    assert manifest["appended"] == [names[4]] and fragment_counts(store)["__meta"] == 3
    assert_same_cells(read_store(store), _reference({n: twelve[n] for n in names[:5]}, tmp_path))
    with pytest.raises(RuntimeError, match="tiledb_group_consolidate_metadata: .+"):
        consolidate_group_metadata(tmp_path / "no_such_group")  # TileDB's own message


def test_metadata_and_schema_clean_ups_that_fail_warn_and_keep_the_store(
    twelve, tmp_path, monkeypatch
):
    import kbagg.soma.fragments as fragments_module

    def missing(uri):
        raise OSError("cannot find the libtiledb that tiledbsoma uses")

    monkeypatch.setattr(fragments_module, "consolidate_group_metadata", missing)
    monkeypatch.setattr(fragments_module, "fragment_schema_names", missing)
    store, names, lines = tmp_path / "store", list(twelve)[:3], []
    samples = {n: twelve[n] for n in names}
    manifest = _append_one_by_one(store, samples, tmp_path, log=lines.append, max_fragments=2)
    assert manifest["consolidated"]["__meta"] == [7, 7]
    assert any(
        "WARNING: could not consolidate __meta (7 metadata files)" in line
        and "cannot find the libtiledb" in line
        for line in lines
    ), lines
    assert manifest["schemas"]["obs"] == 2 * 3  # none removed
    assert any(
        "WARNING: could not list the schemas obs's fragments use" in line
        and "cannot find the libtiledb" in line
        for line in lines
    ), lines
    with pytest.raises(RuntimeError, match="tiledb_fragment_info_load: .+"):
        fragment_schema_names(tmp_path / "no_such_array")  # TileDB's own message
    assert_same_cells(read_store(store), _reference({n: twelve[n] for n in names}, tmp_path))


def test_a_consolidation_tiledb_cannot_do_warns_and_keeps_the_store(twelve, tmp_path, monkeypatch):
    """At atlas size (128 fragments of 400 M non-zeros) TileDB's consolidation reader ran out
    of its memory budget ("Cannot load enough tiles ..."). A real TileDB budget too small for
    six small fragments makes it fail here too: the update completes, the log names the array and
    TileDB's reason, the manifest shows the fragments left, and the store is intact."""
    import kbagg.soma.fragments as fragments_module

    monkeypatch.setitem(fragments_module.CONSOLIDATION_CONFIG, "sm.mem.total_budget", "20000")
    store, names, lines = tmp_path / "store", list(twelve)[:6], []
    _append_one_by_one(store, {n: twelve[n] for n in names[:5]}, tmp_path, max_fragments=None)
    manifest = update_store(
        store,
        {n: twelve[n] for n in names},
        run_id="r6",
        manifest_path=tmp_path / "m.json",
        project="P",
        log=lines.append,
        max_fragments=1,
    )
    assert manifest["consolidated"]["ms/RNA/X/counts"] == [6, 6]
    assert any(
        "WARNING: could not consolidate ms/RNA/X/counts (6 fragments)" in line
        and "budget" in line  # TileDB's reason (with this budget: the R-tree's memory)
        for line in lines
    ), lines
    assert_same_cells(read_store(store), _reference({n: twelve[n] for n in names}, tmp_path))


# A TileDB memory budget in which the sparse global-order reader, with its default tile
# pre-ordering, cannot read the 16 fragments of `_sixteen_fragments` (it needs more than 40 MB
# there; without the pre-ordering 3 MB are enough).
SMALL_BUDGET_BYTES = "10000000"
SMALL_BUDGET = {"sm.mem.total_budget": SMALL_BUDGET_BYTES}


def _sixteen_fragments(folder: Path) -> tuple[Path, dict[str, Path]]:
    """A store of 16 unconsolidated appends (16 fragments) of 500 cells x 3,000 genes with 300
    non-zeros a cell, in the gene_query X layout; and its inputs."""
    genes = [f"ENSG{i:011d}" for i in range(3000)]
    inputs = {}
    for i in range(16):
        inputs[f"s{i:02d}"] = folder / f"s{i:02d}.h5ad"
        write_sparse_h5ad(inputs[f"s{i:02d}"], 500, genes, 300, seed=i)
    store = folder / "store"
    update_store(
        store,
        inputs,
        run_id="r",
        manifest_path=folder / "m.json",
        project="P",
        log=lambda line: None,
        max_fragments=None,
        layout="gene_query",  # the layout these budgets were measured in
    )
    return store, inputs


@pytest.fixture(scope="module")
def sixteen(tmp_path_factory) -> tuple[Path, dict[str, Path], ad.AnnData]:
    """`_sixteen_fragments`, read only, with its h5ad aggregate."""
    folder = tmp_path_factory.mktemp("sixteen")
    store, inputs = _sixteen_fragments(folder)
    assert fragment_counts(store)["ms/RNA/X/counts"] == 16
    return store, inputs, _reference(inputs, folder)


def test_many_fragments_of_the_gene_query_layout_consolidate_in_a_small_budget(
    tmp_path, monkeypatch
):
    """TileDB's global-order reader, with its default tile pre-ordering, could not merge 128
    fragments of kbagg's X layout within 10 GB ("Cannot load enough tiles ..."); 16 fragments
    of 150,000 non-zeros in a 10 MB budget fail the same way. kbagg's read settings
    (`READ_CONFIG`, which the consolidation uses) turn the pre-ordering off: they merge into
    one fragment with every value kept."""
    import kbagg.soma.fragments as fragments_module

    monkeypatch.setitem(
        fragments_module.CONSOLIDATION_CONFIG, "sm.mem.total_budget", SMALL_BUDGET_BYTES
    )
    store, inputs = _sixteen_fragments(tmp_path)
    lines = []
    assert consolidate_store(store, 1, log=lines.append)["ms/RNA/X/counts"] == [16, 1], lines
    X = read_store(store).X
    assert X.shape == (8000, 3000) and X.nnz == 16 * 500 * 300
    expected = 0.0
    for path in inputs.values():
        with h5py.File(path) as f:
            expected += float(f["X/data"][:].sum(dtype=np.float64))
    assert float(X.sum(dtype=np.float64)) == expected


def _random_cells(context: soma.SOMATileDBContext, store: Path, joinids) -> sp.csr_matrix:
    """X rows ``joinids`` (a coords query of scattered cells), as CSR over the store's genes."""
    with soma.Experiment.open(str(store), context=context) as exp:
        X = exp.ms["RNA"].X["counts"]
        table = X.read((joinids,)).tables().concat()
        rows = np.searchsorted(joinids, table.column("soma_dim_0").to_numpy())
        shape = (len(joinids), X.shape[1])
    cols, values = table.column("soma_dim_1").to_numpy(), table.column("soma_data").to_numpy()
    return sp.csr_matrix((values, (rows, cols)), shape=shape)


def test_random_cells_of_many_fragments_read_in_a_small_budget_with_read_context(sixteen):
    """At atlas size (128 fragments) 1,000 random cells could not be read within TileDB's
    10 GB ("Cannot load enough tiles ..."): its global-order reader pre-orders every
    fragment's tiles. Here 16 fragments in a 10 MB budget fail the same way with TileDB's
    default settings, and read through `kbagg.soma.read_context` (the same budget, the
    pre-ordering off) equal to the h5ad aggregate."""
    store, _, ref = sixteen
    joinids = np.sort(np.random.default_rng(0).choice(8000, 200, replace=False))
    default = soma.SOMATileDBContext(tiledb_config=SMALL_BUDGET)
    with pytest.raises(soma.SOMAError, match="Cannot load enough tiles"):
        _random_cells(default, store, joinids)
    context = read_context(SMALL_BUDGET)
    got = _random_cells(context, store, joinids)
    with soma.Experiment.open(str(store), context=context) as exp:
        obs = exp.obs.read(coords=(joinids,), column_names=["soma_joinid", "obs_id"])
        obs_ids = obs.concat().to_pandas().set_index("soma_joinid").loc[joinids, "obs_id"]
        var = exp.ms["RNA"].var.read(column_names=["soma_joinid", "gene_id"]).concat()
        genes = var.to_pandas().set_index("soma_joinid").sort_index()["gene_id"]
    want = ref[obs_ids.to_numpy(), genes.to_numpy()].X
    assert got.nnz == 200 * 300
    np.testing.assert_array_equal(got.toarray(), dense(want))


def test_read_store_reads_many_fragments_in_a_small_budget(sixteen, monkeypatch):
    """`read_store` reads with kbagg's read settings: the whole store of 16 fragments, in a
    10 MB budget that TileDB's default settings cannot read it in, equals the h5ad aggregate.
    The budget is TileDB's environment variable, so it applies to every context."""
    monkeypatch.setenv("TILEDB_SM_MEM_TOTAL_BUDGET", SMALL_BUDGET_BYTES)
    store, _, ref = sixteen
    with pytest.raises(soma.SOMAError, match="Cannot load enough tiles"):
        _random_cells(soma.SOMATileDBContext(), store, np.arange(8000))
    assert_same_cells(read_store(store), ref)


@pytest.mark.slow  # a child killed mid-append: ~15 s
def test_kill_during_append_then_consolidating_rerun_equals_one_shot(tmp_path):
    """The rerun deletes the half-written append (TileDB delete conditions), writes it again
    and consolidates: the deleted cells must stay deleted and the rewritten ones must stay."""
    from test_soma import META, SAMPLES

    folder = tmp_path / "inputs"
    folder.mkdir()
    inputs = {
        n: write_sample(folder / f"{n}.h5ad", seed=i, **spec)
        for i, (n, spec) in enumerate(SAMPLES.items())
    }
    store = tmp_path / "store"
    # run_killed writes in gene_query: the store is built in it too
    kw = {"project": "P", "log": lambda line: None, "obs_metadata": META, "layout": "gene_query"}
    update_store(
        store,
        {n: inputs[n] for n in ("s1", "s2")},
        run_id="r1",
        **kw,
        manifest_path=tmp_path / "m1.json",
        max_fragments=None,
    )
    proc = run_killed(store, inputs, tmp_path, "matrix", 3)  # s4 killed after its counts
    assert proc.returncode == -9, proc.stderr
    manifest = update_store(
        store, inputs, run_id="r2", manifest_path=tmp_path / "m2.json", max_fragments=1, **kw
    )
    assert manifest["repaired"]["sample"] == "s4"
    assert set(manifest["consolidated"]) >= {"obs", "ms/RNA/X/counts"}
    assert max(fragment_counts(store).values()) == 1
    assert_same_cells(read_store(store), aggregate(inputs, list(SAMPLES), tmp_path))


KILL_CONSOLIDATION = (
    "import sys; from kbagg.soma.store import consolidate_store; "
    "consolidate_store(sys.argv[1], 1, log=print)"
)


def _consolidate_killed(store: Path, when) -> None:
    """Run consolidate_store in a child; SIGKILL it as soon as ``when(store)`` is true."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_CONSOLIDATION, str(store)], env=env, stdout=subprocess.PIPE
    )
    try:
        while child.poll() is None and not when(store):
            time.sleep(0.002)
        assert child.poll() is None, "the consolidation ended before the kill"
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -9
    finally:
        child.kill()
        child.wait()


def _x_folders(store: Path) -> set[str]:
    return {f.name for f in (store / "ms/RNA/X/counts/__fragments").iterdir()}


def _summary(store: Path) -> tuple:
    with soma.Experiment.open(str(store)) as exp:
        x = exp.ms["RNA"].X["counts"].read().tables().concat()
        obs = exp.obs.read(column_names=["obs_id"]).concat().column("obs_id").to_pylist()
    order = np.lexsort((x.column("soma_dim_1").to_numpy(), x.column("soma_dim_0").to_numpy()))
    return (
        obs,
        x.column("soma_dim_0").to_numpy()[order].tobytes(),
        x.column("soma_dim_1").to_numpy()[order].tobytes(),
        x.column("soma_data").to_numpy()[order].tobytes(),
    )


@pytest.mark.slow  # a 5-sample store and two killed consolidations
def test_kill_during_consolidation_then_rerun_equals_the_store(tmp_path):
    genes = [f"G{i:05d}" for i in range(2000)]
    paths = {}
    for i in range(5):
        paths[f"s{i}"] = tmp_path / f"s{i}.h5ad"
        write_sparse_h5ad(paths[f"s{i}"], 2000, genes, 300, seed=i)
    base = tmp_path / "base"
    update_store(
        base,
        paths,
        run_id="b",
        manifest_path=tmp_path / "m.json",
        project="P",
        log=lambda line: None,
        max_fragments=None,
    )
    before = _x_folders(base)
    want = _summary(base)

    def writing_consolidated(store):  # a new fragment folder: the merge is being written
        return bool(_x_folders(store) - before)

    def vacuuming(store):  # an old fragment folder is gone: the vacuum is under way
        return bool(before - _x_folders(store))

    for phase in (writing_consolidated, vacuuming):
        store = tmp_path / phase.__name__
        shutil.copytree(base, store)
        _consolidate_killed(store, phase)
        assert _summary(store) == want, phase.__name__  # readable, and equal, right away
        lines = []
        update_store(
            store,
            paths,
            run_id="again",
            manifest_path=tmp_path / "m2.json",
            project="P",
            log=lines.append,
            max_fragments=1,
        )
        counts = fragment_counts(store)
        assert max(counts.values()) == 1
        assert _fragment_folders(store) == len(_arrays_only(counts))
        assert _summary(store) == want, phase.__name__

"""An appendable TileDB-SOMA store of every sample: `update_store` adds only what is new.

The store is a SOMA Experiment: ``obs`` holds what the h5ad aggregate's obs holds (``obs_id``
is the aggregate's obs name, ``<barcode><index_unique><sample>``; the ``label`` column; the
sample-table columns as categoricals) plus ``kbagg_run``, the run that added the cell.
``ms[<measurement>].var`` is indexed by ``gene_id`` with ``gene_name``; X layer ``counts`` is
the inputs' X and kb's other layers (``mature``, ``nascent``, ``ambiguous``) are further X
layers. With layout ``two_arrays`` each layer ``L`` is kept twice, cell-major in ``X[L]`` and
gene-major in ``X[L_by_gene]`` (`kbagg.soma.layouts`); every write below writes both. The
genes are always the union of the samples' genes: a new gene is added to var when the first
sample that has it is appended.

How an update stays correct (all under a lock file beside the store, ``.<name>.lock``):

* The store's own metadata holds a journal (key ``kbagg_store``): for every sample the
  SHA-256 of its input, its sample-table row, its cells' ``soma_joinid`` range and the run
  and project that added it. A sample is appended as one step: it is registered
  (``tiledbsoma.io.register_anndatas``), its range is written to the journal as *pending*,
  then ``tiledbsoma.io.from_anndata`` writes its obs and var rows and sizes the X arrays,
  `kbagg.soma.matrix.write_matrix` writes its matrices, and the journal marks it committed.
* A run killed mid-append leaves a pending entry. The next update deletes every obs row,
  X/obsm cell and var row the pending append could have written (its ``soma_joinid`` range
  and the genes numbered past the var count it started from), then carries on: nothing
  half-written remains, and the sample is appended again from its input.
* A sample of this project whose input (SHA-256) or sample-table row changed, or that left
  the set, makes the store stale: it is rebuilt from the current inputs into a sibling
  directory that then replaces it (the log and the manifest say why). A store that also holds
  cells of other projects (an atlas) is never rebuilt; such a change stops with a
  `StoreError` instead.
* Appending to an existing experiment (another project's, or one kbagg did not make) checks
  everything before writing: the measurement, ``gene_id`` in var, obs/var column types,
  obs_ids already present. Columns the store has and a sample lacks are filled with nulls,
  as the aggregate's outer join does; a column the store lacks is an error (or, in a store
  of this project alone, a reason to rebuild).

Beside this module in ``kbagg.soma``: ``samples`` (the inputs as the store holds them, their
matrices, column types), ``journal`` (the journal's records, read and written), ``fragments``
(fragment counts and consolidation, shared with ``parallel``, the parallel writers),
``libtiledb`` (the merge of the journal's metadata files, TileDB's C API),
``context`` (the TileDB settings every read uses), ``layouts`` (the X arrays' layouts,
`query_layer`), ``matrix`` (matrices written in an array's global order), ``lock`` (names,
`StoreError`, the lock), ``obsm`` (`add_obsm`) and ``cli`` (its command line).

tiledbsoma 2.3 with anndata 0.13: ``AnnData.layers`` lists X under the key None, which
``from_anndata`` cannot write, so samples are handed over with X=None and every matrix
(``counts`` included) as a layer.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import tiledbsoma as soma
import tiledbsoma.io as soma_io

import kbagg
from kbagg.atomic import atomic_output
from kbagg.concat.options import ConcatOptions
from kbagg.schema import schema_default
from kbagg.soma.context import read_context
from kbagg.soma.fragments import consolidate, fragment_counts, schema_counts
from kbagg.soma.journal import (
    JOURNAL_KEY,
    Journal,
    PendingAppend,
    SampleEntry,
    write_journal,
)
from kbagg.soma.layouts import (
    BY_GENE_SUFFIX,
    COL_LAYOUT,
    GENE_QUERY,
    GENE_QUERY_LAYOUT,
    TWO_ARRAYS,
    by_gene,
    check_layout,
    copies,
    layer_arrays,
    main_platform_config,
)
from kbagg.soma.lock import (
    COUNTS_LAYER,
    OBS_ID,
    RUN_COLUMN,
    VAR_ID,
    Log,
    StoreError,
    stderr_log,
    store_lock,
)
from kbagg.soma.matrix import write_matrix
from kbagg.soma.parallel import write_sample
from kbagg.soma.samples import (
    Sample,
    column_kinds,
    conform,
    load_matrices,
    read_samples,
    union_kinds,
)

__all__ = [
    "COUNTS_LAYER",
    "GENE_QUERY_LAYOUT",
    "RUN_COLUMN",
    "StoreError",
    "consolidate_store",
    "fragment_counts",
    "read_store",
    "schema_counts",
    "update_store",
]


# ---------------------------------------------------------------------------- fragments


def consolidate_store(
    uri: str | Path,
    max_fragments: int | None = 1,
    *,
    lock_timeout_s: float | None = None,
    log: Log | None = None,
) -> dict[str, list[int]]:
    """Consolidate and vacuum the arrays of the store that hold more than ``max_fragments``
    fragments, under the store's lock (`update_store` does this after its appends).

    Parameters
    ----------
    uri
        The store (a local TileDB-SOMA Experiment).
    max_fragments
        Arrays with more fragments than this are merged into one; 1 merges every array that
        has more than one, None does nothing.
    lock_timeout_s
        As for `update_store`.
    log
        Called with each log line; defaults to printing to stderr.

    Returns
    -------
    dict
        Array folder -> [fragments before, fragments after], for the arrays consolidated.
    """
    log = log or stderr_log
    path = Path(str(uri).removeprefix("file://")).absolute()
    if not path.exists():
        raise StoreError(f"{uri}: no such store")
    with store_lock(path, lock_timeout_s, log):
        return consolidate(path, max_fragments, log)


# ---------------------------------------------------------------------------- the store


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class _State:
    """What is in the store at ``uri`` before this update."""

    exists: bool
    journal: Journal | None = None
    n_obs: int = 0
    measurements: list[str] = field(default_factory=list)
    obs_kinds: dict[str, str] = field(default_factory=dict)
    var_kinds: dict[str, str] | None = None  # None: the measurement is absent
    layer_dtypes: dict[str, np.dtype] = field(default_factory=dict)
    obsm_keys: list[str] = field(default_factory=list)

    def own(self, project: str) -> dict[str, SampleEntry]:
        return self.journal.own(project) if self.journal else {}

    def foreign_n_obs(self, project: str) -> int:
        return self.n_obs - sum(s.n_obs for s in self.own(project).values())


def _read_state(uri: str, measurement: str) -> _State:
    if not Path(uri).exists():
        return _State(exists=False)
    try:
        exp = soma.Experiment.open(uri, context=read_context())
    except (soma.DoesNotExistError, soma.SOMAError) as e:
        raise StoreError(f"{uri}: not a TileDB-SOMA Experiment ({e})") from e
    with exp:
        raw = exp.metadata.get(JOURNAL_KEY)
        if "obs" not in exp:
            raise StoreError(f"{uri}: the experiment has no obs dataframe")
        state = _State(
            exists=True,
            journal=None if raw is None else Journal.from_json(raw, source=f"{uri}: its journal"),
            n_obs=exp.obs.count,
            measurements=list(exp.ms.keys()) if "ms" in exp else [],
            obs_kinds=column_kinds(exp.obs.schema),
        )
        if measurement in state.measurements:
            ms = exp.ms[measurement]
            state.var_kinds = column_kinds(ms.var.schema) if "var" in ms else {}
            if "X" in ms:
                for layer in ms.X:
                    arr_type = ms.X[layer].schema.field("soma_data").type
                    state.layer_dtypes[layer] = np.dtype(arr_type.to_pandas_dtype())
            state.obsm_keys = list(ms.obsm.keys()) if "obsm" in ms else []
    return state


def _store_obs_ids(uri: str) -> pd.Index:
    with soma.Experiment.open(uri, context=read_context()) as exp:
        table = exp.obs.read(column_names=[OBS_ID]).concat()
    return pd.Index(table.column(OBS_ID).to_numpy(zero_copy_only=False))


def _max_joinid(df: soma.DataFrame) -> int:
    ids = df.read(column_names=["soma_joinid"]).concat().column("soma_joinid").to_numpy()
    return int(ids.max()) + 1 if len(ids) else 0


def _rollback(uri: str, measurement: str, pending: PendingAppend, log: Log) -> None:
    """Delete everything a killed append could have written: obs rows, X and obsm cells of
    its joinid range, and var rows numbered from the var count it started from."""
    start, stop = pending.obs_joinids
    targets = []  # (class, uri, first row, last row) to delete, within the current domain
    with soma.Experiment.open(uri, context=read_context()) as exp:
        targets.append((soma.DataFrame, exp.obs.uri, start, min(stop, exp.obs.domain[0][1] + 1)))
        if measurement in exp.ms:
            ms = exp.ms[measurement]
            if "var" in ms:
                n_vars = _max_joinid(ms.var)
                targets.append((soma.DataFrame, ms.var.uri, pending.n_vars_before, n_vars))
            for coll in ("X", "obsm"):
                if coll in ms:
                    for arr in ms[coll].values():
                        targets.append((type(arr), arr.uri, start, min(stop, arr.shape[0])))
    for cls, member, first, end in targets:
        if end > first:  # a killed append may not have grown this array yet
            with cls.open(member, "d") as arr:
                arr.delete_cells((slice(first, end - 1),))
    # A later write in the same millisecond as a delete would be deleted too.
    time.sleep(0.005)
    log(
        f"soma: repaired {uri}: removed the half-written append of sample {pending.sample} "
        f"(run {pending.run}, up to {stop - start} cells)"
    )


def _append_sample(
    uri: str,
    sample: Sample,
    journal: dict,
    *,
    obs_kinds: dict[str, str],
    var_kinds: dict[str, str],
    dtypes: Mapping[str, np.dtype],
    measurement: str,
    run_id: str,
    project: str,
    log: Log,
    platform_config: Mapping | None,
    layout: str,
    reserve: bool = False,
) -> None:
    """Register, journal as pending, write, journal as committed: one sample, one step.
    With ``reserve``, the X layers are written empty (shape and dtype only) and the sample is
    journaled as reserved, for `kbagg.soma.parallel.write_sample` to fill."""
    n = len(sample.obs)
    where = f"sample {sample.name}"
    obs = conform(sample.obs, obs_kinds, OBS_ID, where)
    var = conform(sample.var, var_kinds, VAR_ID, where)
    exists = Path(uri).exists()
    entry = {
        **sample.fingerprint,
        "n_obs": n,
        "path": str(sample.path),
        "run": run_id,
        "project": project,
        "added": _now(),
        "state": "reserved" if reserve else "committed",
    }  # a SampleEntry once its cells' joinids are known
    if n == 0:  # tiledbsoma cannot ingest an empty AnnData: journal it, write nothing
        journal.samples[sample.name] = SampleEntry(**entry, obs_joinids=[0, 0])
        if exists:
            write_journal(uri, journal)
        log(f"soma: sample {sample.name} has no cells; nothing to append")
        return
    skeleton = ad.AnnData(obs=obs, var=var)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mapping = soma_io.register_anndatas(
            uri if exists else None,
            [skeleton],
            measurement_name=measurement,
            obs_field_name=OBS_ID,
            var_field_name=VAR_ID,
            context=read_context(),
        )
    joinids = mapping.obs_axis.joinid_map.loc[obs.index, "soma_joinid"].to_numpy()
    start = int(joinids[0])
    if not np.array_equal(joinids, np.arange(start, start + n)):
        raise RuntimeError(f"{where}: registration gave non-contiguous soma_joinids")
    if exists:
        with soma.Experiment.open(uri, context=read_context()) as exp:
            n_vars = _max_joinid(exp.ms[measurement].var) if measurement in exp.ms else 0
            in_store = set(exp.ms[measurement].X) if measurement in exp.ms else set()
        journal.pending = PendingAppend(
            sample=sample.name,
            run=run_id,
            obs_joinids=[start, start + n],
            n_vars_before=n_vars,
            **sample.fingerprint,
        )
        write_journal(uri, journal)
        mapping.prepare_experiment(uri)
    # obs and var through tiledbsoma, the matrices by write_matrix below, in each array's
    # global order (tiledbsoma's unordered write leaves the sort to TileDB: most of an append's
    # time). prepare_experiment has sized the store's X arrays; an X array the store lacks is
    # created by handing tiledbsoma an empty matrix.
    adata = ad.AnnData(obs=obs, var=var)
    for layer in sample.layers:
        if not exists or layer not in in_store:
            adata.layers[layer] = sp.csr_matrix((n, len(var)), dtype=dtypes[layer])
    if reserve:
        log(f"soma: reserving sample {sample.name} ({n} cells, joinids {start}-{start + n})")
    else:
        log(f"soma: appending sample {sample.name} ({n} cells)")
    soma_io.from_anndata(
        uri,
        adata,
        measurement,
        registration_mapping=mapping,
        obs_id_name=OBS_ID,
        var_id_name=VAR_ID,
        X_layer_name=COUNTS_LAYER,
        uns_keys=[],
        platform_config=platform_config,
        context=read_context(),
    )
    del adata
    if layout == TWO_ARRAYS:
        _create_copies(uri, measurement, sample.layers)
    if not reserve:
        cols = mapping.var_axes[measurement].joinid_map.loc[var.index, "soma_joinid"]
        with soma.Experiment.open(uri, context=read_context()) as exp:
            X = exp.ms[measurement].X
            arrays = {L: [X[a].uri for a in layer_arrays(L, layout)] for L in sample.layers}
        for layer, matrix in load_matrices(sample, dtypes).items():
            for array in arrays[layer]:
                with soma.SparseNDArray.open(array, "w", context=read_context()) as arr:
                    write_matrix(arr, matrix, start, cols.to_numpy(dtype=np.int64))
    journal.samples[sample.name] = SampleEntry(**entry, obs_joinids=[start, start + n])
    journal.pending = None
    write_journal(uri, journal)


def _create_copies(uri: str, measurement: str, layers) -> None:
    """Create the gene-major copy (`COL_LAYOUT`) of each of ``layers`` that has none, with the
    layer's shape and type. A copy made here starts empty: its layer was just created (the
    store's layout check refuses a store whose layers have cells but no copies)."""
    with soma.Experiment.open(uri, context=read_context()) as exp:
        X = exp.ms[measurement].X
        todo = {
            by_gene(L): (X[L].schema.field("soma_data").type, X[L].shape)
            for L in layers
            if by_gene(L) not in X
        }
    if not todo:
        return
    with soma.Experiment.open(uri, "w", context=read_context()) as exp:
        X = exp.ms[measurement].X
        for name, (arrow_type, shape) in todo.items():
            X.add_new_sparse_ndarray(
                name, type=arrow_type, shape=shape, platform_config=COL_LAYOUT
            ).close()


def _store_layout(state: _State) -> str | None:
    """The layout of a store: its journal's; a store without one (made elsewhere) is
    ``two_arrays`` if every X layer has a gene-major copy, ``gene_query`` if not, and None
    (either will do) without X layers."""
    if state.journal is not None:
        return state.journal.layout
    names = set(state.layer_dtypes)
    base = names - copies(names)
    if not base:
        return None
    if all(by_gene(L) in names for L in base):
        return TWO_ARRAYS
    return GENE_QUERY


@dataclass
class _Plan:
    """What this update does, decided before anything is written."""

    action: str  # "unchanged", "appended", "created" or "rebuilt"
    reason: str | None
    append: list[Sample]
    obs_kinds: dict[str, str]
    var_kinds: dict[str, str]
    dtypes: dict[str, np.dtype]


def _layer_dtypes(samples: list[Sample], existing: Mapping[str, np.dtype], uri: str) -> dict:
    """Store dtype of each layer: the existing array's, else the samples' common type."""
    out = dict(existing)
    for layer in {layer for s in samples for layer in s.dtypes}:
        present = [s.dtypes[layer] for s in samples if layer in s.dtypes]
        if layer not in existing:
            out[layer] = np.result_type(*present)
            continue
        for s in samples:
            if layer in s.dtypes and not np.can_cast(s.dtypes[layer], existing[layer], "safe"):
                raise StoreError(
                    f"sample {s.name}: layer {layer!r} is {s.dtypes[layer]}, which store {uri} "
                    f"({existing[layer]}) cannot hold without loss"
                )
    return out


def _stale_reasons(state: _State, samples: list[Sample], project: str, settings: dict) -> list:
    """Why the samples this project already has in the store no longer match the inputs."""
    reasons = []
    held = state.journal.settings() if state.journal else {}
    own = state.own(project)
    for key, value in settings.items():
        if key == "layout":  # every project's cells are kept in it: see _plan
            continue
        if own and held.get(key, value) != value:
            reasons.append(f"{key} changed from {held.get(key)!r} to {value!r}")
    wanted = {s.name: s for s in samples}
    for name, entry in own.items():
        if name not in wanted:
            reasons.append(f"sample {name} left the sample set")
        elif entry.sha256 != wanted[name].sha256:
            reasons.append(f"sample {name} input changed (sha256 {entry.sha256[:12]}…)")
        elif entry.metadata != wanted[name].metadata:
            reasons.append(f"sample {name} sample-table row changed")
    return reasons


def _plan(
    uri: str,
    state: _State,
    samples: list[Sample],
    project: str,
    settings: dict,
    pending: PendingAppend | None,
) -> _Plan:
    measurement = settings["measurement"]
    obs_kinds = union_kinds([(s.name, s.obs) for s in samples], OBS_ID, "obs")
    var_kinds = union_kinds([(s.name, s.var) for s in samples], VAR_ID, "var")
    build = _Plan("created", None, samples, obs_kinds, var_kinds, _layer_dtypes(samples, {}, uri))
    if not state.exists:
        return build
    is_atlas = state.foreign_n_obs(project) > 0 or state.journal is None
    reasons = _stale_reasons(state, samples, project, settings)
    held_layout = _store_layout(state)
    layout_changed = bool(state.n_obs) and held_layout not in (None, settings["layout"])
    if layout_changed:
        reasons.append(f"layout changed from {held_layout!r} to {settings['layout']!r}")
    if pending and not is_atlas:
        again = next((s for s in samples if s.name == pending.sample), None)
        if again is None or again.fingerprint != pending.fingerprint:
            reasons.append(f"a half-written append of sample {pending.sample} is not redone")
    if not is_atlas:
        extra = [c for c in obs_kinds if c not in state.obs_kinds]
        if extra and state.n_obs:
            reasons.append(f"new obs column(s) {', '.join(extra)}")
        extra = [c for c in var_kinds if state.var_kinds is not None and c not in state.var_kinds]
        if extra and state.n_obs:
            reasons.append(f"new var column(s) {', '.join(extra)}")
    if reasons:
        if is_atlas:
            raise StoreError(
                f"{uri} holds cells of other projects, so it cannot be rebuilt: "
                + "; ".join(reasons)
                + (
                    f" (set aggregate.soma.layout: {held_layout} to append in the store's layout)"
                    if layout_changed
                    else " (give changed samples new names, or rebuild the atlas yourself)"
                )
            )
        build.action, build.reason = "rebuilt", "; ".join(reasons)
        return build
    own = state.own(project)
    new = [s for s in samples if s.name not in own]
    _check_store_accepts(uri, state, new, measurement, obs_kinds, var_kinds)
    dtypes = _layer_dtypes(new, state.layer_dtypes, uri)
    return _Plan(
        "appended" if new else "unchanged",
        None,
        new,
        {**state.obs_kinds, **obs_kinds} if state.obs_kinds else obs_kinds,
        {**(state.var_kinds or {}), **var_kinds},
        dtypes,
    )


def _check_store_accepts(uri, state: _State, new: list[Sample], measurement, obs_kinds, var_kinds):
    """Every conflict between the store and the samples to append, before anything is written."""
    if not new:
        return
    if state.n_obs and measurement not in state.measurements:
        names = ", ".join(state.measurements) or "none"
        raise StoreError(
            f"{uri}: the store's measurement is {names}, not {measurement!r}; "
            f"append with measurement={state.measurements[0] if state.measurements else 'RNA'!r}"
        )
    if OBS_ID not in state.obs_kinds:
        raise StoreError(f"{uri}: obs has no {OBS_ID!r} column to match cells by")
    if state.var_kinds is not None and VAR_ID not in state.var_kinds:
        cols = ", ".join(c for c in state.var_kinds) or "none"
        raise StoreError(
            f"{uri}: var of measurement {measurement!r} has no {VAR_ID!r} column (columns: "
            f"{cols}); kbagg matches genes by gene_id"
        )
    for axis, ours, theirs in (("obs", obs_kinds, state.obs_kinds), ("var", var_kinds, None)):
        theirs = state.var_kinds if axis == "var" else theirs
        if theirs is None:
            continue
        for col, kind in ours.items():
            if col not in theirs:
                raise StoreError(
                    f"{uri}: the store's {axis} has no column {col!r}, which the new samples "
                    f"have; drop it from the inputs or add it to the store first"
                )
            if theirs[col] != kind:
                raise StoreError(
                    f"{uri}: {axis} column {col!r} is {theirs[col]} in the store but {kind} in "
                    f"the new samples; make the types agree"
                )
    existing = _store_obs_ids(uri)
    for s in new:
        clash = s.obs.index[s.obs.index.isin(existing)]
        if len(clash):
            raise StoreError(
                f"{uri}: {len(clash)} obs_id(s) of sample {s.name} are already in the store "
                f"(e.g. {', '.join(clash[:3])}); rename the sample or change index_unique"
            )


def _check_unique_obs_ids(samples: list[Sample]) -> None:
    ids = pd.Index(np.concatenate([s.obs.index.to_numpy() for s in samples]))
    if not ids.is_unique:
        dupes = ids[ids.duplicated()].unique()
        raise StoreError(
            f"{len(dupes)} obs_id(s) occur in more than one cell (e.g. "
            f"{', '.join(dupes[:3])}); set index_unique (e.g. '-') to append the sample name"
        )


def _extension_dtypes(samples: list[Sample]) -> dict[str, str]:
    """Nullable pandas dtypes (boolean, Int64, ...) that to_anndata returns as object."""
    out = {}
    for s in samples:
        for col, dtype in s.obs.dtypes.items():
            if isinstance(dtype, pd.api.extensions.ExtensionDtype) and not isinstance(
                dtype, pd.CategoricalDtype
            ):
                out[str(col)] = str(dtype)
    return out


def _write_all(uri: str, plan: _Plan, journal: Journal, ctx: dict) -> None:
    for sample in plan.append:
        _append_sample(
            uri,
            sample,
            journal,
            obs_kinds=plan.obs_kinds,
            var_kinds=plan.var_kinds,
            dtypes=plan.dtypes,
            **ctx,
        )


def _sibling(uri: Path, tag: str) -> Path:
    return uri.parent / f".{uri.name}.{tag}-{os.getpid()}"


def _clean_siblings(uri: Path, log: Log) -> None:
    """Leftovers of a killed rebuild (we hold the lock, so nobody else is building)."""
    for entry in sorted(uri.parent.glob(f".{uri.name}.*-*")):
        if entry.name.startswith(f".{uri.name}.build-"):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(f".{uri.name}.old-"):
            if uri.exists():
                shutil.rmtree(entry, ignore_errors=True)
            else:  # killed between the two renames of a rebuild: put the old store back
                os.rename(entry, uri)
                log(f"soma: restored {uri} from an interrupted rebuild")


def _build(uri: Path, plan: _Plan, journal: Journal, ctx: dict) -> None:
    """Write every sample into a sibling directory, then put it in the store's place."""
    tmp = _sibling(uri, "build")
    _write_all(str(tmp), plan, journal, ctx)
    if not tmp.exists():  # every sample was empty: an experiment with nothing in it
        soma.Experiment.create(str(tmp)).close()
    write_journal(str(tmp), journal)
    if uri.exists():
        old = _sibling(uri, "old")
        os.rename(uri, old)
        os.rename(tmp, uri)
        shutil.rmtree(old)
    else:
        os.rename(tmp, uri)


PROJECT_MARKER = ".kbagg_project"


def project_id(marker: str | Path) -> str:
    """The id of this project, kept in `marker` (written on first use). A file, not a path:
    a working directory that is moved or copied is still the same project."""
    import uuid

    marker = Path(marker)
    if not marker.is_file():
        with atomic_output(marker) as tmp:
            Path(tmp).write_text(f"kbagg project {uuid.uuid4()}\n")
    return marker.read_text().strip()


def update_store(
    uri: str | Path,
    samples: Mapping[str, str | Path],
    *,
    run_id: str,
    manifest_path: str | Path,
    measurement: str = "RNA",
    options: ConcatOptions | None = None,
    checksums: Mapping[str, str] | None = None,
    project: str | None = None,
    lock_timeout_s: float | None = None,
    platform_config: Mapping | None = None,
    max_fragments: int | None = schema_default("aggregate", "soma", "max_fragments"),
    layout: str = schema_default("aggregate", "soma", "layout"),
    log: Log | None = None,
    reserve: bool = False,
    **concat,
) -> dict:
    """Bring the SOMA store at ``uri`` up to date with ``samples``; write a JSON manifest.

    Samples not yet in the store are appended (cells, and their new genes on var); samples
    already there are neither read nor rewritten. A sample of this project whose input or
    sample-table row changed, or that left the set, makes the store be rebuilt (the manifest
    and log say why); a store holding other projects' cells is never rebuilt. A run killed
    mid-append is repaired by the next call. Calls on the same ``uri`` are serialized by a
    lock file beside it.

    Parameters
    ----------
    uri
        Local directory of the store (a TileDB-SOMA Experiment); created if missing. It may
        be an existing experiment made elsewhere: new samples are appended to it.
    samples
        Sample name -> per-sample h5ad (kbagg's ``filtered.h5ad``), in sample order.
    run_id
        Names this run; written to obs column ``kbagg_run`` of every cell it adds.
    manifest_path
        JSON written (atomically) when the store is up to date: the samples with their
        SHA-256 and cell counts, what was appended, rebuilt or repaired, and why.
    measurement
        The SOMA measurement holding var and X (``ms[measurement]``).
    options
        `ConcatOptions`, as for ``concat_on_disk``: ``label`` (the obs column holding the
        sample name, a categorical), ``index_unique`` (obs_ids are
        ``<barcode><index_unique><sample>``; None keeps the barcodes) and ``obs_metadata``
        (its other columns become categorical obs columns); ``join`` and
        ``chunk_entries`` do not apply (samples are appended). None: the schema's defaults.
    checksums
        Sample name -> SHA-256 of its h5ad, when already known; computed otherwise.
    project
        Which samples of the store this call manages; other projects' samples are never
        touched. Default: the id `project_id` keeps in the current directory, so that
        moving or copying a kbagg working directory keeps its samples its own.
    lock_timeout_s
        Seconds to wait for another update of the same store; None waits indefinitely,
        0 fails at once.
    platform_config
        tiledbsoma ``platform_config`` for the arrays this update creates (tile extents,
        cell order, capacity...); existing arrays keep theirs. None: the layout's
        (`GENE_QUERY_LAYOUT`, or `ROW_LAYOUT` for ``two_arrays``); ``{}``: tiledbsoma's
        defaults. The gene-major copies of ``two_arrays`` are always `COL_LAYOUT`.
    max_fragments
        After writing, every array of the store holding more fragments than this (an append
        adds one to each array it writes) is consolidated into one and vacuumed
        (`consolidate_store`), still under the lock; None never consolidates. Default: the
        config schema's ``aggregate.soma.max_fragments``.
    layout
        How X is kept (`kbagg.soma.layouts`): ``"gene_query"``, one array per layer in
        `GENE_QUERY_LAYOUT`; ``"two_arrays"``, each layer ``L`` cell-major in ``X[L]`` and a
        gene-major copy in ``X[L_by_gene]`` (`query_layer` names the one to query). It is
        journaled: a store of this project in another layout is rebuilt (the manifest and log
        say why), an atlas of other projects' cells is refused. Default: the config schema's
        ``aggregate.soma.layout``.
    log
        Called with each log line; defaults to printing to stderr.
    reserve
        Register and reserve only (the first step of a parallel build, `kbagg.soma.parallel`):
        new samples get their obs and var rows and an empty range of the X layers, and are
        journaled as reserved; `kbagg.soma.parallel.write_sample` writes each one's X layers
        (in parallel jobs) and `kbagg.soma.parallel.finish_store` commits them. The manifest's
        ``appended`` lists the samples to write.
    **concat
        Fields of `ConcatOptions` that replace those of ``options``.

    Returns
    -------
    dict
        The manifest.
    """
    options = ConcatOptions.given(options, **concat)
    label, index_unique = options.label, options.index_unique
    log = log or stderr_log
    if not samples:
        raise StoreError(f"{uri}: no samples given")
    if not label:
        raise ValueError("label must be a non-empty column name")
    if "://" in str(uri) and not str(uri).startswith("file://"):
        raise StoreError(f"{uri}: only local stores are supported (the lock is a local file)")
    path = Path(str(uri).removeprefix("file://")).absolute()
    project = project or project_id(Path.cwd() / PROJECT_MARKER)
    settings = {
        "measurement": measurement,
        "label": label,
        "index_unique": index_unique,
        "layout": check_layout(layout),
    }
    wanted = read_samples(samples, checksums, options.obs_metadata, label, index_unique, run_id)
    _check_unique_obs_ids(wanted)
    if layout == TWO_ARRAYS:
        for s in wanted:
            clash = [L for L in s.layers if L.endswith(BY_GENE_SUFFIX)]
            if clash:
                raise StoreError(
                    f"{s.path}: layer {clash[0]!r} clashes with the gene-major copies of "
                    f"layout {TWO_ARRAYS} (X[<layer>{BY_GENE_SUFFIX}]); rename it"
                )
    ctx = {
        "measurement": measurement,
        "run_id": run_id,
        "project": project,
        "log": log,
        "platform_config": main_platform_config(layout)
        if platform_config is None
        else platform_config,
        "layout": layout,
        "reserve": reserve,
    }
    with store_lock(path, lock_timeout_s, log):
        _clean_siblings(path, log)
        uri = str(path)
        state = _read_state(uri, measurement)
        pending = state.journal.pending if state.journal else None
        repaired = None
        if pending:
            _rollback(uri, measurement, pending, log)
            state.journal.pending = None
            write_journal(uri, state.journal)
            repaired = {
                "sample": pending.sample,
                "run": pending.run,
                "obs_joinids": pending.obs_joinids,
            }
            state = _read_state(uri, measurement)
        plan = _plan(uri, state, wanted, project, settings, pending)
        run = {"run": run_id, "time": _now(), "kbagg": kbagg.__version__, "action": plan.action}
        if plan.action in ("created", "rebuilt"):
            if plan.reason:
                log(f"soma: rebuilding {uri}: {plan.reason}")
            if state.obsm_keys:
                log(
                    f"soma: the rebuilt store has no obsm ({', '.join(state.obsm_keys)}): add again"
                )
            journal = Journal(**settings)
            journal.obs_dtypes = _extension_dtypes(wanted)
            journal.runs = [{**run, "reason": plan.reason}]
            _build(path, plan, journal, ctx)
        else:
            journal = state.journal or Journal(**settings)
            journal.obs_dtypes = {
                **journal.obs_dtypes,
                **_extension_dtypes(plan.append),
            }
            if plan.append:
                journal.runs = [*journal.runs, run]
            if not reserve:
                _complete_reserved(uri, journal, log)
            _write_all(uri, plan, journal, ctx)
            if not plan.append:
                log(f"soma: {uri} already holds all {len(wanted)} samples; nothing to append")
        consolidated = consolidate(path, max_fragments, log)
        manifest = _manifest(path, wanted, journal, plan, repaired, settings, run_id, project)
        manifest["consolidated"] = consolidated
        manifest["fragments"] = fragment_counts(path) if path.exists() else {}
        manifest["schemas"] = schema_counts(path) if path.exists() else {}
        with atomic_output(manifest_path) as tmp:
            Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _complete_reserved(uri: str, journal: Journal, log: Log) -> None:
    """Write and commit the samples a parallel build reserved but did not finish. Its own
    writers must not be running (they take no lock): run this only when that build is over."""
    reserved = [n for n, e in journal.samples.items() if e.state == "reserved"]
    for name in reserved:
        write_sample(uri, name, log=log)
        journal.samples[name].state = "committed"
    if reserved:
        write_journal(uri, journal)
        log(f"soma: completed the reserved sample(s) {', '.join(reserved)} of a parallel build")


def _manifest(path, wanted, journal, plan, repaired, settings, run_id, project) -> dict:
    with soma.Experiment.open(str(path), context=read_context()) as exp:
        n_obs = exp.obs.count if "obs" in exp else 0
        measurement = settings["measurement"]
        has_var = "ms" in exp and measurement in exp.ms and "var" in exp.ms[measurement]
        n_vars = exp.ms[measurement].var.count if has_var else 0
    entries = journal.samples
    return {
        "store": str(path),
        **settings,
        "run": run_id,
        "project": project,
        "action": plan.action,
        "reason": plan.reason,
        "repaired": repaired,
        "appended": [s.name for s in plan.append],
        "samples": {
            s.name: {
                "sha256": s.sha256,
                "n_obs": entries[s.name].n_obs,
                "run": entries[s.name].run,
            }
            for s in wanted
        },
        "n_obs": n_obs,
        "n_vars": n_vars,
        "n_obs_other_projects": n_obs - sum(entries[s.name].n_obs for s in wanted),
    }


# ---------------------------------------------------------------------------- reading


def read_store(uri: str | Path, measurement: str = "RNA") -> ad.AnnData:
    """The whole store as an in-memory AnnData (``tiledbsoma.io.to_anndata``), read with
    kbagg's TileDB settings (`kbagg.soma.read_context`).

    X is layer ``counts``, the other X layers are ``layers`` (the gene-major copies of layout
    ``two_arrays``, the same values, are not read); obs is indexed by ``obs_id``
    and var by ``gene_id``. Nullable columns (pandas ``boolean``, ``Int64``) that to_anndata
    returns as object get their dtype back from the store's journal. Categories are in the
    order their values were first added to the store.

    The parts are read one after the other in the calling thread (``read_context(threads=
    False)``), not in tiledbsoma's thread pool: see the known crash in docs/soma.md.

    Parameters
    ----------
    uri
        The store.
    measurement
        The measurement to read.
    """
    uri = str(uri)
    with soma.Experiment.open(uri, context=read_context(threads=False)) as exp:
        raw = exp.metadata.get(JOURNAL_KEY)
        journal = Journal.from_json(raw, source=f"{uri}: its journal") if raw else None
        layers = list(exp.ms[measurement].X.keys())
        if journal is not None and journal.layout == TWO_ARRAYS:
            layers = [k for k in layers if k not in copies(layers)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata = soma_io.to_anndata(
                exp,
                measurement,
                X_layer_name=COUNTS_LAYER if COUNTS_LAYER in layers else None,
                extra_X_layer_names=[k for k in layers if k != COUNTS_LAYER] or None,
                obs_id_name=OBS_ID,
                var_id_name=VAR_ID,
                uns_keys=[],
            )
    dtypes = journal.obs_dtypes if journal is not None else {}
    for col, dtype in dtypes.items():
        if col in adata.obs.columns:
            adata.obs[col] = adata.obs[col].astype(dtype)
    return adata

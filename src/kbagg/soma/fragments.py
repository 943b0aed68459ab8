"""A store's fragments: how many each array holds (`fragment_counts`), the folders a killed
write left (`remove_uncommitted`), and their consolidation (`consolidate`), shared by the
store's updates (`kbagg.soma.store`) and the parallel writers' finish (`kbagg.soma.parallel`).

Every append adds a fragment to each array it writes; a consolidation merges an array's
fragments into one and vacuums the ones it replaced. Every write of a group's metadata adds a
file too (the journal, in the experiment's metadata, is written twice per append): those are
counted as ``<group>/__meta`` and merged the same way (`kbagg.soma.libtiledb`). Every append
also evolves each array's schema (tiledbsoma resizes the arrays and extends obs's
enumerations), and TileDB reads every schema version of an array when it opens it, but has no
vacuum for them: after a consolidation the versions no fragment uses are deleted here."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import tiledbsoma as soma

from kbagg.soma.context import read_context
from kbagg.soma.libtiledb import consolidate_group_metadata, fragment_schema_names
from kbagg.soma.lock import Log

__all__ = [
    "CONSOLIDATION_CONFIG",
    "CONSOLIDATION_MODES",
    "consolidate",
    "fragment_counts",
    "remove_uncommitted",
    "schema_counts",
]

# What a consolidation merges, in this order, each consolidated then vacuumed (TileDB's
# modes): the data fragments into one; then the commit files, the fragments' footers and the
# array metadata (one file per write of each) into one each.
CONSOLIDATION_MODES = ("fragments", "commits", "fragment_meta", "array_meta")
# TileDB's default consolidation buffers (50 MB per field, 2 GB in total) cost 1.9-2.5 GB of
# RAM and made the merge slower: 8 fragments of 19.2 M non-zeros, 16.9 s and 2.5 GB peak RSS;
# with 1 MB buffers 8.2 s and 0.53 GB; 6 fragments of a few cells, 1.9 s -> 0.15 s
# (2026-12-04, one process per setting, a loaded 2-core machine).
# Added to kbagg's read settings (`read_context`): the merge's input is TileDB's sparse
# global-order reader, whose default tile pre-ordering could not merge 128 fragments of 400 M
# non-zeros of GENE_QUERY_LAYOUT within its 10 GB budget (ratio_coords 0.9 failed too);
# without it they merged in 158 s at 3.2 GB peak RSS (2026-12-05, docs/soma_benchmarks.md
# "At atlas size").
CONSOLIDATION_CONFIG = {"sm.consolidation.buffer_size": str(1 << 20)}


# An array schema's file in ``__schema``: ``__<t1>_<t2>_<uuid>``, t1 and t2 its timestamp in ms.
_SCHEMA_FILE = re.compile(r"__(\d+)_(\d+)_[0-9a-f]+")


def _arrays(path: Path) -> list[Path]:
    """Every TileDB array in the store (obs, var, each X layer, each obsm), by its folder."""
    return sorted(p.parent for p in path.rglob("__schema") if (p.parent / "__fragments").is_dir())


def _metadata_folders(path: Path) -> list[Path]:
    """The ``__meta`` folder of every TileDB group in the store (the experiment, ``ms``, ...)."""
    return sorted(
        p.parent / "__meta" for p in path.rglob("__group") if (p.parent / "__meta").is_dir()
    )


def _metadata_files(folder: Path) -> int:
    """Metadata writes a group's open reads: its ``__meta`` files but vacuum lists (``.vac``)."""
    return sum(1 for f in folder.iterdir() if f.is_file() and f.suffix != ".vac")


def _committed(array: Path) -> set[str]:
    """Names of the array's fragments that have a commit (TileDB reads no other): a
    ``__commits/<fragment>.wrt`` file, or a line of a consolidated commits file (``.con``),
    and no line of an ignore file (``.ign``, commits a later consolidation replaced)."""
    commits = array / "__commits"
    files = list(commits.iterdir()) if commits.is_dir() else []

    def listed(suffix: str) -> set[str]:
        return {
            line.decode(errors="replace").rsplit("/", 1)[-1].rsplit(".", 1)[0]
            for f in files
            if f.suffix == suffix
            for line in f.read_bytes().splitlines()
        }

    names = {f.name.rsplit(".", 1)[0] for f in files if f.suffix == ".wrt"} | listed(".con")
    return names - listed(".ign")


def _vacuum_pending(array: Path) -> bool:
    """A vacuum list (``__commits/*.vac``) is left: a vacuum of the array was killed."""
    return any((array / "__commits").glob("*.vac"))


def _fragment_folders(array: Path) -> list[Path]:
    return [f for f in (array / "__fragments").iterdir() if f.is_dir()]


def fragment_counts(uri: str | Path) -> dict[str, int]:
    """Committed fragments in each array of the store: array folder (relative to the store,
    e.g. ``ms/RNA/X/counts``) -> count; and metadata files in each group's ``__meta`` folder
    (``__meta`` for the experiment's own, which holds the journal). Every append adds one
    fragment to each array it writes and two metadata files to the experiment.

    Parameters
    ----------
    uri
        The store (a local TileDB-SOMA Experiment).
    """
    path = Path(str(uri).removeprefix("file://"))
    out = {}
    for array in _arrays(path):
        committed = _committed(array)
        out[str(array.relative_to(path))] = sum(
            1 for f in _fragment_folders(array) if f.name in committed
        )
    for folder in _metadata_folders(path):
        out[str(folder.relative_to(path))] = _metadata_files(folder)
    return out


def _schema_files(array: Path) -> dict[Path, tuple[int, int]]:
    """The array's schema versions: file -> timestamp range. TileDB reads and writes with the
    latest."""
    files = {}
    for f in (array / "__schema").iterdir():
        match = _SCHEMA_FILE.fullmatch(f.name)
        if f.is_file() and match:
            files[f] = (int(match[1]), int(match[2]))
    return files


def schema_counts(uri: str | Path) -> dict[str, int]:
    """Schema versions in each array of the store: array folder (relative to the store) ->
    count. TileDB reads them all whenever it opens the array.

    Parameters
    ----------
    uri
        The store (a local TileDB-SOMA Experiment).
    """
    path = Path(str(uri).removeprefix("file://"))
    return {str(a.relative_to(path)): len(_schema_files(a)) for a in _arrays(path)}


def _remove_unused_schemas(path: Path, name: str, log: Log) -> None:
    """Delete the schema versions of array ``name`` that none of its fragments was written
    with, but the latest, which TileDB writes with. The caller holds the store's lock (no
    write runs meanwhile) and no vacuum of the array is pending.

    TileDB opens an array by listing ``__schema`` and reading each file; it has no vacuum for
    schemas. Each file deleted is one no read needs, so a kill between two deletions leaves a
    readable array. A read that lists the folder during the deletion may fail once, as it may
    during a vacuum of fragments.
    """
    array = path / name
    try:
        used = fragment_schema_names(array)
    except (OSError, RuntimeError) as error:  # the store stays complete, only slower to open
        log(f"soma: WARNING: could not list the schemas {name}'s fragments use: {error}")
        return
    versions = _schema_files(array)
    latest = max(versions.values())  # kept, and any other written in the same millisecond
    unused = sorted(f for f, when in versions.items() if when < latest and f.name not in used)
    for f in unused:
        f.unlink()
    if unused:
        log(f"soma: removed {len(unused)} schema version(s) of {name} that no fragment uses")


def remove_uncommitted(path: Path, log: Log) -> None:
    """Delete fragment folders without a commit: what a killed write or consolidation left.
    TileDB's readers ignore them and its vacuum keeps them; the caller holds the lock, so no
    write is in flight. A folder whose name appears in any commit file is kept.

    Parameters
    ----------
    path
        The store's folder.
    log
        Called with a line for each folder removed.
    """
    for array in _arrays(path):
        committed = _committed(array)
        commits = array / "__commits"
        text = b"".join(f.read_bytes() for f in commits.iterdir()) if commits.is_dir() else b""
        for folder in _fragment_folders(array):
            if folder.name not in committed and folder.name.encode() not in text:
                shutil.rmtree(folder)
                log(f"soma: removed {folder.relative_to(path)}, a fragment never committed")


def consolidate(path: Path, max_fragments: int | None, log: Log) -> dict[str, list[int]]:
    """Consolidate and vacuum every array of the store holding more than ``max_fragments``
    fragments, and every group's metadata of more than ``max_fragments`` files; then delete
    the schema versions no fragment uses of every array holding more than ``max_fragments``
    of them. The caller holds the store's lock (no writer runs meanwhile).

    What a kill at any point leaves is a readable store equal to before, and relies on TileDB
    alone: a consolidated fragment counts only once its commit file is written (a killed
    consolidation leaves an uncommitted folder that readers ignore), and the fragments it
    replaces are ignored by readers from that commit on, so a vacuum killed half-way has
    removed only fragments no read uses. The next update consolidates again.

    Parameters
    ----------
    path
        The store's folder.
    max_fragments
        Arrays with more fragments (groups with more metadata files) than this are merged into
        one, and arrays with more schema versions lose those no fragment uses; None only
        removes the uncommitted folders.
    log
        Called with each log line.

    Returns
    -------
    dict
        Array folder (or ``<group>/__meta``) -> [count before, count after], for what was
        consolidated.
    """
    if not path.exists():
        return {}
    remove_uncommitted(path, log)
    if max_fragments is None:
        return {}
    done = {}
    for name, count in fragment_counts(path).items():
        if name == "__meta" or name.endswith("/__meta"):
            if count > max_fragments:
                done[name] = _consolidate_metadata(path, name, count, log)
            continue
        # a vacuum file left behind: a vacuum was killed, finish it
        if count <= max_fragments and not _vacuum_pending(path / name):
            continue
        t0 = time.perf_counter()
        context = read_context(CONSOLIDATION_CONFIG)
        try:
            with soma.open(str(path / name), context=context) as array:
                array._handle.consolidate_and_vacuum(list(CONSOLIDATION_MODES))
        except RuntimeError as error:  # TileDB's: e.g. its reader's memory budget
            # A failed consolidation commits nothing (TileDB's own guarantee): the store is
            # complete and readable, only slower to query. Failing the update here would
            # fail every rerun the same way, with the samples already committed.
            log(
                f"soma: WARNING: could not consolidate {name} ({count} fragments), the store "
                f"is complete but queries are slower: {error}"
            )
            done[name] = [count, fragment_counts(path)[name]]
            continue
        after = fragment_counts(path)[name]
        done[name] = [count, after]
        log(
            f"soma: consolidated {name}: {count} -> {after} fragment(s) in "
            f"{time.perf_counter() - t0:.1f} s"
        )
    if done:  # a vacuum killed between a commit file and its folder leaves the folder
        remove_uncommitted(path, log)
    for name, count in schema_counts(path).items():
        # var, written only when genes are new, gains a schema version with every append
        # all the same, so this does not wait for the array's fragments to be consolidated
        if count > max_fragments and not _vacuum_pending(path / name):
            _remove_unused_schemas(path, name, log)
    return done


def _consolidate_metadata(path: Path, name: str, count: int, log: Log) -> list[int]:
    """Merge one group's metadata files (``name``: ``<group>/__meta``); [before, after]."""
    t0 = time.perf_counter()
    folder = path / name
    try:
        consolidate_group_metadata(folder.parent)
    except (OSError, RuntimeError) as error:  # as for arrays: the store stays complete
        log(
            f"soma: WARNING: could not consolidate {name} ({count} metadata files), the store "
            f"is complete but opening it is slower: {error}"
        )
        return [count, _metadata_files(folder)]
    after = _metadata_files(folder)
    log(
        f"soma: consolidated {name}: {count} -> {after} metadata file(s) in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return [count, after]

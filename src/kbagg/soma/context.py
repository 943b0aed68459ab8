"""The TileDB settings kbagg reads its SOMA stores with (`read_context`), defined once: every
kbagg read of a store and its consolidation use them, and users pass the same context to
their own tiledbsoma queries."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tiledbsoma

__all__ = ["READ_CONFIG", "SerialExecutor", "limit_tiledb_threads", "read_context"]

# TileDB's sparse global-order reader (tiledbsoma's reads of X, obs and var, and the input of a
# consolidation) by default first orders every fragment's tiles by their bounding boxes
# (TileDB-Inc/TileDB#5417) and must hold every tile up to the next one it can emit. With
# kbagg's X layout (GENE_QUERY_LAYOUT) and many fragments that exceeds its memory budget:
# "Cannot load enough tiles to emit results from all fragments in global order". At 128
# fragments of 400 M non-zeros this failed both the consolidation and a read of 1,000 random
# cells within TileDB's default 10 GB; with the pre-ordering off (the budget split per
# fragment) both worked (2026-12-05, docs/soma_benchmarks.md "At atlas size").
#
# TileDB batches the tiles a read needs into file reads, and by default extends a batch over
# any gap until it holds 20 MB (`vfs.min_batch_size`), merging tiles up to 512 KB apart
# (`vfs.min_batch_gap`). A query for scattered genes or cells needs a few tiles spread over
# the whole array, so it read most of the array's files: 100 random genes of a 100,000-cell
# store read 252 MB to return 5 MB of tiles. Batches of at least 64 KB that merge only tiles
# under 16 KB apart read 5 MB there, and took the 100-gene query from 0.35-0.41 s to 0.19-0.22
# s and 1,000 random cells from 0.55 s to 0.34-0.40 s; a contiguous range (a sample, a
# consolidation's input) is still read in one batch (docs/soma_benchmarks.md, 2026-12-07).
READ_CONFIG = {
    "sm.query.sparse_global_order.preprocess_tile_merge": "0",
    "vfs.min_batch_size": str(64 << 10),
    "vfs.min_batch_gap": str(16 << 10),
}


class SerialExecutor(ThreadPoolExecutor):
    """An executor that runs each call at once, in the thread that submits it.

    tiledbsoma hands the parts of a read (obs, var, each X layer and each partition of one)
    to its context's thread pool; with this one they run one after the other in the caller's
    thread, and a part that submits further parts cannot wait on a busy pool. TileDB's own
    threads inside each read are unchanged.
    """

    def __init__(self) -> None:
        super().__init__(max_workers=1)  # never started: submit does not queue

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # handed to whoever calls result(), as a pool does
            future.set_exception(error)
        return future


def read_context(
    tiledb_config: Mapping[str, str] | None = None, *, threads: bool = True
) -> tiledbsoma.SOMATileDBContext:
    """A tiledbsoma context with kbagg's TileDB read settings.

    Pass it to ``tiledbsoma.Experiment.open(uri, context=...)`` to query a kbagg store: with
    many fragments (appends not yet consolidated) TileDB's default settings can fail a read
    with "Cannot load enough tiles to emit results from all fragments in global order"; these
    settings (`READ_CONFIG`: TileDB's tile pre-ordering off) read it. They also read a
    scattered query's tiles in small batches (64 KB, joining tiles under 16 KB apart) instead
    of TileDB's 20 MB ones, which read most of the array for 100 scattered genes or 1,000
    random cells.

    Parameters
    ----------
    tiledb_config
        Further TileDB config parameters, added to (and overriding) kbagg's, e.g.
        ``{"sm.mem.total_budget": str(2 << 30)}`` to cap TileDB's reader memory.
    threads
        ``False`` runs the parts of each tiledbsoma read (obs, var, X layers) one after the
        other in the calling thread (`SerialExecutor`) instead of tiledbsoma's thread pool.
        Slower for large reads; a workaround for the crash inside tiledbsoma 2.3.0's
        threaded ``to_anndata`` described in docs/soma.md.

    Returns
    -------
    tiledbsoma.SOMATileDBContext
        A new context.

    Examples
    --------
    >>> import tiledbsoma as soma
    >>> from kbagg.soma import read_context
    >>> uri = "results/aggregate/filtered.soma"
    >>> with soma.Experiment.open(uri, context=read_context()) as exp:
    ...     adata = exp.axis_query("RNA").to_anndata(X_name="counts")
    """
    import tiledbsoma

    return tiledbsoma.SOMATileDBContext(
        tiledb_config={**READ_CONFIG, **(tiledb_config or {})},
        threadpool=None if threads else SerialExecutor(),
    )


TILEDB_THREAD_SETTINGS = ("TILEDB_SM_COMPUTE_CONCURRENCY_LEVEL", "TILEDB_SM_IO_CONCURRENCY_LEVEL")


def limit_tiledb_threads(threads: int) -> None:
    """Hold TileDB's compute and I/O thread pools in this process to ``threads`` threads.

    TileDB sizes its pools by the machine's cores, so a job that Snakemake gave one thread
    kept 1.4 cores busy writing (docs/soma_benchmarks.md). Set through TileDB's environment
    configuration, which every context created afterwards reads; call it before the first
    store is opened. A value already in the environment (set by the user) is kept.

    Parameters
    ----------
    threads
        The job's threads (Snakemake's ``threads``).
    """
    for name in TILEDB_THREAD_SETTINGS:
        os.environ.setdefault(name, str(max(1, int(threads))))

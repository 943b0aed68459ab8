"""What the normalization rules run: the rates table, each sample's thinned matrix and the
normalized aggregate with its table (kbagg.normalize.thin does the work)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from kbagg.atomic import atomic_output
from kbagg.count.kb_count import kb_bus
from kbagg.errors import KbaggError
from kbagg.normalize.bus import read_header
from kbagg.normalize.thin import (
    METHOD,
    called_barcodes,
    mapped_reads_per_cell,
    normalize_sample,
    subsampling_rates,
)
from kbagg.obs_columns import MAPPED_READS, MAPPED_READS_NORMALIZED

UNS_KEY = "kbagg_normalize"
TABLE_COLUMNS = [
    "sample",
    "cells",
    "mapped_reads",
    "mapped_reads_per_cell",
    "subsampling_rate",
    "mapped_reads_normalized",
    "mapped_reads_per_cell_normalized",
]


def _obs_names(h5ad: str | Path) -> list[str]:
    import anndata as ad

    adata = ad.read_h5ad(h5ad, backed="r")
    try:
        return list(adata.obs_names)
    finally:
        adata.file.close()


def write_rates(kb_dirs: Mapping[str, str | Path], filtered: Mapping[str, str | Path], output):
    """Each sample's mapped reads per called cell and subsampling rate, as a TSV.

    Parameters
    ----------
    kb_dirs
        Sample -> kb count's output folder (its output.unfiltered.bus is read).
    filtered
        Sample -> its filtered.h5ad (the called cells).
    output
        The TSV to write (`kbagg.normalize.thin.RATE_COLUMNS`).
    """
    reads, cells = {}, {}
    for sample, kb_dir in kb_dirs.items():
        bus = kb_bus(kb_dir)
        if not bus.exists():
            raise KbaggError(f"sample '{sample}': kb's BUS file {bus} is missing; rerun kb_count")
        names = _obs_names(filtered[sample])
        barcodes = called_barcodes(sample, names, read_header(bus).barcode_length)
        reads[sample] = int(mapped_reads_per_cell(bus, barcodes).sum())
        cells[sample] = len(names)
    table = subsampling_rates(reads, cells)
    with atomic_output(output) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table


def read_rates(path: str | Path) -> pd.DataFrame:
    """The table `write_rates` wrote, indexed by sample."""
    return pd.read_csv(path, sep="\t", dtype={"sample": str}).set_index("sample")


def write_normalized_sample(
    sample: str,
    kb_dir: str | Path,
    t2g: str | Path,
    kb_info: str | Path,
    filtered: str | Path,
    rates: str | Path,
    seed: int,
    bustools: str,
    output: str | Path,
) -> None:
    """One sample's called cells recounted from its thinned BUS file, as an h5ad: the obs
    and var of its filtered.h5ad, X the thinned UMI counts, no layers, obs `mapped_reads`
    and `mapped_reads_normalized`, and `uns['kbagg_normalize']` (method, seed, rate).

    Parameters
    ----------
    sample
        Sample name.
    kb_dir, t2g, kb_info
        kb count's output folder, the transcript-to-gene map and kb's kb_info.json.
    filtered
        The sample's filtered.h5ad.
    rates
        The `write_rates` table.
    seed
        The config's aggregate.normalize_seed.
    bustools
        The bustools executable that kb-python ships.
    output
        The h5ad to write (atomically).
    """
    import json

    import anndata as ad

    rate = float(read_rates(rates).loc[sample, "subsampling_rate"])
    cells = ad.read_h5ad(filtered)
    result = normalize_sample(
        sample,
        kb_dir,
        t2g,
        json.loads(Path(kb_info).read_text()),
        cells.obs_names,
        cells.var_names,
        rate,
        seed,
        bustools,
        workdir=Path(output).parent,
    )
    obs = cells.obs.copy()
    obs[MAPPED_READS] = result.reads_before
    obs[MAPPED_READS_NORMALIZED] = result.reads_after
    uns = dict(cells.uns)
    uns[UNS_KEY] = {"method": METHOD, "seed": int(seed), "subsampling_rate": rate}
    normalized = ad.AnnData(
        X=result.counts.astype(cells.X.dtype), obs=obs, var=cells.var.copy(), uns=uns
    )
    with atomic_output(output) as tmp:
        normalized.write_h5ad(tmp)


def normalization_table(rates: str | Path, normalized: Mapping[str, str | Path]) -> pd.DataFrame:
    """Each sample's cells, mapped reads (per cell) before and after, and rate.

    Parameters
    ----------
    rates
        The `write_rates` table.
    normalized
        Sample -> its `write_normalized_sample` h5ad.
    """
    import anndata as ad

    table = read_rates(rates)
    after = {}
    for sample, path in normalized.items():
        adata = ad.read_h5ad(path, backed="r")
        after[sample] = int(np.asarray(adata.obs[MAPPED_READS_NORMALIZED]).sum())
        adata.file.close()
    table["mapped_reads_normalized"] = pd.Series(after)
    table["mapped_reads_per_cell_normalized"] = table["mapped_reads_normalized"] / table["cells"]
    return table.reset_index()[TABLE_COLUMNS]


def normalization_record(
    table: pd.DataFrame, seed: int, kb_infos: Mapping[str, str | Path]
) -> dict:
    """What provenance records of the normalization: method, seed, the bustools count
    switches of each sample's recount, and per sample its rate and mapped reads per cell
    before and after.

    Parameters
    ----------
    table
        The `normalization_table`.
    seed
        The config's aggregate.normalize_seed.
    kb_infos
        Sample -> kb's kb_info.json (the recount's switches are kb's).
    """
    import json

    from kbagg.normalize.thin import count_switches

    per_sample = table.set_index("sample")
    recount = {
        s: " ".join(["bustools count", *count_switches(json.loads(Path(p).read_text()), s)])
        for s, p in kb_infos.items()
    }
    return {
        "method": METHOD,
        "seed": int(seed),
        "mapped_reads": "reads of the called cells' records in kb's output.unfiltered.bus",
        "recount": recount,
        "subsampling_rate": {s: float(v) for s, v in per_sample["subsampling_rate"].items()},
        "mapped_reads_per_cell": {
            s: float(v) for s, v in per_sample["mapped_reads_per_cell"].items()
        },
        "mapped_reads_per_cell_normalized": {
            s: float(v) for s, v in per_sample["mapped_reads_per_cell_normalized"].items()
        },
    }


def write_table(table: pd.DataFrame, output: str | Path) -> None:
    with atomic_output(output) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")

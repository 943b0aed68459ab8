"""Ambient RNA removal on a sample's AnnData (the cells rule)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import anndata as ad
import numpy as np

from kbagg.cells.ambient.soup import METHODS, remove_ambient
from kbagg.errors import KbaggError

UNS_KEY = "kbagg_ambient"


def add_ambient(
    sample: str, filtered: ad.AnnData, raw: ad.AnnData, method: str, params: Mapping | None = None
) -> list[str]:
    """Estimate and remove the ambient RNA of `filtered`'s cells (modified in place).

    Adds the layer `decontaminated` (expected ambient-free counts; X stays kb's counts),
    `obs['ambient_fraction']` (estimated contamination per cell), `var['ambient_profile']`
    (the soup's share of each gene) and `uns['kbagg_ambient']` (JSON: method, parameters,
    the sample's contamination `sample_fraction`, warnings). Method "none" adds nothing.

    Parameters
    ----------
    sample
        Sample name, for messages.
    filtered
        The called cells (cells x genes UMI counts).
    raw
        Every barcode of the same sample, same genes in the same order.
    method
        "none" or "soup" (config `ambient.method`).
    params
        Keyword arguments of `kbagg.cells.ambient.remove_ambient` (config `ambient.*`
        other than `method`).

    Returns
    -------
    Warnings, each naming the sample.
    """
    if method not in METHODS:
        raise KbaggError(
            f"sample '{sample}': ambient.method must be one of {METHODS}, got {method!r}"
        )
    if method == "none":
        return []
    if not raw.var_names.equals(filtered.var_names):
        raise KbaggError(f"sample '{sample}': raw and filtered matrices have different genes")
    missing = ~filtered.obs_names.isin(raw.obs_names)
    if missing.any():
        raise KbaggError(
            f"sample '{sample}': {int(missing.sum())} called cells are not in the raw matrix, "
            f"e.g. {filtered.obs_names[missing][0]}"
        )
    position = raw.obs_names.get_indexer(filtered.obs_names)
    is_cell = np.zeros(raw.n_obs, dtype=bool)
    is_cell[position] = True
    result = remove_ambient(sample, raw.X, is_cell, **dict(params or {}))
    # result rows follow raw's order of the cells; put them in filtered's order
    order = np.argsort(np.argsort(position))
    filtered.layers["decontaminated"] = result.decontaminated[order]
    filtered.obs["ambient_fraction"] = result.ambient_fraction[order]
    filtered.var["ambient_profile"] = result.profile
    sample_fraction = result.sample_fraction
    filtered.uns[UNS_KEY] = json.dumps(
        {
            **result.params,
            "sample_fraction": None if math.isnan(sample_fraction) else sample_fraction,
            "warnings": result.warnings,
        }
    )
    return result.warnings


def sample_fraction(filtered: ad.AnnData) -> float | None:
    """The sample's estimated contamination from `uns['kbagg_ambient']`; None without one."""
    record = filtered.uns.get(UNS_KEY)
    if record is None:
        return None
    return json.loads(record).get("sample_fraction")

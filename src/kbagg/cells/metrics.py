"""Per-cell QC metrics: UMIs, detected genes and the mitochondrial share of each cell."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:  # QC summary jobs import mito_genes and read no matrix
    import anndata as ad

MITO_PREFIXES = ("MT-", "mt-")  # gene names of mitochondrial genes (human, mouse)


def mito_genes(adata: ad.AnnData) -> np.ndarray:
    """Boolean mask of mitochondrial genes: gene_name (else var_names) starting MT- or mt-."""
    names = adata.var["gene_name"] if "gene_name" in adata.var else adata.var_names.to_series()
    return names.astype(str).str.startswith(MITO_PREFIXES).to_numpy()


def cell_qc(adata: ad.AnnData) -> pd.DataFrame:
    """Per-cell QC: total UMIs, detected genes and percent mitochondrial UMIs.

    Parameters
    ----------
    adata
        Cells x genes UMI counts. Mitochondrial genes are those whose `var['gene_name']`
        (else var name) starts with "MT-" or "mt-".

    Returns
    -------
    DataFrame indexed like `adata.obs` with `n_umis` (int64 unless counts are fractional),
    `n_genes` (int64) and `pct_mito`
    (float64: NaN for every cell when no gene is mitochondrial, and for cells with 0 UMIs).
    """
    x = adata.X if sp.issparse(adata.X) else sp.csr_matrix(np.asarray(adata.X))
    x = sp.csr_matrix(x)
    mito = mito_genes(adata)
    n_umis = np.asarray(x.sum(axis=1)).ravel()
    if mito.any():
        mito_umis = np.asarray(x[:, np.flatnonzero(mito)].sum(axis=1)).ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            pct_mito = np.where(n_umis > 0, 100.0 * mito_umis / n_umis, np.nan)
    else:
        pct_mito = np.full(adata.n_obs, np.nan)
    return pd.DataFrame(
        {
            "n_umis": n_umis.astype(np.int64) if np.all(n_umis % 1 == 0) else n_umis,
            "n_genes": np.asarray((x > 0).sum(axis=1)).ravel().astype(np.int64),
            "pct_mito": pct_mito.astype(np.float64),
        },
        index=adata.obs_names.copy(),
    )

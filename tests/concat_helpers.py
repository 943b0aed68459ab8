"""Shared helpers for the concat tests: reference results, comparisons, child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from natsort import natsorted

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "kbagg.concat.cli"]  # the kbagg-concat console script
TESTDATA = REPO.parent / "shared" / "testdata"


def read_quiet(path, **kw) -> ad.AnnData:
    """An h5ad file, or a zarr store (a directory)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if Path(path).is_dir():
            return ad.read_zarr(path)
        return ad.read_h5ad(path, **kw)


def open_matrices(path: Path, encoding: str = "csr_matrix"):
    """The X and layer groups of an h5ad (h5py) or zarr output, as {name: group}."""
    if Path(path).is_dir():
        import zarr

        root = zarr.open_group(path, mode="r")
    else:
        root = h5py.File(path, "r")
    groups = {"X": root["X"]} | {f"layers/{k}": root["layers"][k] for k in root["layers"]}
    for name, g in groups.items():
        assert g.attrs["encoding-type"] == encoding, name
    return root, groups


def named_layers(adata: ad.AnnData) -> list[str]:
    """Layer names; anndata >= 0.13 also lists X under the key None."""
    return [k for k in adata.layers if k is not None]


def as_csr(m):
    return sp.csr_matrix(m)


def reference_concat(
    inputs: dict[str, Path], *, join="inner", label="sample", index_unique="-"
) -> ad.AnnData:
    """What the engine must produce: anndata.concat on the files read into memory.

    Matrices are made CSR first because the engine always writes CSR, whose missing
    entries are zeros (anndata fills dense ones with NaN); on an outer join var is the
    coalesced var (see expected_outer_var) instead of merge="same"'s.
    """
    adatas = {}
    for name, path in inputs.items():
        a = read_quiet(path)
        a.X = as_csr(a.X)
        for k in named_layers(a):
            a.layers[k] = as_csr(a.layers[k])
        adatas[name] = a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ad.concat(
            adatas, join=join, label=label, index_unique=index_unique or None, merge="same"
        )
    if join == "outer":
        ref.var = expected_outer_var([a.var for a in adatas.values()], ref.var_names)
        for k in named_layers(ref):
            # Documented deviation: anndata's zero fill for a layer some inputs lack is an
            # int64 array that promotes e.g. float32 to float64; the engine keeps the dtype.
            present = [a.layers[k].dtype for a in adatas.values() if k in named_layers(a)]
            ref.layers[k] = ref.layers[k].astype(np.result_type(*present))
    ref.strings_to_categoricals()  # what anndata's writer does to the result on disk
    for df in (ref.obs, ref.var):  # documented: strings with NaN are stored as categoricals
        for col in df.columns:
            if df[col].dtype == object and df[col].isna().any():
                present = df[col].dropna()
                if all(isinstance(v, str) for v in present):
                    df[col] = pd.Categorical(df[col], categories=natsorted(present.unique()))
    return ref


def expected_outer_var(vars_: list[pd.DataFrame], genes: pd.Index) -> pd.DataFrame:
    """Plain re-statement of the outer-join var rule: columns every input has; each gene takes
    the first non-missing value in input order; a column with conflicting values is dropped."""
    cols = [c for c in vars_[0].columns if all(c in v.columns for v in vars_)]
    out = {}
    for col in cols:
        values, conflict = {}, False
        for v in vars_:
            for gene, val in v[col].items():
                if pd.isna(val):
                    continue
                if gene in values and values[gene] != val:
                    conflict = True
                values.setdefault(gene, val)
        if not conflict:
            out[col] = _with_input_dtype([values.get(g, np.nan) for g in genes], vars_, col)
    return pd.DataFrame(out, index=genes)


def _with_input_dtype(values: list, vars_: list[pd.DataFrame], col):
    """Categoricals: union of categories (natsorted, like anndata's obs); otherwise the inputs'
    common dtype when no gene is left missing."""
    dtypes = [v[col].dtype for v in vars_]
    if all(isinstance(d, pd.CategoricalDtype) for d in dtypes):
        cats = natsorted(set().union(*(d.categories for d in dtypes)))
        return pd.Categorical(values, categories=cats)
    if len({str(d) for d in dtypes}) == 1 and not pd.isna(values).any():
        return pd.array(values, dtype=dtypes[0])
    return pd.Series(values, dtype=object).infer_objects().array


def dense(m) -> np.ndarray:
    return m.toarray() if sp.issparse(m) else np.asarray(m)


def assert_matches_reference(out_path: Path, ref: ad.AnnData, *, check_var_dtypes=True) -> None:
    out = read_quiet(out_path)
    assert_canonical_csr(out_path)
    pd.testing.assert_index_equal(out.obs_names, ref.obs_names)
    pd.testing.assert_index_equal(out.var_names, ref.var_names)
    pd.testing.assert_frame_equal(out.obs, ref.obs)
    if check_var_dtypes:
        pd.testing.assert_frame_equal(out.var, ref.var)
    else:
        pd.testing.assert_frame_equal(out.var, ref.var, check_dtype=False, check_categorical=False)
    assert out.X.dtype == ref.X.dtype
    np.testing.assert_array_equal(dense(out.X), dense(ref.X))
    assert sorted(named_layers(out)) == sorted(named_layers(ref))
    for k in named_layers(ref):
        assert out.layers[k].dtype == ref.layers[k].dtype, k
        np.testing.assert_array_equal(dense(out.layers[k]), dense(ref.layers[k]))
    assert sorted(out.obsm) == sorted(ref.obsm)
    for k in ref.obsm:
        np.testing.assert_array_equal(dense(out.obsm[k]), dense(ref.obsm[k]))
        assert dense(out.obsm[k]).dtype == dense(ref.obsm[k]).dtype


def assert_canonical_csr(path: Path, encoding: str = "csr_matrix") -> None:
    """Every matrix is a csr_matrix (or ``encoding``) with int64 indptr and sorted,
    duplicate-free rows (columns for CSC)."""
    root, groups = open_matrices(path, encoding)
    try:
        for name, g in groups.items():
            indptr, indices = g["indptr"][:], g["indices"][:]
            assert indptr.dtype == np.int64
            assert indptr[-1] == len(indices) == len(g["data"][:])
            starts = indptr[1:-1][(indptr[1:-1] > 0) & (indptr[1:-1] < len(indices))]
            increasing = np.diff(indices) > 0
            increasing[starts - 1] = True  # a decrease from one row to the next is fine
            assert increasing.all(), f"{name}: entries not strictly sorted within a row"
    finally:
        if isinstance(root, h5py.File):
            root.close()


def run_cli(*args, check=False, **kw) -> subprocess.CompletedProcess:
    """The CLI as a fresh child."""
    # This checkout's kbagg, whatever the venv's editable install points at.
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"CLI failed ({proc.returncode}): {proc.stderr}")
    return proc


# fork+exec from a tiny process: a child forked from a big parent (pytest) would report the
# parent's RSS as its own peak, because Linux keeps ru_maxrss across exec.
_TRAMPOLINE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\nCPU_S={usage.ru_utime + usage.ru_stime}\\nMAXRSS_KB={usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def child_usage(cmd: list[str], stdout=subprocess.DEVNULL) -> tuple[int, float, float, str]:
    """Run ``cmd``; return (exit status, its own peak RSS in MB, its CPU seconds (user +
    system, all threads), its stderr)."""
    proc = subprocess.run(
        [sys.executable, "-c", _TRAMPOLINE, *cmd],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    err, _, tail = proc.stderr.rpartition("CPU_S=")
    cpu, _, rss = tail.partition("MAXRSS_KB=")
    return proc.returncode, int(rss.strip()) / 1024, float(cpu.strip()), err


def child_peak_rss_mb(cmd: list[str], stdout=subprocess.DEVNULL) -> tuple[int, float, str]:
    """Run ``cmd``; return (exit status, its own peak RSS in MB, its stderr)."""
    status, rss_mb, _, err = child_usage(cmd, stdout)
    return status, rss_mb, err


def write_sparse_h5ad(
    path: Path, n_obs: int, genes: list[str], nnz_per_row: int, *, fmt="csr", seed=0
) -> None:
    """A float32 h5ad (CSR, or CSC with the same number of entries) written straight with
    h5py in bounded chunks: fast even for hundreds of MB."""
    rng = np.random.default_rng(seed)
    n_vars = len(genes)
    k = min(nnz_per_row, n_vars)
    # CSC is written as the CSR of the transpose: major axis = genes.
    n_major, n_minor = (n_obs, n_vars) if fmt == "csr" else (n_vars, n_obs)
    k_major = k if fmt == "csr" else max(1, (n_obs * k) // max(n_vars, 1))
    k_major = min(k_major, n_minor)
    nnz = n_major * k_major
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        g = f.create_group("X")
        g.attrs.update({"encoding-type": f"{fmt}_matrix", "encoding-version": "0.1.0"})
        g.attrs["shape"] = np.array([n_obs, n_vars])
        data = g.create_dataset("data", (nnz,), np.float32)
        idx = g.create_dataset("indices", (nnz,), np.int32)
        # CSC: int32 indptr, as scipy (and anndata) has it when nnz fits; anndata.concat
        # cannot stack CSC with int64 indptr and int32 indices.
        ptr_dtype = np.int32 if fmt == "csc" and nnz < 2**31 else np.int64
        g.create_dataset("indptr", data=np.arange(n_major + 1, dtype=ptr_dtype) * k_major)
        step = max(1, (1 << 22) // max(k_major, 1))
        base = np.sort(rng.choice(n_minor, k_major, replace=False)).astype(np.int32)
        for r0 in range(0, n_major, step):
            r1 = min(r0 + step, n_major)
            shift = rng.integers(0, n_minor, size=(r1 - r0, 1), dtype=np.int32)
            cols = np.sort((base[None, :] + shift) % n_minor, axis=1)
            idx[r0 * k_major : r1 * k_major] = cols.ravel()
            vals = rng.integers(1, 50, size=(r1 - r0) * k_major).astype(np.float32)
            data[r0 * k_major : r1 * k_major] = vals
    obs = pd.DataFrame(index=[f"BC{i:08d}-1" for i in range(n_obs)])
    var = pd.DataFrame({"gene_name": [g.lower() for g in genes]}, index=genes)
    with h5py.File(path, "a") as f:
        ad.io.write_elem(f, "obs", obs)
        ad.io.write_elem(f, "var", var)
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            ad.io.write_elem(f, key, {})

"""DropletUtils' emptyDrops, the real R package, run on a raw matrix through
tests/r/emptydrops_dropletutils.R: for tests/test_emptydrops_dropletutils.py and
tests/benchmarks/bench_emptydrops.py."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

R_SCRIPT = Path(__file__).resolve().parent / "r" / "emptydrops_dropletutils.R"
FDR = 0.001  # the cut for cells on both sides: DropletUtils' recommended, kbagg's default
# The empty droplets of the comparison (kbagg.simulate.spec.HardCells): overdispersed around
# the ambient profile, 5% of them ambient-rich (median 150 UMIs) so that hundreds are above
# `lower` and are tested, as in real libraries with much soup.
EMPTY_DROPLETS = {"rich_empty_fraction": 0.05, "empty_alpha": 1000.0, "empty_umis_max": 1000}


def dropletutils_missing() -> str | None:
    """Why DropletUtils cannot run here (a skip reason), or None when it can."""
    if shutil.which("Rscript") is None:
        return "Rscript not found (Debian: apt-get install r-bioc-dropletutils)"
    proc = subprocess.run(
        ["Rscript", "-e", "suppressPackageStartupMessages(library(DropletUtils))"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        why = proc.stderr.strip()[-300:]
        return f"R package DropletUtils not installed (apt-get install r-bioc-dropletutils): {why}"
    return None


def write_mtx(counts: sp.spmatrix, path: Path) -> Path:
    """Barcodes x genes integer counts as MatrixMarket, the script's input."""
    scipy.io.mmwrite(path, sp.coo_matrix(counts, dtype=np.int64), field="integer")
    return path


def command(mtx: Path, out_csv: Path, *, lower: int, n_iter: int, seed: int) -> list[str]:
    """The argument list that runs emptyDrops on `mtx` and writes `out_csv`."""
    rscript = shutil.which("Rscript") or "Rscript"  # a path: benchmarks exec it directly
    return [rscript, str(R_SCRIPT), str(mtx), str(out_csv), str(lower), str(n_iter), str(seed)]


@dataclass(frozen=True)
class DropletUtilsResult:
    """emptyDrops' per-barcode table (Total, LogProb, PValue, Limited, FDR; NA = untested),
    its `is_cell` at FDR <= 0.001, and its estimated alpha, retain (knee) and seconds."""

    table: pd.DataFrame
    is_cell: np.ndarray
    alpha: float
    retain: float
    seconds: float


def read_result(out_csv: Path, stdout: str) -> DropletUtilsResult:
    table = pd.read_csv(out_csv)
    meta = dict(line.split(maxsplit=1) for line in stdout.splitlines() if line.strip())
    return DropletUtilsResult(
        table=table,
        is_cell=(table["FDR"] <= FDR).to_numpy(),  # NaN (untested) compares False
        alpha=float(meta["alpha"]),
        retain=float(meta["retain"]),
        seconds=float(meta["emptydrops_seconds"]),
    )


def empty_drops_r(
    counts: sp.spmatrix, workdir: Path, *, lower: int, n_iter: int, seed: int
) -> DropletUtilsResult:
    """Run DropletUtils' emptyDrops on `counts` (barcodes x genes) in `workdir`."""
    mtx = write_mtx(counts, Path(workdir) / "raw.mtx")
    out = Path(workdir) / "dropletutils.csv"
    proc = subprocess.run(
        command(mtx, out, lower=lower, n_iter=n_iter, seed=seed), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"DropletUtils emptyDrops failed:\n{proc.stderr[-3000:]}")
    return read_result(out, proc.stdout)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / |a | b| of two boolean call vectors."""
    return float(np.count_nonzero(a & b) / max(np.count_nonzero(a | b), 1))

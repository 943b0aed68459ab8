"""Run one PyPI demultiplexing peer, for real, in its own venv (called by bench_demux.py).

    <venv>/bin/python demux_peer_runner.py demuxEM counts.csv rna.csv calls.csv [empties.csv]
    <venv>/bin/python demux_peer_runner.py GMM-Demux counts.csv rna.csv calls.csv

counts.csv: ``cell,<hashtag ids>`` raw UMI counts of the cells; rna.csv: ``cell,rna_umis``;
empties.csv (demuxEM): hashtag counts of empty droplets, which demuxEM's background
estimate expects among the barcodes it is given. Writes calls.csv: cell, call (hashtag id,
``doublet``, ``negative``, or GMM-Demux's ``unclear``), seconds (the peer's own wall time, without loading).
Only the peer's package, numpy, pandas and scipy are imported: no kbagg.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp


def run_demuxem(counts: pd.DataFrame, rna: pd.Series, empties: pd.DataFrame | None):
    from demuxEM.tools.demuxEM import demultiplex, estimate_background_probs
    from pegasusio import UnimodalData

    droplets = counts if empties is None else pd.concat([counts, empties])
    start = time.perf_counter()
    hashing = UnimodalData(
        {"barcodekey": droplets.index.to_numpy()},
        {"featurekey": droplets.columns.to_numpy()},
        {"X": sp.csr_matrix(droplets.to_numpy(dtype=np.int64))},
        genome="hashing",
        modality="hashing",
    )
    # demuxEM needs the RNA data only for its barcodes: one column holding the library size.
    rna_data = UnimodalData(
        {"barcodekey": counts.index.to_numpy()},
        {"featurekey": np.array(["rna_umis"])},
        {"X": sp.csr_matrix(rna.reindex(counts.index).to_numpy()[:, None].astype(np.int64))},
        genome="rna",
        modality="rna",
    )
    estimate_background_probs(hashing)
    demultiplex(rna_data, hashing)
    seconds = time.perf_counter() - start
    kind = rna_data.obs["demux_type"].astype(str).to_numpy()
    assignment = rna_data.obs["assignment"].astype(str).to_numpy()
    calls = np.where(
        kind == "singlet", assignment, np.where(kind == "doublet", "doublet", "negative")
    )
    return pd.Series(calls, index=counts.index), seconds


def run_gmm_demux(counts: pd.DataFrame):
    """GMM-Demux's command line on a CSV of the counts (cells x hashtags)."""
    names = list(counts.columns)
    with tempfile.TemporaryDirectory(prefix="gmm_demux_") as tmp:
        table = Path(tmp) / "hto.csv"
        counts.to_csv(table)
        out = Path(tmp) / "out"
        gmm = Path(sys.executable).parent / "GMM-demux"
        start = time.perf_counter()
        subprocess.run(
            [str(gmm), "-c", str(table), ",".join(names), "-f", str(out), "-o", f"{tmp}/ssd"]
            + ["-rs", "0"],
            check=True,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        full = pd.read_csv(out / "GMM_full.csv", index_col=0)
        config = pd.read_csv(out / "GMM_full.config", header=None, names=["id", "name"])
    cluster_name = dict(zip(config["id"], config["name"].str.strip(), strict=True))
    labels = full["Cluster_id"].map(cluster_name).astype(str)
    # GMM-Demux's own rule: a droplet below its confidence threshold (0.8) is "unclear".
    confident = (full["Confidence"] >= 0.8).to_numpy()
    calls = []
    for label, sure in zip(labels, confident, strict=True):
        if not sure:
            calls.append("unclear")
            continue
        members = [t.strip() for t in label.split("-") if t.strip() in names]
        if label.strip() == "negative" or not members:
            calls.append("negative")
        elif len(members) == 1:
            calls.append(members[0])
        else:
            calls.append("doublet")
    return pd.Series(calls, index=full.index.astype(str)).reindex(counts.index), seconds


def main() -> None:
    peer, counts_csv, rna_csv, calls_csv = sys.argv[1:5]
    counts = pd.read_csv(counts_csv, index_col=0)
    counts.index = counts.index.astype(str)
    rna = pd.read_csv(rna_csv, index_col=0).iloc[:, 0]
    rna.index = rna.index.astype(str)
    if peer == "demuxEM":
        empties = pd.read_csv(sys.argv[5], index_col=0) if len(sys.argv) > 5 else None
        calls, seconds = run_demuxem(counts, rna, empties)
    elif peer == "GMM-Demux":
        calls, seconds = run_gmm_demux(counts)
    else:
        raise SystemExit(f"unknown peer {peer!r}")
    frame = pd.DataFrame({"cell": calls.index, "call": calls.fillna("negative").to_numpy()})
    frame["seconds"] = seconds
    frame.to_csv(calls_csv, index=False)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark: hashtag demultiplexing on real hashing data whose truth comes from genotypes.

    python tests/benchmarks/bench_demux_real.py --data DIR --prepare   # rebuild the inputs
    python tests/benchmarks/bench_demux_real.py --data DIR             # every data set
    python tests/benchmarks/bench_demux_real.py --data DIR --datasets stoeckius_pbmc --no-peers
    python tests/benchmarks/bench_demux_real.py --data DIR --methods demuxEM,gmm   # a subset

The simulated panel (bench_demux.py) knows its truth because it drew it; here the truth is
the donor each cell's genotype says it came from (vireo, run by the data's authors), which
the hashtags never saw. Each donor was tagged with one hashtag, so the map donor -> hashtag
is found from the data: the majority argmax hashtag among the donor's genotype singlets
(printed, with the share that agrees; a donor whose majority is not over half, or with
under 20 genotype singlets, is left out: its cells are not scored).
Truth: a genotype singlet of donor d carries d's hashtag; a genotype doublet is a doublet;
genotype-unassigned cells (vireo's unassigned / "Negative") are not scored, though every
method sees every cell.

Data (`--prepare` writes DIR/<data set>/hto.csv, cells x hashtags raw UMI counts, and
DIR/<data set>/genotype.csv, cell -> donor / doublet / unassigned, from public GitHub
repositories at the commits in SOURCES; it clones them with git unless `--git-dir
owner/name=PATH` points at a local bare copy; the Stoeckius matrix is an .RData, read with
Rscript):

- Howitt et al. 2023, NAR Genomics and Bioinformatics 5:lqad086, repository
  Oshlack/hashtag-demux-paper: bronchoalveolar lavage (BAL), 3 batches x 2 captures, 8
  donors and 8 hashtags per batch (data/BAL_data/batch*_c*_hto_counts.csv and
  *_donors.csv, vireo); and 3 cell lines with 3 MULTI-seq lipid tags, 3 captures
  (data/cell_line_data/lmo_counts_capture*.csv, lmo_donors_capture*.csv).
- Stoeckius et al. 2018, Genome Biology 19:224, PBMC with 8 hashtags: the count matrix as
  packaged in Gartner-Lab/deMULTIplex2 (data/stoeckius_pbmc.RData), the genotype calls
  (vireo's donor_ids.tsv format) from shengqh/scDemultiplex_analysis (pbmc_donor_ids.tsv).

Per data set a table: singlet accuracy (genotype singlets given their donor's hashtag),
doublet recall (genotype doublets called doublet), the share of scored cells called
negative, and wall time. A doublet of two donors that share a hashtag is invisible to any
hashtag method; where the genotype file names the doublet's donors (Stoeckius) the visible
doublets' recall is printed too. None of these data has the RNA library sizes beside the
hashtag counts, so kbagg runs on hashtags only.

Methods: kbagg `demultiplex` (hashtags only); a fixed threshold (> 20 UMIs); the argmax
baseline (every cell a singlet of its largest hashtag: never a doublet or negative);
scanpy's hashsolo; Seurat `HTODemux` and `MULTIseqDemux` (Rscript tests/r/demux_peers.R);
demuxEM and GMM-Demux in their venvs (install_peers.sh). demuxEM is given no empty
droplets (these data hold cells only) and a placeholder RNA column: it uses the RNA data
only for its barcodes. A peer that fails or is missing is a row saying why.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import bench_demux
import numpy as np
import pandas as pd
import scipy.sparse as sp
from bench_demux import (  # tests/benchmarks/bench_demux.py
    FIXED_THRESHOLD_UMIS,
    Unavailable,
    fixed_threshold,
    run_hashsolo,
    run_seurat,
    run_venv_peer,
    scores,
)

from kbagg.cells.demux import demultiplex

HOWITT = "Oshlack/hashtag-demux-paper"
DEMULTIPLEX2 = "Gartner-Lab/deMULTIplex2"
SCDEMULTIPLEX = "shengqh/scDemultiplex_analysis"
SOURCES = {  # the commits the figures in docs/demultiplexing.md were measured on
    HOWITT: "3be94bbda8861972d2e8f235129da2d95af52857",
    DEMULTIPLEX2: "c9c6a510e7782bdec6f54eb264eafffba2024ef4",
    SCDEMULTIPLEX: "88c2e952e13ec380d6929e1c22871575c170418c",
}
BAL = [f"bal_batch{b}_c{c}" for b in (1, 2, 3) for c in (1, 2)]
CELL_LINES = [f"cell_lines_c{c}" for c in (1, 2, 3)]
DATASETS = [*BAL, *CELL_LINES, "stoeckius_pbmc"]
MIN_MAJORITY = 0.5  # a donor whose argmax hashtags agree no more than this has no clear tag
MIN_DONOR_CELLS = 20  # vireo's tiny spurious donors (2-12 cells in Stoeckius) are left out
ORDER = [
    "kbagg (hashtags only)",
    f"fixed threshold (> {FIXED_THRESHOLD_UMIS} UMIs)",
    "argmax baseline (always a singlet)",
    "scanpy hashsolo",
    "Seurat HTODemux",
    "Seurat MULTIseqDemux",
    "demuxEM",
    "GMM-Demux",
]

# --------------------------------------------------------------------------- prepare


def git_show(git_dir: Path, commit: str, path: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"], check=True, capture_output=True
    ).stdout


def source_git_dir(repo: str, data: Path, given: dict[str, Path]) -> Path:
    """A bare copy of `repo` holding SOURCES[repo]: the one given, or a blobless clone."""
    if repo in given:
        return given[repo]
    target = data / "sources" / repo.replace("/", "+")
    if not target.exists():
        url = f"https://github.com/{repo}.git"
        subprocess.run(
            ["git", "clone", "--bare", "--filter=blob:none", url, str(target)], check=True
        )
    return target


def write_pair(out: Path, counts: pd.DataFrame, genotype: pd.Series) -> None:
    """counts: cells x hashtags; genotype: cell -> donor id, 'doublet' or 'unassigned'."""
    out.mkdir(parents=True, exist_ok=True)
    counts.index.name = "cell"
    counts.to_csv(out / "hto.csv")
    genotype = genotype.reindex(counts.index).fillna("unassigned")
    genotype.rename("genotype").to_csv(out / "genotype.csv", index_label="cell")
    print(f"{out.name}: {counts.shape[0]} cells x {counts.shape[1]} hashtags; genotype", end=" ")
    print({k: int(v) for k, v in genotype.value_counts().sort_index().items()})


def howitt_pair(git_dir: Path, counts_path: str, donors_path: str):
    commit = SOURCES[HOWITT]
    counts = pd.read_csv(io.BytesIO(git_show(git_dir, commit, counts_path)), index_col=0).T
    donors = pd.read_csv(io.BytesIO(git_show(git_dir, commit, donors_path)), index_col=0)
    genotype = donors.set_index("Barcode")["genetic_donor"].astype(str)
    genotype = genotype.replace({"Doublet": "doublet", "Negative": "unassigned"})
    return counts.astype(np.int64), genotype


def prepare(data: Path, given: dict[str, Path]) -> None:
    data.mkdir(parents=True, exist_ok=True)
    howitt = source_git_dir(HOWITT, data, given)
    for name in BAL:
        batch, capture = name.split("_")[1], name.split("_")[2]
        stem = f"data/BAL_data/{batch}_{capture}"
        write_pair(
            data / name, *howitt_pair(howitt, f"{stem}_hto_counts.csv", f"{stem}_donors.csv")
        )
    for name in CELL_LINES:
        c = name[-1]
        stem = "data/cell_line_data/lmo_"
        pair = howitt_pair(howitt, f"{stem}counts_capture{c}.csv", f"{stem}donors_capture{c}.csv")
        write_pair(data / name, *pair)
    # Stoeckius: the matrix (cells x HTO_A..H, barcodes without "-1") from deMULTIplex2's
    # .RData, the vireo calls from scDemultiplex_analysis
    rdata = data / "sources" / "stoeckius_pbmc.RData"
    rdata.parent.mkdir(parents=True, exist_ok=True)
    rdata.write_bytes(git_show(source_git_dir(DEMULTIPLEX2, data, given), SOURCES[DEMULTIPLEX2],
                               "data/stoeckius_pbmc.RData"))  # fmt: skip
    matrix_csv = data / "sources" / "stoeckius_pbmc.csv"
    script = (
        "e <- new.env(); load(commandArgs(TRUE)[1], envir = e); "
        "write.csv(e$stoeckius_pbmc, commandArgs(TRUE)[2], quote = FALSE)"
    )
    subprocess.run(["Rscript", "-e", script, str(rdata), str(matrix_csv)], check=True)
    counts = pd.read_csv(matrix_csv, index_col=0)
    counts.index = counts.index.astype(str) + "-1"
    ids = pd.read_csv(
        io.BytesIO(
            git_show(
                source_git_dir(SCDEMULTIPLEX, data, given),
                SOURCES[SCDEMULTIPLEX],
                "pbmc_donor_ids.tsv",
            )
        ),  # fmt: skip
        sep="\t",
        index_col=0,
    )
    write_pair(data / "stoeckius_pbmc", counts, ids["donor_id"].astype(str))
    ids["best_doublet"].rename("best_doublet").to_csv(
        data / "stoeckius_pbmc" / "doublet_donors.csv", index_label="cell"
    )
    (data / "SOURCES.txt").write_text(
        "".join(f"https://github.com/{repo} {commit}\n" for repo, commit in SOURCES.items())
    )


# --------------------------------------------------------------------------- truth


def load(data: Path, name: str) -> tuple[ad.AnnData, pd.Series]:
    counts = pd.read_csv(data / name / "hto.csv", index_col=0)
    counts.index = counts.index.astype(str)
    genotype = pd.read_csv(data / name / "genotype.csv", index_col=0)["genotype"].astype(str)
    hashtags = ad.AnnData(
        X=sp.csr_matrix(counts.to_numpy(dtype=np.float32)),
        obs=pd.DataFrame(index=counts.index),
        var=pd.DataFrame(index=[str(c) for c in counts.columns]),
    )
    return hashtags, genotype.reindex(hashtags.obs_names).fillna("unassigned")


def donor_map(hashtags: ad.AnnData, genotype: pd.Series) -> pd.DataFrame:
    """Per donor: its genotype singlets, their majority argmax hashtag and the share agreeing."""
    argmax = np.asarray(hashtags.var_names)[np.asarray(hashtags.X.argmax(axis=1)).ravel()]
    singlet = ~genotype.isin(["doublet", "unassigned"]).to_numpy()
    frame = pd.DataFrame({"donor": genotype.to_numpy()[singlet], "argmax": argmax[singlet]})
    rows = []
    for donor, group in frame.groupby("donor"):
        top = group["argmax"].value_counts()
        rows.append(
            {"donor": donor, "cells": len(group), "hashtag": top.index[0],
             "agree": top.iloc[0] / len(group)}
        )  # fmt: skip
    table = pd.DataFrame(rows).set_index("donor")
    table["kept"] = (table["agree"] > MIN_MAJORITY) & (table["cells"] >= MIN_DONOR_CELLS)
    return table


def truth_of(genotype: pd.Series, mapping: pd.DataFrame) -> pd.DataFrame:
    """hashtag_class singlet (hashtag: the donor's) or doublet; unscored cells left out."""
    kept = mapping.index[mapping["kept"]]
    singlet = genotype.isin(kept)
    doublet = genotype == "doublet"
    truth = pd.DataFrame(index=genotype.index[singlet | doublet])
    truth["hashtag_class"] = np.where(doublet[truth.index], "doublet", "singlet")
    truth["hashtag"] = genotype[truth.index].map(mapping["hashtag"]).fillna("doublet")
    return truth


def invisible_doublets(data: Path, name: str, truth: pd.DataFrame, mapping) -> pd.Index:
    """Genotype doublets whose two donors map to one hashtag (only where the file names them)."""
    path = data / name / "doublet_donors.csv"
    if not path.exists():
        return pd.Index([])
    pairs = pd.read_csv(path, index_col=0)["best_doublet"].astype(str)
    doublets = truth.index[truth["hashtag_class"] == "doublet"]
    kept = mapping.loc[mapping["kept"], "hashtag"]
    tags = pairs.reindex(doublets).str.split(",").map(
        lambda donors: {kept.get(d, d) for d in donors}
        if isinstance(donors, list) else set()
    )  # fmt: skip
    return doublets[tags.map(len).to_numpy() == 1]


# --------------------------------------------------------------------------- methods


def argmax_baseline(hashtags: ad.AnnData) -> pd.Series:
    """Every cell a singlet of its largest hashtag: the trivial baseline."""
    argmax = np.asarray(hashtags.X.argmax(axis=1)).ravel()
    return pd.Series(np.asarray(hashtags.var_names)[argmax], index=hashtags.obs_names)


def kbagg_hashtags_only(hashtags: ad.AnnData) -> pd.Series:
    calls = demultiplex(hashtags)
    bic = ", ".join(f"{m} {v:.0f}" for m, v in calls.attrs["hashtag_model_bic"].items())
    print(f"kbagg chose the {calls.attrs['hashtag_model']} model (BIC: {bic})")
    return calls["hashtag"]


IN_PROCESS = {
    "kbagg (hashtags only)": kbagg_hashtags_only,
    f"fixed threshold (> {FIXED_THRESHOLD_UMIS} UMIs)": fixed_threshold,
    "argmax baseline (always a singlet)": argmax_baseline,
    "scanpy hashsolo": run_hashsolo,
}


def row(truth: pd.DataFrame, calls: pd.Series, seconds: float, invisible: pd.Index) -> dict:
    called = calls.reindex(truth.index).astype(str)
    out = scores(truth, called)
    out["negative"] = float(np.mean(called.isin(["negative"])))
    out["unclear"] = float(np.mean(called.isin(["unclear"])))  # GMM-Demux's low confidence
    visible = truth.drop(invisible)
    out["visible"] = scores(visible, called.reindex(visible.index))["doublet"]
    out["seconds"] = seconds
    return out


def safe_ids(hashtags: ad.AnnData) -> tuple[ad.AnnData, dict[str, str]]:
    """A copy with ids every peer keeps as they are (Seurat turns "_" into "-", GMM-Demux
    takes them comma-separated on its command line), and the map back."""
    safe = hashtags.copy()
    safe.var_names = [f"tag{i + 1}" for i in range(hashtags.n_vars)]
    return safe, dict(zip(safe.var_names, hashtags.var_names, strict=True))


def renamed(calls: pd.Series, back: dict[str, str]) -> pd.Series:
    return calls.astype(str).map(lambda call: back.get(call, call))


def bench(data: Path, name: str, methods: set[str]) -> dict[str, dict | str]:
    hashtags, genotype = load(data, name)
    mapping = donor_map(hashtags, genotype)
    truth = truth_of(genotype, mapping)
    invisible = invisible_doublets(data, name, truth, mapping)
    print(f"\n### {name}\n")
    print(f"{hashtags.n_obs} cells, {hashtags.n_vars} hashtags; genotype:", end=" ")
    print(", ".join(f"{k} {v}" for k, v in genotype.value_counts().sort_index().items()))
    print("\ndonor -> hashtag (majority argmax among the donor's genotype singlets):\n")
    print("| donor | singlets | hashtag | agree | kept |\n|---|---|---|---|---|")
    for donor, m in mapping.iterrows():
        print(f"| {donor} | {m['cells']} | {m['hashtag']} | {m['agree']:.3f} | {m['kept']} |")
    shared = mapping[mapping["kept"]].groupby("hashtag").size()
    if (shared > 1).any():
        print(f"\nhashtags carried by more than one kept donor: {shared[shared > 1].to_dict()}")
    n_doublets = int((truth["hashtag_class"] == "doublet").sum())
    print(f"\nscored: {len(truth) - n_doublets} genotype singlets, {n_doublets} doublets", end="")
    print(f" ({len(invisible)} of them between donors of one hashtag)" if len(invisible) else "")
    hashtags.obs["rna_umis"] = 1  # demuxEM's RNA input: used only for its barcodes
    results: dict[str, dict | str] = {}
    for method, fn in IN_PROCESS.items():
        if KEYS[method] not in methods:
            continue
        try:
            start = time.perf_counter()
            calls = fn(hashtags)
            results[method] = row(truth, calls, time.perf_counter() - start, invisible)
        except Exception as error:  # a failing method is a reported row
            results[method] = f"{type(error).__name__}: {error}"[:150]
        print(f"  {method}: done", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_demux_real_") as tmp:
        workdir = Path(tmp)
        safe, back = safe_ids(hashtags)
        empties = ad.AnnData(
            X=sp.csr_matrix((0, safe.n_vars), dtype=np.float32),
            var=pd.DataFrame(index=safe.var_names),
        )
        for peer in ("demuxEM", "GMM-Demux"):
            if KEYS[peer] not in methods:
                continue
            try:
                calls, seconds = run_venv_peer(peer, safe, workdir, empties)
                results[peer] = row(truth, renamed(calls, back), seconds, invisible)
            except Unavailable as error:
                results[peer] = str(error)
            print(f"  {peer}: done", file=sys.stderr, flush=True)
        try:
            seurat = run_seurat([safe], workdir)[0] if "seurat" in methods else {}
        except Unavailable as error:
            seurat = {m: (None, 0.0, str(error)) for m in ("HTODemux", "MULTIseqDemux")}
        for method in ("HTODemux", "MULTIseqDemux") if "seurat" in methods else ():
            calls, seconds, error = seurat.get(method, (None, 0.0, "no output"))
            if not error:
                calls = renamed(calls, back)
            results[f"Seurat {method}"] = error or row(truth, calls, seconds, invisible)
    return results | {"invisible": len(invisible)}


KEYS = dict(zip(ORDER, ["kbagg", "fixed", "argmax", "hashsolo", "seurat", "seurat", "demuxEM",
                        "gmm"], strict=True))  # fmt: skip
PEERS = {"seurat", "demuxEM", "gmm"}


def print_table(results: dict) -> None:
    visible = results["invisible"] > 0
    head = " | doublet recall (visible)" if visible else ""
    print(f"\n| method | singlet accuracy | doublet recall{head} | called negative | time (s) |")
    print("|---" * (6 if visible else 5) + "|")
    for method in ORDER:
        r = results.get(method)
        if r is None:
            continue
        if isinstance(r, str):
            print(f"| {method} | unavailable: {r} |{' |' * (4 if visible else 3)}")
            continue
        cells = [f"{r['singlet']:.3f}", f"{r['doublet']:.3f}"]
        cells += [f"{r['visible']:.3f}"] if visible else []
        negative = f"{r['negative']:.3f}"
        if r["unclear"]:
            negative += f" (+{r['unclear']:.3f} unclear)"
        print(f"| {method} | {' | '.join(cells)} | {negative} | {r['seconds']:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", type=Path, required=True, help="the prepared inputs' folder")
    parser.add_argument("--prepare", action="store_true", help="(re)build DIR from the sources")
    parser.add_argument(
        "--git-dir", action="append", default=[], metavar="OWNER/NAME=PATH",
        help="a local bare copy of a source repository (default: git clone from GitHub)",
    )  # fmt: skip
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--no-peers", action="store_true", help="skip R and venv peers")
    parser.add_argument(
        "--methods", default=",".join(dict.fromkeys(KEYS.values())), help="a subset to run"
    )
    parser.add_argument("--peer-timeout", type=float, default=bench_demux.PEER_TIMEOUT_SECONDS)
    args = parser.parse_args()
    if args.prepare:
        given = dict(item.split("=", 1) for item in args.git_dir)
        prepare(args.data, {repo: Path(path) for repo, path in given.items()})
        return
    bench_demux.PEER_TIMEOUT_SECONDS = args.peer_timeout
    missing = [n for n in args.datasets.split(",") if not (args.data / n / "hto.csv").exists()]
    if missing:
        raise SystemExit(f"not prepared in {args.data}: {missing} (run with --prepare)")
    load_avg = os.getloadavg()
    print(f"load average at start: {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")
    print(f"Rscript: {shutil.which('Rscript')}")
    for name in args.datasets.split(","):
        methods = set(args.methods.split(",")) - (PEERS if args.no_peers else set())
        print_table(bench(args.data, name, methods))
    load_avg = os.getloadavg()
    print(f"\nload average at end: {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")


if __name__ == "__main__":
    main()

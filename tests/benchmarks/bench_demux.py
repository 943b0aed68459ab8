#!/usr/bin/env python
"""Benchmark: hashtag demultiplexing, kbagg against the field's tools run for real.

    python tests/benchmarks/bench_demux.py                         # every regime, 3 seeds
    python tests/benchmarks/bench_demux.py --regimes noisy,clean --seeds 5 --first-seed 101
    python tests/benchmarks/bench_demux.py --regimes none --drawn 3 --first-seed 101
    python tests/benchmarks/bench_demux.py --separability      # kbagg's warnings per seed

Data: `kbagg.simulate.hashtags.simulate_hashtags` (named regimes with truth; parameter
sources in that module). Every method sees the same counts; per regime the table gives the
median over seeds of: singlet accuracy (true singlets given their own hashtag), doublet
recall (true doublets called doublet), negative recall, and wall time in seconds.
`--drawn N` adds N regimes with parameters drawn from the published ranges
(`draw_regime`, seeds 1..N): the outside check, data the method was never tuned on.

Methods (a peer that cannot be installed or fails prints its row as unavailable, with the
reason; nothing is re-implemented):

- kbagg `demultiplex` with the RNA library size (``rna_umis``) and without it;
- a fixed threshold: a hashtag is on a cell when it has more than 20 UMIs (the trivial
  baseline of issue 23);
- Seurat 4.3 `HTODemux` (positive.quantile 0.99) and `MULTIseqDemux` (autoThresh), by
  Rscript tests/r/demux_peers.R;
- scanpy's `hashsolo` (`scanpy.external.pp.hashsolo`, default priors), in this venv;
- demuxEM (PyPI, peer venv demuxEM; given also 2x as many empty droplets, ambient
  only, as its background estimate expects) and GMM-Demux (PyPI, peer venv gmmdemux),
  through tests/benchmarks/demux_peer_runner.py in their own interpreters.

Not a method but a ceiling: the Bayes classifier under the simulator's own model with the
regime's true parameters (`demux_oracle`), at kbagg's doublet cut and at 0.05, 0.2, 0.5.
A method that learns the parameters from the data cannot expect to do better on singlets
and doublets at once: where no cut of the oracle meets a pair of targets, no method does.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from demux_oracle import oracle_series  # tests/benchmarks/demux_oracle.py
from peers import peer_python  # tests/benchmarks/peers.py: install_peers.sh's venvs

from kbagg.cells.demux import DOUBLET_POSTERIOR, WeakHashtagsWarning, demultiplex
from kbagg.simulate.hashtags import (
    REGIMES,
    draw_regime,
    simulate_empty_droplets,
    simulate_hashtags,
)

HERE = Path(__file__).resolve().parent
R_SCRIPT = HERE.parent / "r" / "demux_peers.R"
RUNNER = HERE / "demux_peer_runner.py"
FIXED_THRESHOLD_UMIS = 20
PEER_TIMEOUT_SECONDS = 600  # GMM-Demux enumerates all 2**n hashtag sets: hours at 24
METRICS = ("singlet", "doublet", "negative")


class Unavailable(Exception):
    """A peer that could not be installed or run: its row says why."""


def scores(truth: pd.DataFrame, called: pd.Series) -> dict[str, float]:
    """Singlet accuracy, doublet recall, negative recall."""
    called = called.reindex(truth.index).astype(str)
    out = {}
    for kind in METRICS:
        rows = (truth["hashtag_class"] == kind).to_numpy()
        expected = truth["hashtag"].to_numpy()[rows] if kind == "singlet" else kind
        out[kind] = float(np.mean(called.to_numpy()[rows] == expected)) if rows.any() else np.nan
    return out


def fixed_threshold(hashtags: ad.AnnData, threshold: float = FIXED_THRESHOLD_UMIS) -> pd.Series:
    """A hashtag is on a cell when its count exceeds `threshold`: the trivial baseline."""
    counts = hashtags.X.toarray()
    positive = counts > threshold
    n_positive = positive.sum(axis=1)
    names = np.array(hashtags.var_names, dtype=object)
    calls = np.where(
        n_positive == 1,
        names[np.argmax(positive, axis=1)],
        np.where(n_positive == 0, "negative", "doublet"),
    )
    return pd.Series(calls, index=hashtags.obs_names)


def run_hashsolo(hashtags: ad.AnnData) -> pd.Series:
    import scanpy.external as sce

    adata = ad.AnnData(obs=pd.DataFrame(hashtags.X.toarray(), index=hashtags.obs_names))
    adata.obs.columns = list(hashtags.var_names)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        sce.pp.hashsolo(adata, list(hashtags.var_names))
    calls = adata.obs["Classification"].astype(str)
    return calls.replace({"Doublet": "doublet", "Negative": "negative"})


def write_counts(hashtags: ad.AnnData, path: Path) -> None:
    frame = pd.DataFrame(hashtags.X.toarray(), index=hashtags.obs_names, columns=hashtags.var_names)
    frame.to_csv(path, index_label="cell")


def run_seurat(datasets: list[ad.AnnData], workdir: Path) -> list[dict[str, tuple]]:
    """HTODemux and MULTIseqDemux on every data set in one Rscript call (Seurat loads once).

    Returns per data set {method: (calls or None, seconds, error)}."""
    if shutil.which("Rscript") is None:
        raise Unavailable("Rscript not found")
    args = []
    for i, hashtags in enumerate(datasets):
        write_counts(hashtags, workdir / f"counts{i}.csv")
        args += [str(workdir / f"counts{i}.csv"), str(workdir / f"seurat{i}.csv")]
    done = subprocess.run(["Rscript", str(R_SCRIPT), *args], capture_output=True, text=True)
    if done.returncode:
        raise Unavailable(f"Rscript failed: {done.stderr.strip().splitlines()[-1:]}")
    out = []
    for i in range(len(datasets)):
        table = pd.read_csv(workdir / f"seurat{i}.csv", keep_default_na=False)
        per = {}
        for method, rows in table.groupby("method"):
            error = str(rows["error"].iloc[0])
            calls = None if error else pd.Series(rows["call"].to_numpy(), index=rows["cell"])
            per[method] = (calls, float(rows["seconds"].iloc[0]), error)
        out.append(per)
    return out


def run_venv_peer(
    peer: str, hashtags: ad.AnnData, workdir: Path, empties: ad.AnnData
) -> tuple[pd.Series, float]:
    """demuxEM or GMM-Demux in its own venv; the runner writes calls and its own timing."""
    python = peer_python({"demuxEM": "demuxEM", "GMM-Demux": "gmmdemux"}[peer])
    if not python.exists():
        raise Unavailable(f"no venv {python.parent.parent} (pip install it there)")
    counts, calls = workdir / f"{peer}_counts.csv", workdir / f"{peer}_calls.csv"
    write_counts(hashtags, counts)
    pd.Series(hashtags.obs["rna_umis"]).to_csv(workdir / f"{peer}_rna.csv", index_label="cell")
    command = [str(python), str(RUNNER), peer, str(counts), str(workdir / f"{peer}_rna.csv")]
    command.append(str(calls))
    if peer == "demuxEM":  # its background estimate expects empty droplets among barcodes
        write_counts(empties, workdir / "empties.csv")
        command.append(str(workdir / "empties.csv"))
    # its own session, so that a timeout ends the peer's children too (GMM-demux's CLI)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            _, stderr = process.communicate(timeout=PEER_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise Unavailable(f"{peer} did not finish in {PEER_TIMEOUT_SECONDS:.0f} s") from None
    done = subprocess.CompletedProcess(command, process.returncode, "", stderr)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or ["(no message)"]
        raise Unavailable(f"{peer} failed: {lines[-1][:150]}")
    table = pd.read_csv(calls, keep_default_na=False)
    return pd.Series(table["call"].to_numpy(), index=table["cell"]), float(table["seconds"].iloc[0])


def timed(method: Callable[[ad.AnnData], pd.Series], hashtags: ad.AnnData):
    start = time.perf_counter()
    calls = method(hashtags)
    return calls, time.perf_counter() - start


def kbagg_with_rna(hashtags: ad.AnnData) -> pd.Series:
    return demultiplex(hashtags, rna_umis=hashtags.obs["rna_umis"].to_numpy())["hashtag"]


def kbagg_without_rna(hashtags: ad.AnnData) -> pd.Series:
    return demultiplex(hashtags)["hashtag"]


IN_PROCESS = {
    "kbagg (with RNA library size)": kbagg_with_rna,
    "kbagg (hashtags only)": kbagg_without_rna,
    f"fixed threshold (> {FIXED_THRESHOLD_UMIS} UMIs)": fixed_threshold,
    "scanpy hashsolo": run_hashsolo,
}
# kbagg's cut, and others to trace the best trade-off between singlets and doublets
ORACLES = {
    f"oracle: true model, doublet cut {cut}{' (kbagg)' if cut == DOUBLET_POSTERIOR else ''}": cut
    for cut in sorted({0.05, DOUBLET_POSTERIOR, 0.2, 0.5})
}
ORDER = [
    *IN_PROCESS,
    "Seurat HTODemux",
    "Seurat MULTIseqDemux",
    "demuxEM",
    "GMM-Demux",
    *ORACLES,
]


def bench_regime(regime, seeds: list[int], n_cells: int | None, peers: bool) -> dict:
    results: dict[str, list] = {m: [] for m in ORDER}
    datasets = [simulate_hashtags(regime, seed, n_cells)[0] for seed in seeds]
    n_empty = 2 * datasets[0].n_obs
    empties = [simulate_empty_droplets(regime, seed, n_empty) for seed in seeds]
    with tempfile.TemporaryDirectory(prefix="bench_demux_") as tmp:
        workdir = Path(tmp)
        for hashtags, empty in zip(
            datasets, empties, strict=True
        ):  # interleaved: every method on every seed in turn
            for method, fn in IN_PROCESS.items():
                try:
                    calls, seconds = timed(fn, hashtags)
                    results[method].append({**scores(hashtags.obs, calls), "seconds": seconds})
                except Exception as error:  # a failing method is a reported row
                    results[method].append(f"{type(error).__name__}: {error}"[:150])
            for name, cut in ORACLES.items():
                try:
                    calls, seconds = timed(
                        lambda h, cut=cut: oracle_series(h, regime, cut), hashtags
                    )
                except ValueError as error:  # a regime it does not model (proportions)
                    results[name].append(str(error))
                    continue
                results[name].append({**scores(hashtags.obs, calls), "seconds": seconds})
            for peer in ("demuxEM", "GMM-Demux") if peers else ():
                try:
                    calls, seconds = run_venv_peer(peer, hashtags, workdir, empty)
                    results[peer].append({**scores(hashtags.obs, calls), "seconds": seconds})
                except Unavailable as error:
                    results[peer].append(str(error))
        if peers:
            try:
                seurat = run_seurat(datasets, workdir)
            except Unavailable as error:
                seurat = [{m: (None, 0.0, str(error)) for m in ("HTODemux", "MULTIseqDemux")}]
                seurat = seurat * len(datasets)
            for hashtags, per in zip(datasets, seurat, strict=True):
                for method in ("HTODemux", "MULTIseqDemux"):
                    calls, seconds, error = per.get(method, (None, 0.0, "no output"))
                    row = error or {**scores(hashtags.obs, calls), "seconds": seconds}
                    results[f"Seurat {method}"].append(row)
    return results


def print_table(name: str, seeds: list[int], n_cells: int, results: dict) -> None:
    print(f"\n### {name} ({n_cells} cells, seeds {seeds[0]}-{seeds[-1]}, medians)\n")
    print("| method | singlet accuracy | doublet recall | negative recall | time (s) |")
    print("|---|---|---|---|---|")
    for method in ORDER:
        rows = results.get(method, [])
        if not rows:
            continue
        ok = [r for r in rows if isinstance(r, dict)]
        if len(ok) < len(rows):
            reason = next(r for r in rows if isinstance(r, str))
            note = f"failed on {len(rows) - len(ok)} of {len(rows)} seeds: {reason}"
            if not ok:
                print(f"| {method} | unavailable: {note} | | | |")
                continue
        else:
            note = ""
        cells = [f"{statistics.median(r[k] for r in ok):.3f}" for k in METRICS]
        seconds = statistics.median(r["seconds"] for r in ok)
        print(f"| {method} | {' | '.join(cells)} | {seconds:.2f}{' ' + note if note else ''} |")


def print_separability(regimes, seeds: list[int], n_cells: int | None) -> None:
    """Per regime and seed: separability (min-max over hashtags), the highest expected
    error, whether kbagg warns (and which hashtags) and its singlet accuracy."""
    print(f"\n| regime | {' | '.join(f'seed {s}' for s in seeds)} |")
    print("|---" * (len(seeds) + 1) + "|")
    for regime in regimes:
        cells = []
        for seed in seeds:
            hashtags, rna_umis = simulate_hashtags(regime, seed, n_cells)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                calls = demultiplex(hashtags, rna_umis=rna_umis)
            warned = any(issubclass(w.category, WeakHashtagsWarning) for w in caught)
            table = calls.attrs["hashtag_separability"]
            flag = "WARN " + ",".join(table["hashtag"][table["weak"]]) if warned else "ok"
            singlets = scores(hashtags.obs, calls["hashtag"])["singlet"]
            cells.append(
                f"{table['separability'].min():.2f}-{table['separability'].max():.2f}, "
                f"{100 * table['expected_error'].max():.1f}% {flag} ({singlets:.3f})"
            )
        print(f"| {regime.name} | {' | '.join(cells)} |", flush=True)


def main() -> None:
    global PEER_TIMEOUT_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--cells", type=int, default=None, help="default: the regime's")
    parser.add_argument("--no-peers", action="store_true", help="skip R and venv peers")
    parser.add_argument("--drawn", type=int, default=0, help="regimes drawn from the ranges")
    parser.add_argument("--peer-timeout", type=float, default=PEER_TIMEOUT_SECONDS)
    parser.add_argument(
        "--separability",
        action="store_true",
        help="instead of the panel: kbagg's separability, expected error and warning per seed",
    )
    args = parser.parse_args()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    PEER_TIMEOUT_SECONDS = args.peer_timeout
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    regimes = [REGIMES[name] for name in args.regimes.split(",") if name != "none"]
    regimes += [draw_regime(i) for i in range(1, args.drawn + 1)]
    if args.separability:
        print_separability(regimes, seeds, args.cells)
        return
    for regime in regimes:
        if regime.name.startswith("drawn"):
            print(f"\n{regime}")
        results = bench_regime(regime, seeds, args.cells, not args.no_peers)
        print_table(regime.name, seeds, args.cells or regime.n_cells, results)
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()

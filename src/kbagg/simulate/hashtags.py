"""Hashtag (cell hashing / CellPlex / MULTI-seq) counts with known truth, in named regimes.

`simulate_hashtags(regime, seed)` draws a cells x hashtags UMI matrix, each cell's RNA
library size, and the truth (singlet of one hashtag, doublet of two, or negative). It is a
matrix-level simulator for benchmarking demultiplexing; `kbagg.simulate.features` writes
hashtag FASTQs for the workflow and shares its negative-binomial draw (`_negative_binomial`).

Model, per droplet:

- RNA library size ``rna_umis``: log-normal around `HashtagRegime.rna_median_umis`.
- A capture efficiency per cell (how much antibody / lipid tag the cell took up), log-normal
  with sd `capture_log_sd` and correlated with the cell's log RNA library size at
  `capture_rna_correlation`: bigger cells carry more tag and more RNA (Howitt et al. 2023,
  NAR Genom Bioinform 5:lqad086, Fig. 1-2: HTO counts rise with the number of detected genes
  in every data set they examined; this is why demuxmix regresses on it).
- The specific signal of a carried hashtag: negative binomial with mean
  ``signal_umis * capture * tag_efficiency[h]`` and size `signal_size`.
- Background in every hashtag: ambient (free tag in the droplet) plus non-specific binding
  proportional to the cell's capture, negative binomial with mean
  ``background_umis * (0.5 + 0.5 * capture)`` and size `background_size`.
- A doublet is two cells: two hashtags' signals, each with its own capture, its RNA is the
  sum of both cells' RNA and its background gets both cells' non-specific part.

Parameter ranges from published data (orders of magnitude; none is tuned on a method):

- Clean cell hashing: Stoeckius et al. 2018 (Genome Biol 19:224), PBMCs with 8 HTOs: the
  positive hashtag of a cell carries hundreds of UMIs against a background of a few to a
  few tens (signal:background 10-100x). Base: signal 150, background 6 (25x).
- High background and weak signal: McGinnis et al. 2019 (Nat Methods 16:619, MULTI-seq)
  and Mylka et al. 2022 (Genome Biol 23:55), who compared hashing reagents across tissues and
  found several-fold lower signal:background for some reagents and fixed/nuclei samples;
  Howitt et al. 2023 include data sets where the modes overlap. Regimes: background x3,
  signal x0.35 (issue 17's "noisy": signal:background about 3x).
- Capture varying strongly between cells: Howitt et al. 2023 (HTO totals spread over more
  than an order of magnitude); log sd 0.4 in the base, 1.0 in "variable_capture".
- Doublets: 10x Genomics' loading table (about 0.8 % per 1,000 recovered cells), so 8 % at
  10,000 cells and 16-20 % when super-loading as hashing allows (Stoeckius 2018 loaded
  up to ~4x). Base 8 %, "doublets_20pct" 20 %.
- Negatives (unlabelled cells): 5-15 % in Stoeckius 2018 and Boggy et al. 2022
  (Bioinformatics 38:2791, cellhashR); base 7 %.
- 12 hashtags: 10x CellPlex (CMO301-312); 24: large TotalSeq hashing panels as in Mylka
  2022. A failed hashtag (almost no signal: 5 % of the others): Boggy et al. 2022 report
  hashtags that failed in real runs. Unequal pools: sample sizes differing 10x, common
  when pooling donors or conditions.
- Negative-binomial sizes 2-5 (overdispersed; demuxmix fits NB components to real HTO
  counts): signal size 3, background size 3.

Two regimes copy real captures with genotype truth hashtag by hashtag
(tests/benchmarks/bench_demux_real.py, Howitt et al. 2023): `bal_batch2_measured` (8
hashtags, one carried by no donor, signal 36-388 and background 4-32 UMIs) and
`lmo_3tags_measured` (3 MULTI-seq lipid tags, signal 20-76, background 3-13), with their
pool sizes, doublet shares and a capture sd of 0.8 (the real carried counts' log sd is
0.6-1.0). tests/test_demux.py checks the simulated medians against the real ones. Both
are count-model data, and kbagg's count model does well on them, though it fails the real
captures: the real counts carry their signal in proportions. `lmo_3tags_proportions`
draws them so (`_proportional_counts`), with the composition model's fit to the real
capture as its parameters; its singlets' median proportions match the real capture's
within 0.05 (its doublets lean less to the largest pool than the real ones).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from kbagg.simulate.features import _negative_binomial


@dataclass(frozen=True)
class HashtagRegime:
    """One named regime of hashtag data (see the module docstring for the sources)."""

    name: str
    n_hashtags: int = 6
    n_cells: int = 4000
    doublet_fraction: float = 0.08
    negative_fraction: float = 0.07
    signal_umis: float = 150.0  # mean specific UMIs of a carried hashtag, median capture
    background_umis: float = 6.0  # mean ambient + non-specific UMIs per hashtag
    signal_size: float = 3.0  # negative-binomial size (variance mean + mean**2 / size)
    background_size: float = 3.0
    capture_log_sd: float = 0.4  # per-cell capture efficiency, log-normal sd
    capture_rna_correlation: float = 0.6  # of log capture with log RNA library size
    rna_median_umis: float = 5000.0
    rna_log_sd: float = 0.5
    n_failed_hashtags: int = 0  # hashtags whose signal is `failed_signal_fraction` of it
    failed_signal_fraction: float = 0.05
    pool_weights: tuple[float, ...] | None = None  # relative pool sizes (None: equal)
    # Per-hashtag levels measured on a real data set (None: every hashtag at `signal_umis`
    # and `background_umis`); they replace those two, failed hashtags still scale the signal.
    tag_signal_umis: tuple[float, ...] | None = None
    tag_background_umis: tuple[float, ...] | None = None
    # Proportions instead of counts (`_proportional_counts`): per hashtag the Beta (a, b) of
    # the signal fraction of a carrier's tag UMIs; None: the count model above.
    signal_fraction_beta: tuple[tuple[float, float], ...] | None = None
    concentration: float = 200.0  # of the Dirichlet around a cell's mean proportions


def tag_levels(regime: HashtagRegime) -> tuple[np.ndarray, np.ndarray]:
    """Per hashtag: the mean signal UMIs at median capture (failed hashtags included) and
    the mean background UMIs at capture 1."""
    n_tags = regime.n_hashtags
    signal = np.full(n_tags, regime.signal_umis)
    if regime.tag_signal_umis is not None:
        signal = np.array(regime.tag_signal_umis, dtype=float)
    signal[n_tags - regime.n_failed_hashtags :] *= regime.failed_signal_fraction
    background = np.full(n_tags, regime.background_umis)
    if regime.tag_background_umis is not None:
        background = np.array(regime.tag_background_umis, dtype=float)
    return signal, background


BASE = HashtagRegime("moderate")
REGIMES: dict[str, HashtagRegime] = {
    r.name: r
    for r in (
        dataclasses.replace(BASE, name="clean", signal_umis=300.0, background_umis=4.0),
        BASE,
        dataclasses.replace(BASE, name="high_background", background_umis=24.0),
        dataclasses.replace(BASE, name="weak_signal", signal_umis=45.0),
        dataclasses.replace(BASE, name="variable_capture", capture_log_sd=1.0),
        dataclasses.replace(BASE, name="doublets_20pct", doublet_fraction=0.20),
        dataclasses.replace(BASE, name="hashtags_12", n_hashtags=12),
        dataclasses.replace(BASE, name="hashtags_24", n_hashtags=24, n_cells=6000),
        dataclasses.replace(BASE, name="failed_hashtag", n_failed_hashtags=1),
        dataclasses.replace(BASE, name="unequal_pools", pool_weights=(10, 5, 2, 1, 1, 1)),
        dataclasses.replace(BASE, name="noisy", background_umis=18.0, signal_umis=52.5),
        # Measured on real captures with genotype truth (tests/benchmarks/bench_demux_real.py;
        # per hashtag the median count of its donor's genotype singlets minus the median of
        # the other donors' = signal, the latter = background; the spread of log signal,
        # 0.7-1.0, less the NB noise = capture sd; pools, doublets from the genotypes).
        # Howitt 2023 BAL batch 2 capture 1: 8 hashtags, one carried by no donor (BAL 14).
        HashtagRegime(
            "bal_batch2_measured",
            n_hashtags=8,
            n_cells=6000,
            doublet_fraction=0.12,
            negative_fraction=0.01,
            tag_signal_umis=(209.0, 77.0, 48.0, 290.0, 36.0, 0.0, 123.0, 388.0),
            tag_background_umis=(17.0, 9.0, 9.0, 27.0, 7.0, 4.0, 30.0, 32.0),
            pool_weights=(2853, 860, 1512, 4494, 1541, 1e-9, 5159, 3963),
            background_size=1.5,
            signal_size=2.0,
            capture_log_sd=0.8,
        ),
        # The same capture as proportions: the composition model's fit to it
        # (`fit_composition` on cell_lines_c1: background composition, concentration, the
        # signal fractions' means 0.51 / 0.74 / 0.70 and sds 0.18 / 0.12 / 0.15 as Betas,
        # the first lowered to 0.46 to match CL 01's median share, 0.54; 76 tag UMIs per
        # droplet at the median, log sd 0.87).
        HashtagRegime(
            "lmo_3tags_proportions",
            n_hashtags=3,
            n_cells=6000,
            doublet_fraction=0.13,
            negative_fraction=0.03,
            signal_umis=65.0,
            tag_background_umis=(0.15, 0.29, 0.55),
            signal_fraction_beta=((3.0, 3.5), (9.7, 3.4), (6.3, 2.7)),
            concentration=200.0,
            pool_weights=(4593, 6035, 3289),
            capture_log_sd=0.8,
        ),
        # Howitt 2023 cell lines capture 1: 3 MULTI-seq lipid tags.
        HashtagRegime(
            "lmo_3tags_measured",
            n_hashtags=3,
            n_cells=6000,
            doublet_fraction=0.13,
            negative_fraction=0.03,
            tag_signal_umis=(20.0, 76.0, 35.0),
            tag_background_umis=(3.0, 6.0, 13.0),
            pool_weights=(4593, 6035, 3289),
            background_size=1.5,
            signal_size=2.0,
            capture_log_sd=0.8,
        ),
    )
}


def simulate_hashtags(
    regime: HashtagRegime | str, seed: int, n_cells: int | None = None
) -> tuple[ad.AnnData, np.ndarray]:
    """Hashtag counts of one regime, with truth.

    Parameters
    ----------
    regime
        A `HashtagRegime` or the name of one in `REGIMES`.
    seed
        Seed of the random generator (every draw comes from it).
    n_cells
        Droplets to draw (default: the regime's).

    Returns
    -------
    ``(hashtags, rna_umis)``: cells x hashtags AnnData of integer UMI counts (var_names
    ``HTO1``...; ``obs['hashtag']`` the true hashtag id, ``doublet`` or ``negative``,
    ``obs['hashtag_class']`` singlet/doublet/negative, ``obs['hashtags']`` the carried ids
    ``+``-joined, ``obs['rna_umis']``), and the RNA library size (UMIs) of each droplet.
    """
    if isinstance(regime, str):
        regime = REGIMES[regime]
    rng = np.random.default_rng(seed)
    n = regime.n_cells if n_cells is None else n_cells
    n_tags = regime.n_hashtags
    ids = np.array([f"HTO{i + 1}" for i in range(n_tags)], dtype=object)
    weights = np.ones(n_tags) if regime.pool_weights is None else np.array(regime.pool_weights)
    weights = weights / weights.sum()
    tag_signal, tag_background = tag_levels(regime)

    draw = rng.random(n)
    kind = np.where(
        draw < regime.negative_fraction,
        "negative",
        np.where(draw < regime.negative_fraction + regime.doublet_fraction, "doublet", "singlet"),
    )
    n_members = np.where(kind == "doublet", 2, 1)  # a negative is one unlabelled cell
    # Per member cell (up to 2 per droplet): RNA size and a correlated capture efficiency.
    z = rng.standard_normal((n, 2))
    rho = regime.capture_rna_correlation
    capture = np.exp(
        regime.capture_log_sd * (rho * z + np.sqrt(1 - rho**2) * rng.standard_normal((n, 2)))
    )
    rna_member = regime.rna_median_umis * np.exp(regime.rna_log_sd * z)
    present = np.arange(2)[None, :] < n_members[:, None]
    rna_umis = np.round((rna_member * present).sum(axis=1)).astype(np.int64)

    signal_mean = np.zeros((n, n_tags))
    member_tags = np.full((n, 2), -1)
    labels, carried = [], []
    first = rng.choice(n_tags, n, p=weights)
    second = rng.choice(n_tags, n, p=weights)
    for c in range(n):
        if kind[c] == "negative":
            labels.append("negative")
            carried.append("")
            continue
        tags = [int(first[c])]
        if kind[c] == "doublet":
            other = int(second[c])
            while other == tags[0]:
                other = int(rng.choice(n_tags, p=weights))
            tags.append(other)
        for member, tag in enumerate(tags):
            signal_mean[c, tag] += tag_signal[tag] * capture[c, member]
            member_tags[c, member] = tag
        labels.append(ids[tags[0]] if kind[c] == "singlet" else "doublet")
        carried.append("+".join(ids[t] for t in sorted(tags)))
    if regime.signal_fraction_beta is not None:
        counts = _proportional_counts(rng, regime, member_tags, capture * present)
    else:
        nonspecific = (capture * present).sum(axis=1)
        background_mean = tag_background[None, :] * (0.5 + 0.5 * nonspecific)[:, None]
        counts = _negative_binomial(rng, signal_mean, regime.signal_size) * (signal_mean > 0)
        counts = counts + _negative_binomial(rng, background_mean, regime.background_size)
    obs = pd.DataFrame(
        {"hashtag": labels, "hashtag_class": kind, "hashtags": carried, "rna_umis": rna_umis},
        index=pd.Index([f"cell{i}" for i in range(n)]),
    )
    hashtags = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=list(ids)))
    return hashtags, rna_umis


def _proportional_counts(rng, regime: HashtagRegime, member_tags, capture) -> np.ndarray:
    """Counts whose proportions, not levels, carry the signal (the composition model of
    `kbagg.cells.demux.composition`, which fits the real captures better than the count
    model): each member cell binds ``signal_umis * capture`` tag UMIs, a Beta-distributed
    fraction of them its own hashtag's (none for a negative), the rest in the background
    composition (`tag_levels`' background, normalised); the droplet's counts are
    Dirichlet-multinomial around the resulting mean proportions."""
    n, n_tags = len(member_tags), regime.n_hashtags
    background = tag_levels(regime)[1]
    background /= background.sum()
    beta = np.array(regime.signal_fraction_beta, dtype=float)
    mean_fraction = float(np.mean(beta[:, 0] / beta.sum(axis=1)))
    umis = regime.signal_umis * capture  # (n, 2), 0 for an absent member
    mean_counts = np.zeros((n, n_tags))
    for member in (0, 1):
        tag = member_tags[:, member]
        carrier = tag >= 0
        fraction = np.zeros(n)
        fraction[carrier] = rng.beta(beta[tag[carrier], 0], beta[tag[carrier], 1])
        # a negative binds only the background share of a carrier's UMIs
        own = np.where(carrier, umis[:, member], umis[:, member] * (1 - mean_fraction))
        mean_counts += ((1 - fraction) * own)[:, None] * background[None, :]
        mean_counts[carrier, tag[carrier]] += fraction[carrier] * own[carrier]
    totals = np.round(mean_counts.sum(axis=1)).astype(np.int64)
    proportions = mean_counts / np.maximum(mean_counts.sum(axis=1, keepdims=True), 1e-12)
    draws = rng.gamma(np.maximum(regime.concentration * proportions, 1e-6))
    draws /= draws.sum(axis=1, keepdims=True)
    return rng.multinomial(totals, draws).astype(np.float64)


def simulate_empty_droplets(regime: HashtagRegime | str, seed: int, n_droplets: int) -> ad.AnnData:
    """Hashtag counts of empty droplets: the ambient part of the background only.

    Parameters
    ----------
    regime
        A `HashtagRegime` or the name of one in `REGIMES`.
    seed
        Seed of the random generator.
    n_droplets
        Empty droplets to draw.

    Returns
    -------
    Droplets x hashtags AnnData of integer UMI counts (obs_names ``empty0``...), for methods
    that estimate the background from empty droplets (demuxEM).
    """
    if isinstance(regime, str):
        regime = REGIMES[regime]
    rng = np.random.default_rng([seed, 1])
    mean = np.broadcast_to(0.5 * tag_levels(regime)[1], (n_droplets, regime.n_hashtags))
    counts = _negative_binomial(rng, mean, regime.background_size)
    return ad.AnnData(
        sp.csr_matrix(counts),
        obs=pd.DataFrame(index=[f"empty{i}" for i in range(n_droplets)]),
        var=pd.DataFrame(index=[f"HTO{i + 1}" for i in range(regime.n_hashtags)]),
    )


def draw_regime(seed: int, name: str | None = None) -> HashtagRegime:
    """A regime with parameters drawn at random from the published ranges of the module
    docstring (an outside check: data the method was never tuned on).

    Parameters
    ----------
    seed
        Seed of the draw.
    name
        The regime's name (default ``drawn<seed>``).

    Returns
    -------
    A `HashtagRegime`: signal 40-400 UMIs and background 3-30 (log-uniform), capture log
    sd 0.3-1.0 and its correlation with log RNA 0.3-0.8, doublets 5-20 %, negatives 3-15 %,
    4-16 hashtags, NB sizes 2-5.
    """
    rng = np.random.default_rng([seed, 2026])
    return HashtagRegime(
        name=name or f"drawn{seed}",
        n_hashtags=int(rng.choice([4, 6, 8, 12, 16])),
        doublet_fraction=float(rng.uniform(0.05, 0.20)),
        negative_fraction=float(rng.uniform(0.03, 0.15)),
        signal_umis=float(np.exp(rng.uniform(np.log(40), np.log(400)))),
        background_umis=float(np.exp(rng.uniform(np.log(3), np.log(30)))),
        signal_size=float(rng.uniform(2, 5)),
        background_size=float(rng.uniform(2, 5)),
        capture_log_sd=float(rng.uniform(0.3, 1.0)),
        capture_rna_correlation=float(rng.uniform(0.3, 0.8)),
    )

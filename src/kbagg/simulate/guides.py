"""CRISPR guide-capture UMI counts with known truth: which guides each cell carries.

`simulate_guides` draws a cells x guides UMI matrix, as the ``crispr`` modality of a sample
holds it after `kb count --workflow kite:10xFB` (the cells called on gene expression), for
a named regime of `GUIDE_REGIMES`. Per cell:

- the number of guides it carries, 0, 1, 2 or 3 (the multiplicity of infection, MOI);
- its capture efficiency (log-normal), which scales all its guide UMIs;
- for each guide it carries, negative-binomial UMIs with mean ``guide_umis`` times the
  cell's and the guide's capture efficiency (some guides are captured much worse than
  others, log-normal per guide);
- ambient guide molecules in every cell, negative binomial in total, spread over the guides
  in proportion to the guides' abundance in the pool (what the cells carry, times capture).

Where the parameters come from (ranges a user meets, not what a method separates well):

- Low MOI, the common design: Replogle et al. 2022 (Cell 185:2559, genome-wide K562
  Perturb-seq) and Dixit et al. 2016 (Cell 167:1853) transduce at MOI ~0.1-0.3 and keep the
  cells with one guide; after selection, most cells carry one guide, 20-40 % none detected
  and a few percent two or more (lentiviral co-infection, doublets). 10x's public
  SC3_v3_NextGem_DI_CRISPR_10K (3' v3.1 CRISPR direct capture) is of this kind.
- Guide UMIs per cell: Replogle et al. 2020 (Nat Biotechnol 38:954, direct capture
  Perturb-seq) report tens to a few hundred UMIs of the assigned guide per cell with
  capture sequence 1 / CROP-seq libraries; we use a median of ~40 (``guide_umis``), with
  cell capture log-normal sd 0.6 and a negative-binomial size 2 (the broad, right-skewed
  per-guide distributions of Braunger et al. 2024, Bioinformatics 40:btae535, crispat, Fig.
  1 on Replogle 2022 and Schraivogel 2020 data).
- Per-guide capture: median UMIs of the assigned guide differ up to ~10-fold between
  guides of one library in those data sets (Braunger 2024); log-normal sd 0.5 (default) and
  1.0 (``variable_capture``).
- Ambient: in those data sets most cells show 1-10 background UMIs of guides they do not
  carry, the reason crispat's and Replogle 2022's per-guide mixtures exist; ``high_ambient``
  puts ~35 ambient UMIs per cell (about half of all guide UMIs) on few guides, as in a
  library with a handful of abundant guides or free guide RNA in the soup.
- High MOI (2-3 guides per cell): Replogle 2020's combinatorial (dual / triple guide)
  vectors and high-MOI screens (Gasperini et al. 2019, Cell 176:377, mean ~28 guides per
  cell; here at most 3, as the brief asks).

The values are taken from the figures and text of the papers above as read; they are
ranges of the right order, not fitted to any one data set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from kbagg.simulate.features import _negative_binomial

GUIDE_SEPARATOR = "|"


@dataclass(frozen=True)
class GuideSimSpec:
    """What `simulate_guides` draws; fractions are of cells."""

    n_cells: int = 3000
    n_guides: int = 20
    # fraction of cells carrying 0, 1, 2, 3 guides
    moi_fractions: tuple[float, float, float, float] = (0.25, 0.65, 0.08, 0.02)
    guide_umis: float = 40.0  # median UMIs of a carried guide (cell and guide capture 1)
    guide_size: float = 2.0  # negative-binomial size of a carried guide's UMIs
    cell_capture_sd: float = 0.6  # log-normal sd of a cell's capture efficiency
    guide_capture_sd: float = 0.5  # log-normal sd of a guide's capture efficiency
    ambient_umis: float = 3.0  # mean ambient guide UMIs per cell (all guides together)
    ambient_size: float = 3.0
    # ambient profile: the pool's guide abundance raised to this power (>1: a few guides
    # dominate the soup)
    ambient_skew: float = 1.0


GUIDE_REGIMES: dict[str, GuideSimSpec] = {
    # 10x SC3_v3_NextGem_DI_CRISPR_10K-like low-MOI screen
    "low_moi": GuideSimSpec(),
    # 2-3 guides in half the cells (combinatorial vectors, Replogle 2020)
    "high_moi": GuideSimSpec(moi_fractions=(0.1, 0.4, 0.3, 0.2), ambient_umis=5.0),
    # guides captured very unequally (10-fold and more)
    "variable_capture": GuideSimSpec(guide_capture_sd=1.0, ambient_umis=4.0),
    # ambient about half of all guide UMIs, concentrated on a few abundant guides
    "high_ambient": GuideSimSpec(
        moi_fractions=(0.2, 0.55, 0.18, 0.07),
        ambient_umis=35.0,
        ambient_skew=2.0,
        n_guides=10,
    ),
    # a shallow library: few UMIs per carried guide
    "shallow": GuideSimSpec(guide_umis=8.0, ambient_umis=1.0),
}


def guide_names(n_guides: int) -> list[str]:
    """Guide names as in a 10x feature reference: target gene and guide number."""
    return [f"sgGENE{g // 2 + 1}_{g % 2 + 1}" for g in range(n_guides)]


def simulate_guides(regime: str | GuideSimSpec = "low_moi", seed: int = 0) -> ad.AnnData:
    """Guide UMI counts of cells with known guides.

    Parameters
    ----------
    regime
        A name of `GUIDE_REGIMES` or a `GuideSimSpec`.
    seed
        Seed of the random generator (all draws come from it).

    Returns
    -------
    Cells x guides AnnData of integer UMI counts (CSR) with ``obs['true_guides']`` (the
    carried guides' names joined with ``|`` in var order, empty for none),
    ``obs['true_n_guides']``, ``obs['ambient_umis']`` (the cell's ambient UMIs) and
    ``var['capture']`` (the guide's capture efficiency).
    """
    spec = GUIDE_REGIMES[regime] if isinstance(regime, str) else regime
    rng = np.random.default_rng(seed)
    n_cells, n_guides = spec.n_cells, spec.n_guides
    fractions = np.asarray(spec.moi_fractions, dtype=float)
    n_carried = rng.choice(len(fractions), size=n_cells, p=fractions / fractions.sum())
    carried = np.zeros((n_cells, n_guides), dtype=bool)
    for c in np.flatnonzero(n_carried):
        carried[c, rng.choice(n_guides, n_carried[c], replace=False)] = True
    cell_capture = rng.lognormal(0.0, spec.cell_capture_sd, n_cells)
    guide_capture = rng.lognormal(0.0, spec.guide_capture_sd, n_guides)
    signal_mean = spec.guide_umis * np.outer(cell_capture, guide_capture) * carried
    signal = _negative_binomial(rng, signal_mean, spec.guide_size)
    pool = (carried * guide_capture).sum(axis=0) + 1e-3
    profile = pool**spec.ambient_skew
    profile = profile / profile.sum()
    ambient_total = _negative_binomial(rng, np.full(n_cells, spec.ambient_umis), spec.ambient_size)
    ambient = rng.multinomial(ambient_total, profile)
    names = np.array(guide_names(n_guides), dtype=object)
    obs = pd.DataFrame(
        {
            "true_guides": [GUIDE_SEPARATOR.join(names[row]) for row in carried],
            "true_n_guides": n_carried.astype(np.int64),
            "ambient_umis": ambient_total.astype(np.int64),
        },
        index=pd.Index([f"cell{c}" for c in range(n_cells)]),
    )
    var = pd.DataFrame({"capture": guide_capture}, index=pd.Index(list(names)))
    counts = sp.csr_matrix((signal + ambient).astype(np.int64))
    return ad.AnnData(counts, obs=obs, var=var)


def scaled(regime: str, **changes) -> GuideSimSpec:
    """A regime of `GUIDE_REGIMES` with some fields changed (e.g. fewer cells for tests)."""
    return replace(GUIDE_REGIMES[regime], **changes)


def guide_sets(calls) -> list[frozenset[str]]:
    """Each cell's guides as a set, from `guide_call`-style strings ("g1|g2", "" for none)."""
    return [frozenset(name for name in str(call).split("|") if name) for call in calls]


def score_guide_calls(truth, called) -> dict[str, float]:
    """Guide calls against the truth, cell by cell.

    Parameters
    ----------
    truth
        The true guides of each cell (``obs['true_guides']``), as `guide_call` strings.
    called
        The called guides of the same cells in the same order, as `guide_call` strings.

    Returns
    -------
    ``precision`` and ``recall`` over (cell, guide) pairs, and ``exact``: the share of cells
    whose called set equals the true set.
    """
    tp = fp = fn = exact = 0
    for true, call in zip(guide_sets(truth), guide_sets(called), strict=True):
        tp, fp, fn = tp + len(true & call), fp + len(call - true), fn + len(true - call)
        exact += true == call
    return {
        "precision": tp / max(tp + fp, 1),
        "recall": tp / max(tp + fn, 1),
        "exact": exact / max(len(truth), 1),
    }

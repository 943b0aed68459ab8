"""How well each hashtag's signal stands apart from its background, and the warning.

The separability of a hashtag is the total-variation distance between its fitted signal and
background distributions at the median RNA library size (negative binomials, mixed over
the latent capture's nodes when the fit has one): 1 when no count could come
from both (clean hashing), 0 when they are the same distribution (no signal). It is the
best accuracy gain over guessing for one hashtag seen alone: at 0.6 a cell's count says
little on its own, and calls lean on the other hashtags and the priors.

The expected error of a hashtag is the model's own estimate of the share of its singlet
calls that are wrong: one minus the mean posterior of those calls. On the simulated
regimes it tracks the true share (docs/demultiplexing.md: high background 0.055-0.067
expected, 0.055-0.069 true; noisy 0.17-0.19, 0.15-0.19). A hashtag is *weak* when its
separability is below `WEAK_SEPARABILITY` or its expected error above `MAX_EXPECTED_ERROR`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import betabinom

from kbagg.cells.demux.composition import SIGNAL_FRACTIONS, CompositionFit
from kbagg.cells.demux.model import MixtureFit, nb_log_pmf

WEAK_SEPARABILITY = 0.85  # below this a hashtag is reported weak
MAX_EXPECTED_ERROR = 0.05  # above this share of wrong singlet calls (expected), too
UNCERTAIN_CONFIDENCE = 0.9  # a call with a lower posterior counts as uncertain


class WeakHashtagsWarning(UserWarning):
    """Hashtags of a sample whose signal does not separate from their background."""


def hashtag_separability(fit: MixtureFit, names: list[str], active: np.ndarray) -> pd.DataFrame:
    """One row per hashtag: ``hashtag``, ``separability`` (0-1, see the module docstring;
    0 for a hashtag with no signal), ``signal_umis`` and ``background_umis`` (fitted means
    at the median RNA library size), ``signal_to_background`` and ``weak``."""
    rows = []
    for h, name in enumerate(names):
        background = fit.background[h]
        signal = fit.signal[h] if active[h] and fit.signal[h] is not None else None
        background_mean = float(background.mean(np.zeros(1))[0])
        if signal is None:
            rows.append((name, 0.0, np.nan, background_mean, np.nan))
            continue
        signal_mean = float(signal.mean(np.zeros(1))[0])
        top = int(max(signal_mean, background_mean) * 20 + 100)
        distance = (
            0.5
            * np.abs(_marginal_pmf(signal, fit, top) - _marginal_pmf(background, fit, top)).sum()
        )
        rows.append(
            (name, float(distance), signal_mean, background_mean, signal_mean / background_mean)
        )
    return _table(rows)


def _table(rows: list[tuple]) -> pd.DataFrame:
    """The separability table from (hashtag, separability, signal, background, ratio) rows."""
    columns = ["hashtag", "separability", "signal_umis", "background_umis", "signal_to_background"]
    table = pd.DataFrame(rows, columns=columns)
    table["weak"] = table["separability"] < WEAK_SEPARABILITY
    return table


def add_expected_error(table: pd.DataFrame, calls: pd.DataFrame) -> pd.DataFrame:
    """`table` (from `hashtag_separability`) with ``expected_error`` per hashtag (NaN when
    no cell is called its singlet) from `calls` (``hashtag``, ``hashtag_class``,
    ``hashtag_confidence``), and ``weak`` updated to include it."""
    singlets = calls[calls["hashtag_class"] == "singlet"]
    mean_confidence = singlets.groupby(singlets["hashtag"].astype(str))["hashtag_confidence"].mean()
    table = table.copy()
    table["expected_error"] = 1.0 - table["hashtag"].map(mean_confidence).astype(float)
    table["weak"] = (table["separability"] < WEAK_SEPARABILITY) | (
        table["expected_error"] > MAX_EXPECTED_ERROR
    )
    return table


def _marginal_pmf(regression, fit: MixtureFit, top: int) -> np.ndarray:
    """P(count = 0..top) at the median RNA library size, the latent capture integrated out."""
    values = np.arange(top + 1, dtype=float)
    weights = np.exp(fit.capture_log_weights)
    pmf = np.zeros(top + 1)
    for u, weight in zip(fit.capture_nodes, weights / weights.sum(), strict=True):
        mean = regression.mean(np.zeros(1), u)[0]
        pmf += weight * np.exp(nb_log_pmf(values, np.full(top + 1, mean), regression.size))
    return pmf


def weak_hashtags_message(table: pd.DataFrame, sample: str | None, confidence: np.ndarray) -> str:
    """The `WeakHashtagsWarning` text, or '' when every hashtag separates."""
    weak = table[table["weak"]]
    if weak.empty:
        return ""
    who = f"sample '{sample}'" if sample else "hashtag library"
    uncertain = float(np.mean(confidence < UNCERTAIN_CONFIDENCE))
    return (
        f"{who}: hashtag(s) {describe_weak(weak)} do not separate from their background "
        f"(separability < {WEAK_SEPARABILITY} or more than {100 * MAX_EXPECTED_ERROR:.0f}% of "
        f"their calls expected wrong); {100 * uncertain:.1f}% of cells have a call "
        f"with posterior < {UNCERTAIN_CONFIDENCE}: treat the demultiplexing as uncertain"
    )


def describe_weak(weak: pd.DataFrame) -> str:
    """``HTO4 (0.82, 6.7% expected wrong), ...`` for the weak rows of a separability table
    (``hashtag`` a column or the index)."""
    rows = weak.reset_index() if "hashtag" not in weak.columns else weak
    parts = []
    for row in rows.itertuples():
        text = f"{row.hashtag} ({row.separability:.2f}"
        error = getattr(row, "expected_error", np.nan)
        if not np.isnan(error):
            text += f", {100 * error:.1f}% expected wrong"
        if np.isnan(getattr(row, "signal_umis", 0.0)):
            text += ", no signal: unused or failed"
        parts.append(text + ")")
    return ", ".join(parts)


NO_SIGNAL_SHARE = 0.002  # a hashtag with fewer of its singlets than this share: no signal


def composition_separability(fit: CompositionFit, names: list[str]) -> pd.DataFrame:
    """`hashtag_separability`'s table for a `CompositionFit`: per hashtag the total-variation
    distance between its count in a cell that carries it and in one that does not, at the
    median hashtag UMIs per cell (beta-binomials mixed over the signal fractions; a
    non-carrier's from the other singlets' fractions, weighted by their shares). A hashtag
    with fewer singlets than `NO_SIGNAL_SHARE` of the cells has no signal (0)."""
    n_total = max(int(round(fit.median_total)), 1)
    values = np.arange(n_total + 1)
    fractions = SIGNAL_FRACTIONS
    singlet_share = fit.posterior[:, 1 : 1 + len(names)].mean(axis=0)
    rows = []
    for h, name in enumerate(names):
        b = fit.background[h]
        others = np.delete(np.arange(len(names)), h)
        other_weights = (singlet_share[others, None] * fit.signal_weights[others]).sum(axis=0)
        other_weights = other_weights / max(other_weights.sum(), 1e-300)
        off_share = (1 - fractions) * b
        background_pmf = _beta_binomial_mixture(values, off_share, other_weights, fit)
        background_umis = n_total * float((other_weights * off_share).sum())
        if singlet_share[h] < NO_SIGNAL_SHARE:
            rows.append((name, 0.0, np.nan, background_umis, np.nan))
            continue
        on_share = off_share + fractions
        signal_pmf = _beta_binomial_mixture(values, on_share, fit.signal_weights[h], fit)
        signal_umis = n_total * float((fit.signal_weights[h] * on_share).sum())
        distance = 0.5 * float(np.abs(signal_pmf - background_pmf).sum())
        rows.append((name, distance, signal_umis, background_umis, signal_umis / background_umis))
    return _table(rows)


def _beta_binomial_mixture(values, shares, weights, fit: CompositionFit) -> np.ndarray:
    pmf = np.zeros(len(values))
    n_total = int(values[-1])
    for share, weight in zip(shares, weights, strict=True):
        share = float(np.clip(share, 1e-9, 1 - 1e-9))
        a, b = fit.concentration * share, fit.concentration * (1 - share)
        pmf += weight * betabinom.pmf(values, n_total, a, b)
    return pmf

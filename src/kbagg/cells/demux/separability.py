"""How well each hashtag's signal stands apart from its background, and the warning.

The separability of a hashtag is the total-variation distance between its fitted signal and
background negative binomials at the median RNA library size: 1 when no count could come
from both (clean hashing), 0 when they are the same distribution (no signal). It is the
best accuracy gain over guessing for one hashtag seen alone: at 0.6 a cell's count says
little on its own, and calls lean on the other hashtags and the priors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kbagg.cells.demux.model import MixtureFit, nb_log_pmf

WEAK_SEPARABILITY = 0.85  # below this a hashtag is reported weak
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
        values = np.arange(top + 1, dtype=float)
        distance = (
            0.5
            * np.abs(
                np.exp(nb_log_pmf(values, np.full(top + 1, signal_mean), signal.size))
                - np.exp(nb_log_pmf(values, np.full(top + 1, background_mean), background.size))
            ).sum()
        )
        rows.append(
            (name, float(distance), signal_mean, background_mean, signal_mean / background_mean)
        )
    table = pd.DataFrame(
        rows,
        columns=[
            "hashtag",
            "separability",
            "signal_umis",
            "background_umis",
            "signal_to_background",
        ],
    )
    table["weak"] = table["separability"] < WEAK_SEPARABILITY
    return table


def weak_hashtags_message(table: pd.DataFrame, sample: str | None, confidence: np.ndarray) -> str:
    """The `WeakHashtagsWarning` text, or '' when every hashtag separates."""
    weak = table[table["weak"]]
    if weak.empty:
        return ""
    who = f"sample '{sample}'" if sample else "hashtag library"
    uncertain = float(np.mean(confidence < UNCERTAIN_CONFIDENCE))
    parts = [
        f"{row.hashtag} ({row.separability:.2f}"
        + (", no signal: unused or failed" if np.isnan(row.signal_umis) else "")
        + ")"
        for row in weak.itertuples()
    ]
    return (
        f"{who}: hashtag(s) {', '.join(parts)} do not separate from their background "
        f"(separability < {WEAK_SEPARABILITY}); {100 * uncertain:.1f}% of cells have a call "
        f"with posterior < {UNCERTAIN_CONFIDENCE}: treat the demultiplexing as uncertain"
    )

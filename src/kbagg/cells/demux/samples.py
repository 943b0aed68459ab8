"""Hashtag calls -> sample names, with the config's hashtag -> sample mapping."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from kbagg.cells.demux.errors import DemuxError

SINGLET = "singlet"


def assign_samples(calls: pd.DataFrame, mapping: Mapping[str, str]) -> pd.Series:
    """The sample of each cell: ``mapping[hashtag]`` for singlets, missing otherwise.

    Parameters
    ----------
    calls
        `demultiplex`'s result (``hashtag``, ``hashtag_class`` and ``clr:<id>`` columns).
    mapping
        Hashtag id -> sample name (the config's hashtags section); it must name every
        hashtag of `calls` (its ``clr:`` columns and singlet calls). Several hashtags may
        map to one sample.

    Returns
    -------
    Categorical Series (index: cells) of sample names; doublets and negatives are missing
    (``hashtag_class`` says which).
    """
    singlet = calls["hashtag_class"] == SINGLET
    scored = [c.removeprefix("clr:") for c in calls.columns if c.startswith("clr:")]
    hashtags = list(dict.fromkeys([*scored, *calls.loc[singlet, "hashtag"]]))
    missing = [h for h in hashtags if h not in mapping]
    if missing:
        n_cells = int(calls.loc[singlet, "hashtag"].isin(missing).sum())
        raise DemuxError(
            f"hashtag(s) {', '.join(map(str, missing))} (singlet call of {n_cells} cells) "
            f"missing from the hashtag -> sample mapping, which has "
            f"{', '.join(map(str, mapping)) or 'none'}; add them"
        )
    samples = calls["hashtag"].where(singlet).map(dict(mapping))
    categories = list(dict.fromkeys(mapping.values()))
    return pd.Series(
        pd.Categorical(samples, categories=categories), index=calls.index, name="sample"
    )

"""A layer only some samples have: the inner join drops it, as anndata.concat does, and says
so (`DroppedLayersWarning`, shown by the aggregate rules as a WARNING line); outer keeps it."""

import warnings

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from kbagg.concat import concat_on_disk
from kbagg.concat.engine import DroppedLayersWarning
from kbagg.rule import warnings_to_terminal


def _sample(path, name, layer: bool):
    rng = np.random.default_rng(len(name))
    x = sp.random(4, 3, density=0.5, format="csr", random_state=rng, dtype=np.float32)
    adata = ad.AnnData(
        X=x,
        obs=pd.DataFrame(index=[f"{name}_{i}" for i in range(4)]),
        var=pd.DataFrame(index=["g1", "g2", "g3"]),
        layers={"nonumi_reads": x * 2} if layer else {},
    )
    adata.write_h5ad(path / f"{name}.h5ad")
    return path / f"{name}.h5ad"


def _layers(path) -> list[str]:
    with h5py.File(path, "r") as f:
        return list(f["layers"])


@pytest.fixture
def inputs(tmp_path):
    return {
        "plate": _sample(tmp_path, "plate", True),
        "drops_a": _sample(tmp_path, "drops_a", False),
        "drops_b": _sample(tmp_path, "drops_b", False),
    }


def test_inner_join_names_the_dropped_layer_and_the_samples(inputs, tmp_path):
    with pytest.warns(DroppedLayersWarning) as caught:
        out = concat_on_disk(inputs, tmp_path / "inner.h5ad", join="inner", progress=False)
    message = str(caught[0].message)
    assert "layer 'nonumi_reads' is in 1 of 3 samples ('plate')" in message
    assert "not in 'drops_a', 'drops_b'" in message
    assert "join 'outer' keeps it" in message
    assert _layers(out) == []  # as anndata.concat's inner join


def test_outer_join_keeps_the_layer_without_a_warning(inputs, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DroppedLayersWarning)
        out = concat_on_disk(inputs, tmp_path / "outer.h5ad", join="outer", progress=False)
    assert _layers(out) == ["nonumi_reads"]


def test_a_rule_shows_it_as_one_warning_line(inputs, tmp_path, capsys):
    with warnings_to_terminal(DroppedLayersWarning):
        concat_on_disk(inputs, tmp_path / "inner.h5ad", join="inner", progress=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING")]
    assert len(lines) == 1
    assert lines[0].startswith("WARNING: layer 'nonumi_reads' is in 1 of 3 samples")

"""Every obs/var column a kbagg writer adds is in the registry (`kbagg.obs_columns`), so the
sample sheet's parse-time check (test_sample_sheet.py) covers every name kbagg writes.

Each writer runs for real on small inputs shaped like the demo's per-sample matrices; the
columns it adds (those not in its inputs, not the label and not the sheet's metadata) must
be registered."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from kbagg.aggregate.mudata import concat_h5mu, label_demultiplexed_cells
from kbagg.cells.ambient import add_ambient
from kbagg.cells.demux import demultiplex
from kbagg.cells.guides import add_guide_calls
from kbagg.concat import concat_on_disk
from kbagg.concat.inputs import read_dataframe
from kbagg.obs_columns import CELL_COLUMNS, OBS_COLUMNS, VAR_COLUMNS, written_by_kbagg

SAMPLES = {"a": 30, "b": 20}
METADATA = pd.DataFrame({"sample": list(SAMPLES), "donor": ["d1", "d2"]})


def unregistered(columns) -> list[str]:
    return [c for c in columns if written_by_kbagg(c) is None]


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Per sample: rna (filtered.h5ad with the per-cell QC), hashtag (with its calls) and
    prot, as the workflow's per-sample matrices have them."""
    folder = tmp_path_factory.mktemp("obs_columns")
    rng = np.random.default_rng(1)
    files = {}
    for sample, n in SAMPLES.items():
        cells = pd.Index([f"AAAC{i:012d}" for i in range(n)])
        qc = {c: rng.random(n) for c in CELL_COLUMNS if c != "predicted_doublet"}
        qc["predicted_doublet"] = pd.array(rng.random(n) > 0.9, dtype="boolean")
        rna = ad.AnnData(
            sp.random(n, 12, 0.3, format="csr", random_state=rng, dtype=np.float32),
            obs=pd.DataFrame(qc, index=cells),
            var=pd.DataFrame(
                {"gene_name": [f"G{i}" for i in range(12)]},
                index=pd.Index([f"G{i:04d}" for i in range(12)], name="gene_id"),
            ),
        )
        counts = rng.poisson(2, (n, 3)).astype(np.float32)
        counts[np.arange(n), np.arange(n) % 3] += 200  # one clear hashtag per cell
        features = pd.DataFrame(
            {"feature_name": ["H1", "H2", "H3"], "feature_type": "Multiplexing Capture"},
            index=pd.Index(["HTO1", "HTO2", "HTO3"], name="feature_id"),
        )
        hashtag = ad.AnnData(sp.csr_matrix(counts), obs=pd.DataFrame(index=cells), var=features)
        hashtag.obs = demultiplex(hashtag)
        hashtag.obs["hashtag_sample"] = hashtag.obs["hashtag"].map(
            {"HTO1": "x", "HTO2": "y", "HTO3": "z"}
        )
        files[sample] = {}
        for name, adata in (("rna", rna), ("hashtag", hashtag)):
            adata.write_h5ad(folder / f"{sample}_{name}.h5ad")
            files[sample][name] = str(folder / f"{sample}_{name}.h5ad")
    return files


def test_registry_covers_the_cell_and_hashtag_writers(samples):
    from kbagg.cells.call import add_cell_qc, call_cells

    rng = np.random.default_rng(0)
    raw = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, (40, 30)).astype(np.float32)))
    raw.obs_names = [f"bc{i}" for i in range(40)]
    calls = call_cells("s", raw, raw[:25].copy(), "bustools")
    add_cell_qc(calls, doublets=True, seed=0, expected_doublet_rate=0.06)
    assert tuple(calls.filtered.obs.columns) == CELL_COLUMNS  # the per-cell QC writer
    hashtag = ad.read_h5ad(samples["a"]["hashtag"])
    assert unregistered(hashtag.obs.columns) == []
    assert {"library", "kbagg_run", "obs_id", "guide_call", "n_guides", "guide_umis"} <= set(
        OBS_COLUMNS
    )


def test_guide_and_ambient_writers_columns_are_registered():
    rng = np.random.default_rng(2)
    n = 400
    counts = rng.poisson(0.5, (n, 2)).astype(np.float32)
    counts[np.arange(n), np.arange(n) % 2] += rng.poisson(40, n)  # one clear guide per cell
    guides = ad.AnnData(sp.csr_matrix(counts), obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]))
    add_guide_calls(guides, "s")
    assert unregistered(guides.obs.columns) == []

    is_cell = np.arange(3000) < 300
    raw = ad.AnnData(
        sp.csr_matrix(
            rng.poisson(np.where(is_cell[:, None], 3.0, 0.02), (3000, 60)).astype(np.float32)
        )
    )
    raw.obs_names = [f"bc{i}" for i in range(raw.n_obs)]
    filtered = raw[is_cell].copy()
    add_ambient("s", filtered, raw, "soup", {})
    assert "ambient_fraction" in filtered.obs and "ambient_profile" in filtered.var
    assert unregistered(filtered.obs.columns) == []
    assert [c for c in filtered.var.columns if c not in VAR_COLUMNS] == []


def test_splitseq_round1_well_column_is_registered():
    from kbagg.cells.matrices import add_round1_wells
    from kbagg.kb.technology import splitseq_round1_pairs

    cells = ad.AnnData(np.ones((2, 3), dtype=np.float32))
    cells.obs_names = ["AACGTGATAACGTGAT" + d for d, _ in splitseq_round1_pairs()[:2]]
    add_round1_wells(cells, "s")
    assert list(cells.obs.columns) == ["round1_well"] and unregistered(cells.obs.columns) == []


def test_concat_engine_adds_only_the_label(samples, tmp_path):
    out = concat_on_disk(
        {s: f["rna"] for s, f in samples.items()},
        tmp_path / "agg.h5ad",
        obs_metadata=METADATA,
        progress=False,
    )
    agg = ad.read_h5ad(out)
    inputs = set(CELL_COLUMNS)
    assert set(agg.obs.columns) - inputs == {"sample", "donor"}
    assert set(agg.var.columns) <= set(VAR_COLUMNS)


def test_h5mu_writer_columns_are_registered(samples, tmp_path):
    out = tmp_path / "agg.h5mu"
    concat_h5mu(samples, out, obs_metadata=METADATA, progress=False)
    obs = label_demultiplexed_cells(out, "sample", metadata_columns=["donor"])
    assert unregistered(set(obs.columns) - {"sample", "donor"}) == []
    assert "library" in obs.columns
    with h5py.File(out, "r") as f:
        for modality in f["mod"]:
            mod_obs = read_dataframe(f["mod"][modality]["obs"])
            assert unregistered(set(mod_obs.columns) - {"sample", "donor"}) == [], modality
            mod_var = read_dataframe(f["mod"][modality]["var"])
            assert set(mod_var.columns) <= set(VAR_COLUMNS), modality


def test_soma_store_columns_are_registered(samples, tmp_path):
    tiledbsoma = pytest.importorskip("tiledbsoma")
    from kbagg.soma.store import update_store

    update_store(
        tmp_path / "store.soma",
        {s: f["rna"] for s, f in samples.items()},
        run_id="test",
        manifest_path=tmp_path / "manifest.json",
        obs_metadata=METADATA,
        project="test",
        log=lambda line: None,
    )
    with tiledbsoma.Experiment.open(str(tmp_path / "store.soma")) as exp:
        obs = exp.obs.schema.names
        var = exp.ms["RNA"].var.schema.names
    added = set(obs) - set(CELL_COLUMNS) - {"sample", "donor"}
    assert added == {"soma_joinid", "obs_id", "kbagg_run"}
    assert unregistered(added) == []
    assert set(var) <= set(VAR_COLUMNS)

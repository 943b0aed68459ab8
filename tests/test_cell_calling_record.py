"""The cell-calling record (`kbagg.cell_calling_record`): what rule cells writes to
`uns['kbagg_cells']` and rule aggregate reads back into provenance."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from kbagg.aggregate.provenance import cell_calling_record
from kbagg.cell_calling_record import UNS_KEY, CellCallingRecord
from kbagg.cells.call import add_cell_qc, call_cells
from kbagg.errors import KbaggError


def test_round_trip_keeps_every_field_and_writes_standard_json():
    record = CellCallingRecord(
        method="emptydrops",
        n_barcodes=10,
        params={"lower": 100, "retain": float("inf"), "knee": None},
        n_cells=3,
        doublets={"method": None, "reason": "qc.doublets is false"},
        warnings=["EmptyDrops: few barcodes"],
    )
    text = record.to_json()
    assert json.loads(text)["params"]["retain"] == "inf"  # not Infinity: standard JSON
    back = CellCallingRecord.from_json(text)
    assert back.to_json() == text
    assert (back.method, back.n_cells, back.doublets, back.warnings) == (
        "emptydrops",
        3,
        record.doublets,
        record.warnings,
    )
    assert list(json.loads(text)) == [
        "method",
        "n_barcodes",
        "params",
        "n_cells",
        "doublets",
        "warnings",
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "not valid JSON"),
        ('{"method": "bustools"}', "key 'n_barcodes' is missing"),
        ("[1, 2]", "not a cell-calling record"),
    ],
)
def test_a_malformed_record_is_named(text, message):
    with pytest.raises(KbaggError, match=f"^S.h5ad: .*{message}"):
        CellCallingRecord.from_json(text, source="S.h5ad: uns")


def test_call_cells_fills_the_record_that_rule_cells_writes(tmp_path):
    rng = np.random.default_rng(0)
    raw = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, (40, 30)).astype(np.float32)))
    raw.obs_names = [f"bc{i}" for i in range(40)]
    raw.var_names = [f"g{i}" for i in range(30)]
    calls = call_cells("s", raw, raw[:25].copy(), "bustools")
    add_cell_qc(calls, doublets=False, seed=0, expected_doublet_rate=0.06)
    calls.warnings.append("a note")
    record = CellCallingRecord.from_json(calls.record.to_json())
    assert (record.method, record.n_barcodes, record.n_cells) == ("bustools", 40, 25)
    assert record.doublets == {"method": None, "reason": "qc.doublets is false"}
    assert record.warnings == ["a note"]

    calls.filtered.uns[UNS_KEY] = calls.record.to_json()
    calls.filtered.write_h5ad(tmp_path / "filtered.h5ad")
    assert cell_calling_record(tmp_path / "filtered.h5ad") == json.loads(calls.record.to_json())
    calls.filtered.uns[UNS_KEY] = '{"method": "bustools"}'
    calls.filtered.write_h5ad(tmp_path / "broken.h5ad")
    with pytest.raises(KbaggError, match=r"broken\.h5ad: uns\['kbagg_cells'\]: key"):
        cell_calling_record(tmp_path / "broken.h5ad")

"""Feature counting without kb: the workflow per technology, kb's arguments, the GEX cells."""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from kbagg.count.features import (
    FeatureCountError,
    FeatureCountJob,
    KiteMode,
    called_cells,
    check_feature_libraries,
    count_features,
    feature_barcode_translation,
    feature_count_args,
    kite_mode,
    restrict_to_cells,
)
from kbagg.kb.technology import technology

FB_ONLIST = "10x_fb_whitelist.txt.gz"


def job(tmp_path: Path, **changes) -> FeatureCountJob:
    fields = {
        "sample": "S1",
        "feature_type": "Antibody Capture",
        "fastqs": ["L1_R1.fq.gz", "L1_R2.fq.gz", "L2_R1.fq.gz", "L2_R2.fq.gz"],
        "index": "ref/prot/index.idx",
        "t2g": "ref/prot/t2g.txt",
        "technology": "10xv3",
        "kb_dir": tmp_path / "kb",
        "output_h5ad": tmp_path / "prot.h5ad",
        "gex_filtered_h5ad": tmp_path / "gex.h5ad",
        "onlist": "onlists/10xFB.txt",
        "threads": 2,
        "memory_mb": 1000,
    }
    fields.update(changes)
    return FeatureCountJob(**fields)


def test_kite_mode_follows_kbs_own_rule():
    assert kite_mode("10xv3") == KiteMode("10xv3", "kite:10xFB", "10xFB")
    assert kite_mode("10XFB") == KiteMode("10xv3", "kite:10xFB", "10xFB")
    assert kite_mode("10xv3", translate=False) == KiteMode("10xv3", "kite", "10xv3")
    assert kite_mode("10xv2") == KiteMode("10xv2", "kite", "10xv2")
    assert kite_mode("10xv4") == KiteMode("10xv4", "kite", "10xv4")
    with pytest.raises(FeatureCountError, match="technology '10xv4': kb 0.30.2 translates"):
        kite_mode("10xv4", translate=True)
    with pytest.raises(FeatureCountError, match="'10xFB' is 10x v3 feature barcoding"):
        kite_mode("10xfb", translate=False)
    # The on-list kite:10xFB corrects against is kb's feature-barcode one.
    assert technology("10xFB").onlist.name == FB_ONLIST


def test_kite_10xfb_is_what_kb_itself_accepts():
    """kb's parser refuses kite:10xFB with any -x but 10XV3: the rule kite_mode states."""
    import inspect

    import kb_python.main

    source = inspect.getsource(kb_python.main)
    assert "args.workflow == 'kite:10xFB' and args.x.upper() != '10XV3'" in source


def test_feature_count_args(tmp_path):
    args = feature_count_args(job(tmp_path), tmp_path / "out", tmp_path / "out" / "tmp")
    assert args[:8] == ["count", "-i", "ref/prot/index.idx", "-g", "ref/prot/t2g.txt", "-x",
                        "10xv3", "--workflow"]  # fmt: skip
    assert args[args.index("--workflow") + 1] == "kite:10xFB"
    assert args[args.index("-w") + 1] == "onlists/10xFB.txt"
    assert args[args.index("-m") + 1] == "250M"  # a quarter: bustools sort allocates it all
    assert args[args.index("-t") + 1] == "2"
    assert "--filter" not in args  # the cells come from gene expression
    assert args[-4:] == ["L1_R1.fq.gz", "L1_R2.fq.gz", "L2_R1.fq.gz", "L2_R2.fq.gz"]
    plain = feature_count_args(job(tmp_path, technology="10xv2", onlist=None), tmp_path, tmp_path)
    assert plain[plain.index("--workflow") + 1] == "kite" and "-w" not in plain
    assert plain[plain.index("-x") + 1] == "10xv2"
    with pytest.raises(FeatureCountError, match=r"sample 'S1' \(Antibody Capture\): FASTQs"):
        feature_count_args(job(tmp_path, fastqs=["a", "b", "c"]), tmp_path, tmp_path)


def test_a_feature_library_without_gene_expression_is_an_error(tmp_path):
    sheet = pd.DataFrame(
        {
            "sample": ["A", "A", "B", "C"],
            "feature_type": [pd.NA, "Antibody Capture", "Gene Expression", "Multiplexing Capture"],
            "line": [2, 3, 4, 5],
        }
    )
    with pytest.raises(
        FeatureCountError,
        match=r"sample sheet line 5: sample 'C' has a 'Multiplexing Capture' library but no "
        r"'Gene Expression' library",
    ):
        check_feature_libraries(sheet)
    check_feature_libraries(sheet.iloc[:3])  # A's missing type is Gene Expression
    with pytest.raises(
        FeatureCountError,
        match=r"line 2: sample 'A': feature_type 'ADT' is not one of 'Gene Expression', ",
    ):
        check_feature_libraries(sheet.assign(feature_type="ADT"))
    # And the count itself refuses before running kb.
    with pytest.raises(FeatureCountError, match=r"sample 'S1' has a 'Antibody Capture' library"):
        count_features(job(tmp_path, gex_filtered_h5ad=None))
    with pytest.raises(FeatureCountError, match=r"sample 'S1': the gene-expression cells .*gex"):
        count_features(job(tmp_path))  # the GEX matrix does not exist (yet)
    assert not (tmp_path / "kb.partial").exists()


def test_restrict_to_cells_keeps_gex_cells_in_order_with_zero_rows():
    counts = ad.AnnData(
        sp.csr_matrix(np.array([[1, 0, 2], [0, 3, 0], [4, 0, 0]], dtype=np.float64)),
        obs=pd.DataFrame(index=["AAA", "CCC", "GGG"]),
        var=pd.DataFrame(index=pd.Index(["f1", "f2", "f3"], name="gene_id")),
    )
    cells = pd.Index(["GGG", "TTT", "AAA"])
    out = restrict_to_cells(counts, cells, pd.Index(["f3", "f1", "f9"]))
    np.testing.assert_array_equal(out.X.toarray(), [[0, 4, 0], [0, 0, 0], [2, 1, 0]])
    assert out.X.dtype == np.float64 and sp.isspmatrix_csr(out.X)
    assert list(out.obs_names) == ["GGG", "TTT", "AAA"]
    assert list(out.var_names) == ["f3", "f1", "f9"]
    same = restrict_to_cells(counts, cells)
    np.testing.assert_array_equal(same.X.toarray(), [[4, 0, 0], [0, 0, 0], [1, 0, 2]])


def test_called_cells_reads_obs_names_only(tmp_path):
    gex = ad.AnnData(sp.random(3, 4, 0.5, format="csr"), obs=pd.DataFrame(index=["C1", "A1", "B1"]))
    gex.write_h5ad(tmp_path / "gex.h5ad")
    assert list(called_cells(tmp_path / "gex.h5ad")) == ["C1", "A1", "B1"]


def test_feature_barcode_translation_is_kbs_line_by_line_table():
    import ngs_tools as ngs

    chemistry = ngs.chemistry.get_chemistry("10xFB")
    with (
        gzip.open(chemistry.chemistry("gex").whitelist_path, "rt") as gex,
        gzip.open(chemistry.chemistry("fb").whitelist_path, "rt") as fb,
    ):
        pairs = [(g.strip(), f.strip()) for _, g, f in zip(range(3000), gex, fb, strict=False)]
    wanted = [pairs[0][0], pairs[1234][0], pairs[2999][0]]
    assert feature_barcode_translation(wanted) == {
        pairs[0][0]: pairs[0][1],
        pairs[1234][0]: pairs[1234][1],
        pairs[2999][0]: pairs[2999][1],
    }
    # The first entries, as kb 0.30.2 ships them: positions 8-9 differ.
    assert pairs[0] == ("AAACCCAAGAAACACT", "AAACCCATCAAACACT")

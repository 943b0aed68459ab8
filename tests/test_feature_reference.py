"""Feature references: the three formats, every error with its file and line, kb's TSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kbagg.reference.features import (
    ANTIBODY_CAPTURE,
    CRISPR_GUIDE_CAPTURE,
    MULTIPLEXING_CAPTURE,
    FeatureReferenceError,
    feature_index_outputs,
    features_of_type,
    read_feature_reference,
    write_kb_features,
)

HEADER = "id,name,read,pattern,sequence,feature_type\n"
ROW_A = "CD3,CD3 antibody,R2,^NNNNNNNNNN(BC)NNNNNNNNN,AACAAGACCCTTGAG,Antibody Capture\n"
ROW_B = "CD4,CD4 antibody,R2,^NNNNNNNNNN(BC)NNNNNNNNN,TACCCGTAATAGCGT,Antibody Capture\n"
ROW_H = "H1,Hashtag 1,R2,5P(BC),GTCAACTCTTTAGCG,Multiplexing Capture\n"


def write(tmp_path: Path, text: str, name: str = "ref.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_10x_csv_keeps_columns_lines_and_extra_columns(tmp_path):
    text = "#comment\n" + HEADER.rstrip("\n") + ",target_gene_id\n"
    text += ROW_A.rstrip("\n") + ",\n" + "\n" + ROW_H.rstrip("\n") + ",\n"
    table = read_feature_reference(write(tmp_path, text))
    assert table["id"].tolist() == ["CD3", "H1"]
    assert table["name"].tolist() == ["CD3 antibody", "Hashtag 1"]
    assert table["line"].tolist() == [3, 5]  # after a comment and a blank line
    assert table["feature_type"].tolist() == [ANTIBODY_CAPTURE, MULTIPLEXING_CAPTURE]
    assert list(table.columns)[-1] == "target_gene_id"
    assert features_of_type(table, MULTIPLEXING_CAPTURE, "x")["id"].tolist() == ["H1"]


def test_kb_tsv_and_kite_csv_take_the_given_feature_type(tmp_path):
    tsv = read_feature_reference(
        write(tmp_path, "AACAAGACCCTTGAG\tCD3\nTACCCGTAATAGCGT\tCD4\n", "f.tsv"),
        ANTIBODY_CAPTURE,
    )
    kite = read_feature_reference(
        write(
            tmp_path,
            "Feature Barcode names,Feature Barcode sequences\nCD3,AACAAGACCCTTGAG\n"
            "CD4,TACCCGTAATAGCGT\n",
        ),
        ANTIBODY_CAPTURE,
    )
    for table in (tsv, kite):
        assert table["id"].tolist() == ["CD3", "CD4"]
        assert table["sequence"].tolist() == ["AACAAGACCCTTGAG", "TACCCGTAATAGCGT"]
        assert set(table["feature_type"]) == {ANTIBODY_CAPTURE}
    assert tsv["line"].tolist() == [1, 2] and kite["line"].tolist() == [2, 3]


@pytest.mark.parametrize(
    ("text", "name", "message"),
    [
        ("", "ref.csv", r"ref\.csv: empty file"),
        ("# only a comment\n", "ref.csv", r"ref\.csv: empty file"),
        (HEADER, "ref.csv", r"only a header, no features \(line 1\)"),
        (
            "id,name,sequence\nCD3,CD3,AACAAGACCCTTGAG\n",
            "ref.csv",
            r"line 1: missing column\(s\) read, pattern, feature_type",
        ),
        (HEADER + ROW_A + "CD4,CD4,R2,x,TACCNGTAATAGCGT,Antibody Capture\n", "ref.csv",
         r"line 3: sequence 'TACCNGTAATAGCGT' of feature 'CD4' must be A, C, G, T only"),
        (HEADER + ROW_A + ROW_B.replace("CD4,", "CD3,", 1), "ref.csv",
         r"line 3: duplicate id 'CD3' \(also on line 2\)"),
        (HEADER + ROW_A + ROW_H + ROW_B.replace("TACCCGTAATAGCGT", "AACAAGACCCTTGAG"),
         "ref.csv", r"line 4: duplicate sequence 'AACAAGACCCTTGAG' \(also on line 2\)"),
        (HEADER + ROW_A.replace("Antibody Capture", "Antibody"), "ref.csv",
         r"line 2: feature_type 'Antibody' is not one of 'Antibody Capture', "
         r"'Multiplexing Capture', 'CRISPR Guide Capture'"),
        (HEADER + ROW_A.replace("Antibody Capture", "Gene Expression"), "ref.csv",
         r"line 2: feature_type 'Gene Expression' is not one of"),
        (HEADER + ROW_A.replace("CD3,", "CD 3,", 1), "ref.csv",
         r"line 2: id 'CD 3' contains whitespace, a comma or a quote"),
        (HEADER + ROW_A + "CD4,CD4,R2,x,TACCCGTAATAGCGT\n", "ref.csv",
         r"line 3: 5 fields, the header has 6"),
        (HEADER + ROW_A.replace("AACAAGACCCTTGAG", "A" * 33), "ref.csv",
         r"line 2: sequence of feature 'CD3' has 33 bases; kallisto indexes barcodes of at most 32"),
        ("AACAAGACCCTTGAG\tCD3\nCD4\tTACCCGTAATAGCGT\n", "f.tsv",
         r"f\.tsv: line 2: the columns are swapped: kb's TSV is sequence<TAB>name"),
        ("AACAAGACCCTTGAG\tCD3\nTACCCGTAATAGCGT\n", "f.tsv",
         r"f\.tsv: line 2: expected 2 tab-separated columns \(sequence<TAB>name, kb's TSV\), found 1"),
    ],
)  # fmt: skip
def test_errors_name_the_file_and_line(tmp_path, text, name, message):
    path = write(tmp_path, text, name)
    with pytest.raises(FeatureReferenceError, match=message) as caught:
        read_feature_reference(path, ANTIBODY_CAPTURE)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_barcode_inside_a_longer_one_is_an_error_unequal_lengths_are_not(tmp_path):
    long_ok = "CD8,CD8,R2,x,GGGTTTCCCAAAGGGTTTCCC,Antibody Capture\n"  # 21 bases
    assert len(read_feature_reference(write(tmp_path, HEADER + ROW_A + long_ok))) == 2
    inside = "CD8,CD8,R2,x,GATCTAAACAAGACCCTTGAG,Antibody Capture\n"  # CD3's barcode at 6
    with pytest.raises(FeatureReferenceError, match=r"line 2: barcode of 'CD3' \(15 bases\) is "
                       r"inside that of 'CD8' \(line 3, 21 bases\) up to one mismatch"):  # fmt: skip
        read_feature_reference(write(tmp_path, HEADER + ROW_A + inside))
    one_off = inside.replace("AACAAGACCCTTGAG", "AACAAGATCCTTGAG")
    with pytest.raises(FeatureReferenceError, match="inside that of 'CD8'"):
        read_feature_reference(write(tmp_path, HEADER + ROW_A + one_off))
    two_off = inside.replace("AACAAGACCCTTGAG", "AACTAGATCCTTGAG")
    assert len(read_feature_reference(write(tmp_path, HEADER + ROW_A + two_off))) == 2
    # Another feature type gets its own index: no conflict.
    other_type = inside.replace("Antibody Capture", "CRISPR Guide Capture")
    assert len(read_feature_reference(write(tmp_path, HEADER + ROW_A + other_type))) == 2


def test_formats_without_feature_type_need_one(tmp_path):
    path = write(tmp_path, "AACAAGACCCTTGAG\tCD3\n", "f.tsv")
    with pytest.raises(FeatureReferenceError, match=r"f\.tsv: kb's sequence<TAB>name TSV has no "):
        read_feature_reference(path)
    with pytest.raises(FeatureReferenceError, match=r"feature_type 'Protein' is not one of"):
        read_feature_reference(path, "Protein")


def test_missing_file_and_missing_type(tmp_path):
    with pytest.raises(FeatureReferenceError, match=r"nope\.csv: file not found"):
        read_feature_reference(tmp_path / "nope.csv")
    table = read_feature_reference(write(tmp_path, HEADER + ROW_A))
    with pytest.raises(
        FeatureReferenceError, match=r"ref: no 'CRISPR Guide Capture' features \(the reference "
        r"has 'Antibody Capture'\)"
    ):  # fmt: skip
        features_of_type(table, CRISPR_GUIDE_CAPTURE, "ref")


def test_write_kb_features_is_sequence_tab_id(tmp_path):
    table = read_feature_reference(write(tmp_path, HEADER + ROW_A + ROW_B))
    out = write_kb_features(table, tmp_path / "kb" / "features.tsv")
    assert out.read_text() == "AACAAGACCCTTGAG\tCD3\nTACCCGTAATAGCGT\tCD4\n"
    assert read_feature_reference(out, ANTIBODY_CAPTURE)["id"].tolist() == ["CD3", "CD4"]
    outputs = feature_index_outputs(tmp_path, MULTIPLEXING_CAPTURE)
    assert outputs == {
        "features": str(tmp_path / "hashtag" / "features.tsv"),
        "index": str(tmp_path / "hashtag" / "index.idx"),
        "t2g": str(tmp_path / "hashtag" / "t2g.txt"),
        "mismatch_fasta": str(tmp_path / "hashtag" / "mismatch.fa"),
    }


@pytest.mark.parametrize(
    ("name", "feature_type", "n_features", "first", "length"),
    [
        ("feature_references/kite_pbmc_1k_protein_v3_FeatureBarcodes.csv", ANTIBODY_CAPTURE,
         17, ("CD3_TotalSeqB", "AACAAGACCCTTGAG"), 15),
        ("feature_references/cellplex_CMO301-312_kb_features.tsv", MULTIPLEXING_CAPTURE,
         12, ("CMO301", "ATGAGGAATTCCTGC"), 15),
        ("feature_references/nfcore_60k_pbmc_cmo_tcr_cmo-set.csv", None,
         4, ("Hash-tag1", "GTCAACTCTTTAGCG"), 15),
        ("crispr_guides_10xv3/features.tsv", CRISPR_GUIDE_CAPTURE,
         2, ("RAB1A-2", "GCCGGCGAACCAGGAAATAG"), 20),
    ],
)  # fmt: skip
def test_real_references_parse(testdata, name, feature_type, n_features, first, length):
    table = read_feature_reference(testdata / name, feature_type)
    assert len(table) == n_features
    assert (table["id"].iloc[0], table["sequence"].iloc[0]) == first
    assert set(table["sequence"].str.len()) == {length}
    expected_type = feature_type or MULTIPLEXING_CAPTURE
    assert set(table["feature_type"]) == {expected_type}
    if feature_type is None:  # the 10x CSV keeps its pattern
        assert set(table["pattern"]) == {"^NNNNNNNNNN(BC)NNNNNNNNN"}
    assert isinstance(table, pd.DataFrame) and table["id"].is_unique

"""Feature libraries through real `kb ref --workflow kite` and `kb count --workflow kite*`:
findings that shape kbagg's checks (unequal barcode lengths are fine, a barcode inside
another is not; untranslated 10x v3 barcodes match no cell) and a real antibody panel.

Simulated antibodies and hashtags through the whole workflow are in tests/test_demo.py, the
real CRISPR library in tests/test_features_workflow.py. The simulated library here gets a
feature-barcode on-list cut down to the twins of its barcodes, for speed (bustools correct
takes ~1 s instead of ~20-40 s for the 6.8 M barcodes); kb's barcode map for the translation
is always the full one.
"""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from kbagg.count.features import (
    FeatureCountError,
    FeatureCountJob,
    count_features,
    feature_barcode_translation,
)
from kbagg.kb.run import kb_executable
from kbagg.kb.technology import onlist_barcodes
from kbagg.reference.features import (
    ANTIBODY_CAPTURE,
    MULTIPLEXING_CAPTURE,
    build_feature_index,
    feature_index_outputs,
)
from kbagg.simulate.features import (
    DEFAULT_FEATURES,
    _Read2Maker,
    write_feature_libraries,
)
from kbagg.simulate.reads import random_seq

pytestmark = pytest.mark.slow
N_CELLS, N_CELLS_WITHOUT_FEATURES = 60, 5


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Feature libraries for 60 cells; the GEX cells are those plus 5 without feature reads."""
    folder = tmp_path_factory.mktemp("sim_features")
    rng = np.random.default_rng(8)
    pool = [str(b) for b in rng.choice(onlist_barcodes("10xv3", 20000), 200, replace=False)]
    cells, extra = pool[:N_CELLS], pool[N_CELLS : N_CELLS + N_CELLS_WITHOUT_FEATURES]
    files = write_feature_libraries(folder, "s1", cells, np.arange(N_CELLS) % 4)
    all_barcodes = list(ad.read_h5ad(files["truth"][ANTIBODY_CAPTURE]).obs_names) + extra
    twins = feature_barcode_translation(all_barcodes)
    onlist = folder / "fb_onlist_simulated.txt"
    onlist.write_text("".join(f"{twins[b]}\n" for b in sorted(all_barcodes)))
    gex_cells = pd.Index(cells[:30] + extra + cells[30:])  # GEX order is not kb's order
    ad.AnnData(obs=pd.DataFrame(index=gex_cells)).write_h5ad(folder / "gex_filtered.h5ad")
    return folder, files, onlist, gex_cells, extra


def test_build_feature_index_from_a_real_antibody_panel(testdata, tmp_path):
    reference = testdata / "feature_references" / "kite_pbmc_1k_protein_v3_FeatureBarcodes.csv"
    outputs = feature_index_outputs(tmp_path, ANTIBODY_CAPTURE)
    features = build_feature_index(reference, ANTIBODY_CAPTURE, outputs)
    assert len(features) == 17
    tsv = Path(outputs["features"]).read_text().splitlines()
    assert tsv[0] == "AACAAGACCCTTGAG\tCD3_TotalSeqB" and len(tsv) == 17
    t2g = pd.read_csv(outputs["t2g"], sep="\t", header=None)
    assert set(t2g[1]) == set(features["id"])
    fasta = Path(outputs["mismatch_fasta"]).read_text()
    assert fasta.count(">") == len(t2g) <= 17 * (1 + 15 * 3)  # barcodes + Hamming-1 variants
    assert Path(outputs["index"]).stat().st_size > 0
    assert sorted(p.name for p in Path(outputs["index"]).parent.iterdir()) == [
        "features.tsv",
        "index.idx",
        "mismatch.fa",
        "t2g.txt",
    ]


def test_kb_counts_unequal_lengths_but_not_a_barcode_inside_another(tmp_path):
    """Why the reference reader allows 15 + 21 base barcodes but not one inside another."""
    rng = np.random.default_rng(5)
    kb = kb_executable()
    sequences = {f"short{i}": random_seq(rng, 15).decode() for i in range(3)}
    sequences.update({f"long{i}": random_seq(rng, 21).decode() for i in range(3)})
    cells = [str(b) for b in rng.choice(onlist_barcodes("10xv2", 3000), 10, replace=False)]
    (tmp_path / "onlist.txt").write_text("\n".join(cells) + "\n")

    def count(names: dict[str, str], folder: Path) -> tuple[np.ndarray, np.ndarray]:
        folder.mkdir()
        (folder / "f.tsv").write_text("".join(f"{s}\t{n}\n" for n, s in names.items()))
        maker = _Read2Maker("^NNNNNNNNNN(BC)", list(names.values()), 90)
        maker._only_barcode_hits = lambda *args: True  # reads as they come, stray k-mers too
        truth = rng.integers(0, 6, (len(cells), len(names)))
        r1, r2, n = [], [], 0
        for c, barcode in enumerate(cells):
            umis = iter(sorted({random_seq(rng, 10) for _ in range(400)})[: truth[c].sum()])
            for f in np.repeat(np.arange(len(names)), truth[c]):
                r1.append(b"@%d\n%s\n+\n%s\n" % (n, barcode.encode() + next(umis), b"I" * 26))
                read2 = maker.make(rng, list(names.values())[f].encode())
                r2.append(b"@%d\n%s\n+\n%s\n" % (n, read2, b"I" * 90))
                n += 1
        for name, records in (("R1", r1), ("R2", r2)):
            with gzip.open(folder / f"{name}.fq.gz", "wb") as handle:
                handle.write(b"".join(records))
        ref = ["ref", "--workflow", "kite", "-i", "i.idx", "-g", "t2g.txt", "-f1", "m.fa"]
        subprocess.run([kb, *ref, "f.tsv"], cwd=folder, check=True, capture_output=True)
        run = ["count", "-i", "i.idx", "-g", "t2g.txt", "-x", "10xv2", "--workflow", "kite"]
        run += ["-w", str(tmp_path / "onlist.txt"), "-o", "out", "-m", "128M", "--h5ad"]
        subprocess.run(
            [kb, *run, "R1.fq.gz", "R2.fq.gz"], cwd=folder, check=True, capture_output=True
        )
        counted = ad.read_h5ad(folder / "out" / "counts_unfiltered" / "adata.h5ad")
        counted = counted.to_df().reindex(index=cells, columns=list(names), fill_value=0)
        return truth.sum(axis=0), counted.to_numpy().sum(axis=0)

    truth, counted = count(sequences, tmp_path / "mixed")
    np.testing.assert_array_equal(counted, truth)  # 15 and 21 bases in one index: exact
    inside = {**sequences, "long_with_short0": "GATCTA" + sequences["short0"]}
    truth, counted = count(inside, tmp_path / "inside")
    assert counted[0] == 0 < truth[0]  # short0's reads all went to the longer barcode
    assert counted[-1] == truth[0] + truth[-1]


def test_untranslated_10xv3_barcodes_match_no_cell_and_say_so(simulated):
    """Plain `kite` on 10x v3 feature barcoding leaves the barcodes in the feature-barcode
    space (docs/workflow.md's 2 of 2,708 on real data): an error, not an empty matrix."""
    folder, files, onlist, _, _ = simulated
    outputs = feature_index_outputs(folder / "ref_plain", MULTIPLEXING_CAPTURE)
    build_feature_index(files["reference"], MULTIPLEXING_CAPTURE, outputs)
    job = FeatureCountJob(
        sample="s1",
        feature_type=MULTIPLEXING_CAPTURE,
        fastqs=[str(p) for p in files["fastq"][MULTIPLEXING_CAPTURE]],
        index=outputs["index"],
        t2g=outputs["t2g"],
        technology="10xv3",
        kb_dir=folder / "kb_plain",
        output_h5ad=folder / "plain.h5ad",
        gex_filtered_h5ad=folder / "gex_filtered.h5ad",
        translate=False,
        onlist=str(onlist),  # the feature-space barcodes, so kb keeps them
    )
    with pytest.raises(
        FeatureCountError,
        match=rf"sample 's1' \(Multiplexing Capture\): none of the {N_CELLS + DEFAULT_FEATURES.n_empty} feature "
        rf"barcodes is one of the {N_CELLS + N_CELLS_WITHOUT_FEATURES} gene-expression cells; "
        r"check the technology and translation \(kb ran --workflow kite\)",
    ):
        count_features(job)
    assert not (folder / "plain.h5ad").exists()

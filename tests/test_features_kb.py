"""Feature libraries through real `kb ref --workflow kite` and `kb count --workflow kite*`.

Feature-barcode on-lists are cut down for speed without changing the counts (bustools
correct takes ~1 s instead of ~20-40 s for the 6.8 M barcodes): the simulated libraries get
the twins of the simulated barcodes (all exact), the real CRISPR library the entries of kb's
list within one mismatch of a read's barcode (`onlist_near_reads`). kb's barcode map for the
translation is always the full one.
"""

from __future__ import annotations

import gzip
import itertools
import json
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
from kbagg.kb.technology import onlist_barcodes, technology
from kbagg.reference.features import (
    ANTIBODY_CAPTURE,
    CRISPR_GUIDE_CAPTURE,
    MODALITY,
    MULTIPLEXING_CAPTURE,
    build_feature_index,
    feature_index_outputs,
)
from kbagg.simulate.features import (
    DEFAULT_FEATURES,
    _random_seq,
    _Read2Maker,
    write_feature_libraries,
)

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


@pytest.mark.parametrize("feature_type", [ANTIBODY_CAPTURE, MULTIPLEXING_CAPTURE])
def test_simulated_library_counts_equal_the_truth(simulated, feature_type):
    folder, files, onlist, gex_cells, extra = simulated
    modality = MODALITY[feature_type]
    outputs = feature_index_outputs(folder / "ref", feature_type)
    features = build_feature_index(files["reference"], feature_type, outputs)
    job = FeatureCountJob(
        sample="s1",
        feature_type=feature_type,
        fastqs=[str(p) for p in files["fastq"][feature_type]],
        index=outputs["index"],
        t2g=outputs["t2g"],
        technology="10xv3",
        kb_dir=folder / f"kb_{modality}",
        output_h5ad=folder / f"{modality}.h5ad",
        gex_filtered_h5ad=folder / "gex_filtered.h5ad",
        reference=str(files["reference"]),
        onlist=str(onlist),
    )
    counted = count_features(job)
    truth = ad.read_h5ad(files["truth"][feature_type])
    expected = truth.to_df().reindex(gex_cells, fill_value=0)  # extra cells: zero rows
    assert list(counted.obs_names) == list(gex_cells)
    assert list(counted.var_names) == list(features["id"]) == list(truth.var_names)
    np.testing.assert_array_equal(counted.X.toarray(), expected.to_numpy())
    assert counted[extra].X.sum() == 0 and expected.to_numpy().sum() > 0
    assert counted.var["feature_type"].unique().tolist() == [feature_type]
    assert counted.uns["feature_counts"]["workflow"] == "kite:10xFB"
    # kb saw the empty droplets too; only the GEX cells are kept.
    n_empty = int((~truth.obs["is_cell"]).sum())
    assert counted.uns["feature_counts"]["barcodes_in_cells"] == N_CELLS
    assert counted.uns["feature_counts"]["barcodes_counted"] == N_CELLS + n_empty
    on_disk = ad.read_h5ad(folder / f"{modality}.h5ad")
    np.testing.assert_array_equal(on_disk.X.toarray(), counted.X.toarray())
    kb_dir = folder / f"kb_{modality}"
    assert not (kb_dir / "10x_feature_barcode_map.txt").exists()  # 230 MB, deleted
    assert not kb_dir.with_name(kb_dir.name + ".partial").exists()


def onlist_near_reads(r1_fastq: str, output: Path) -> Path:
    """kb's feature-barcode on-list cut down to the barcodes within one mismatch of a read's.

    bustools correct decides each read's barcode from the on-list entries within one mismatch
    of it only, so this list gives the same counts as the full 6.8 M barcodes at a fraction
    of the time (the README figures the test checks confirm it).
    """
    with gzip.open(r1_fastq, "rt") as handle:
        observed = {line[:16] for n, line in enumerate(handle) if n % 4 == 1}
    # A read's N may be stored as any base: take every spelling.
    observed = {
        "".join(spelling)
        for barcode in observed
        for spelling in itertools.product(*("ACGT" if b == "N" else b for b in barcode))
    }
    near = set(observed)
    for barcode in observed:
        for i in range(16):
            near.update(barcode[:i] + base + barcode[i + 1 :] for base in "ACGT")
    with gzip.open(technology("10xFB").onlist, "rt") as handle:
        kept = [line for line in handle if line[:16] in near]
    output.write_text("".join(kept))
    return output


def test_real_crispr_library_equals_kb_by_hand(testdata, tmp_path):
    data = testdata / "crispr_guides_10xv3"
    fastqs = [str(data / f"CRISPR_S1_L001_R{r}_001.fastq.gz") for r in (1, 2)]
    outputs = feature_index_outputs(tmp_path / "ref", CRISPR_GUIDE_CAPTURE)
    build_feature_index(data / "features.tsv", CRISPR_GUIDE_CAPTURE, outputs)
    onlist = onlist_near_reads(fastqs[0], tmp_path / "10xFB_onlist_near_reads.txt")
    with gzip.open(data / "cell_barcodes.tsv.gz", "rt") as handle:
        # Called by the upstream pipeline in Cell Ranger's spelling (BARCODE-1).
        cells = pd.Index([line.strip().removesuffix("-1") for line in handle])
    ad.AnnData(obs=pd.DataFrame(index=cells)).write_h5ad(tmp_path / "gex.h5ad")
    by_hand = tmp_path / "by_hand"
    command = [kb_executable(), "count", "-i", outputs["index"], "-g", outputs["t2g"]]
    command += ["-x", "10xv3", "--workflow", "kite:10xFB", "-o", str(by_hand)]
    command += ["--tmp", str(tmp_path / "by_hand_tmp"), "-t", "1", "-m", "256M"]
    command += ["--h5ad", "-w", str(onlist), *fastqs]
    # kb by hand runs alongside kbagg's run (2 cores; each is mostly single-threaded).
    log = tmp_path / "by_hand.log"
    with open(log, "w") as out, subprocess.Popen(command, stdout=out, stderr=out) as proc:
        job = FeatureCountJob(
            sample="crispr",
            feature_type=CRISPR_GUIDE_CAPTURE,
            fastqs=fastqs,
            index=outputs["index"],
            t2g=outputs["t2g"],
            technology="10xv3",
            kb_dir=tmp_path / "kb",
            output_h5ad=tmp_path / "crispr.h5ad",
            gex_filtered_h5ad=tmp_path / "gex.h5ad",
            onlist=str(onlist),
            memory_mb=1024,
        )
        counted = count_features(job)
    assert proc.returncode == 0, log.read_text()[-2000:]
    kb = ad.read_h5ad(by_hand / "counts_unfiltered" / "adata.h5ad")
    expected = kb.to_df().reindex(index=cells, columns=counted.var_names, fill_value=0)
    np.testing.assert_array_equal(counted.X.toarray(), expected.to_numpy())
    assert list(counted.var_names) == ["RAB1A-2", "NON_TARGET-1"]
    # The figures of ../shared/testdata/README.md.
    run_info = json.loads((tmp_path / "kb" / "run_info.json").read_text())
    assert (run_info["n_processed"], run_info["n_pseudoaligned"]) == (5000, 3586)
    assert counted.uns["feature_counts"]["barcodes_counted"] == kb.n_obs == 2708
    assert counted.uns["feature_counts"]["barcodes_in_cells"] == 2587
    assert counted.X.sum() == expected.to_numpy().sum() > 3000


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
    sequences = {f"short{i}": _random_seq(rng, 15).decode() for i in range(3)}
    sequences.update({f"long{i}": _random_seq(rng, 21).decode() for i in range(3)})
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
            umis = iter(sorted({_random_seq(rng, 10) for _ in range(400)})[: truth[c].sum()])
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
    space (the README's 2 of 2,708 on real data): an error, not an empty matrix."""
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

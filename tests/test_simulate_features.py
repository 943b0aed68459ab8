"""The feature-library simulator: its FASTQs, read back independently of kb, hold its truth."""

from __future__ import annotations

import gzip
import hashlib
import re
from collections import defaultdict

import anndata as ad
import numpy as np
import pytest

from kbagg.count.features import feature_barcode_translation
from kbagg.kb.technology import onlist_barcodes
from kbagg.reference.features import (
    ANTIBODY_CAPTURE,
    CRISPR_GUIDE_CAPTURE,
    MULTIPLEXING_CAPTURE,
    read_feature_reference,
)
from kbagg.simulate.features import CRISPR_PATTERN, write_feature_libraries

N_CELLS = 40


@pytest.fixture(scope="module")
def cells() -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(4)
    barcodes = [str(b) for b in rng.choice(onlist_barcodes("10xv3", 5000), N_CELLS, replace=False)]
    return barcodes, np.arange(N_CELLS) % 3


@pytest.fixture(scope="module")
def simulated(tmp_path_factory, cells):
    outdir = tmp_path_factory.mktemp("features")
    return outdir, write_feature_libraries(outdir, "s1", *cells)


def read_fastq(path):
    with gzip.open(path, "rt") as handle:
        lines = handle.read().splitlines()
    return lines[1::4]


def find_barcode(read2: str, pattern: str, length: int) -> str:
    """Where the 10x pattern says the feature barcode is (a plain re-statement)."""
    if pattern.startswith("^") or pattern.startswith("5P"):
        start = len(re.match(r"(\^|5P)(N*)", pattern).group(2))
        return read2[start : start + length]
    constant = pattern.split("(BC)")[1]
    return read2[read2.index(constant) - length : read2.index(constant)]


def test_fastqs_hold_exactly_the_truth(simulated, cells):
    outdir, files = simulated
    reference = read_feature_reference(files["reference"])
    assert reference.groupby("feature_type").size().to_dict() == {
        ANTIBODY_CAPTURE: 6,
        CRISPR_GUIDE_CAPTURE: 3,
        MULTIPLEXING_CAPTURE: 4,
    }
    for feature_type, (r1_path, r2_path) in files["fastq"].items():
        truth = ad.read_h5ad(files["truth"][feature_type])
        features = reference[reference["feature_type"] == feature_type]
        by_sequence = dict(zip(features["sequence"], features["id"], strict=True))
        pattern, length = features["pattern"].iloc[0], len(features["sequence"].iloc[0])
        # Read 1 carries the feature-barcode-space twin of each GEX barcode (kb's table).
        to_gex = {fb: gex for gex, fb in feature_barcode_translation(truth.obs_names).items()}
        molecules = defaultdict(set)
        for r1, r2 in zip(read_fastq(r1_path), read_fastq(r2_path), strict=True):
            assert len(r1) == 28 and len(r2) == 90
            molecules[(to_gex[r1[:16]], r1[16:])].add(
                by_sequence[find_barcode(r2, pattern, length)]
            )
        assert all(len(f) == 1 for f in molecules.values())  # one feature per (barcode, UMI)
        counted = np.zeros(truth.shape, dtype=int)
        rows = {b: i for i, b in enumerate(truth.obs_names)}
        cols = {f: j for j, f in enumerate(truth.var_names)}
        for (barcode, _), (feature,) in molecules.items():
            counted[rows[barcode], cols[feature]] += 1
        np.testing.assert_array_equal(counted, truth.X.toarray())
        assert list(truth.obs_names[truth.obs["is_cell"]]) == cells[0]
        assert truth.obs.loc[truth.obs["is_cell"], "cell_type"].tolist() == cells[1].tolist()
        assert truth.X[~truth.obs["is_cell"].to_numpy()].sum() > 0  # empty droplets have reads


def test_truth_models(simulated, cells):
    _, files = simulated
    hashtags = ad.read_h5ad(files["truth"][MULTIPLEXING_CAPTURE])
    obs = hashtags.obs[hashtags.obs["is_cell"]]
    for row in obs.itertuples():
        carried = row.hashtags.split("+") if row.hashtags else []
        assert len(carried) == {"singlet": 1, "doublet": 2, "negative": 0}[row.hashtag_class]
        assert row.hashtag == (carried[0] if row.hashtag_class == "singlet" else row.hashtag_class)
    counts = hashtags[obs.index].X.toarray()
    singlets = (obs["hashtag_class"] == "singlet").to_numpy()
    top = np.asarray(hashtags.var_names)[counts.argmax(axis=1)]
    assert (top[singlets] == obs.loc[singlets, "hashtag"].to_numpy()).mean() > 0.95
    # Antibodies follow the cell type: the isotype control (last) is lowest on average.
    antibodies = ad.read_h5ad(files["truth"][ANTIBODY_CAPTURE])
    means = antibodies[antibodies.obs["is_cell"]].X.toarray().mean(axis=0)
    assert means.argmin() == len(means) - 1
    guides = ad.read_h5ad(files["truth"][CRISPR_GUIDE_CAPTURE])
    assert guides.var["feature_type"].unique().tolist() == [CRISPR_GUIDE_CAPTURE]
    assert "(BC)" in CRISPR_PATTERN


def test_the_simulator_is_deterministic(tmp_path, cells, simulated):
    outdir, files = simulated
    again = write_feature_libraries(tmp_path, "s1", *cells)
    for feature_type, paths in files["fastq"].items():
        for first, second in zip(paths, again["fastq"][feature_type], strict=True):
            assert hashlib.sha256(first.read_bytes()).digest() == (
                hashlib.sha256(second.read_bytes()).digest()
            )
    assert files["reference"].read_bytes() == again["reference"].read_bytes()


def test_10xv2_libraries_carry_the_gex_barcode(tmp_path):
    rng = np.random.default_rng(1)
    barcodes = [str(b) for b in rng.choice(onlist_barcodes("10xv2", 5000), 5, replace=False)]
    files = write_feature_libraries(tmp_path, "v2", barcodes, np.zeros(5, int), technology="10xv2")
    truth = ad.read_h5ad(files["truth"][ANTIBODY_CAPTURE])
    reads = read_fastq(files["fastq"][ANTIBODY_CAPTURE][0])
    assert {len(r) for r in reads} == {26}  # 16 + a 10-base UMI
    assert {r[:16] for r in reads} == set(truth.obs_names[truth.X.sum(axis=1).A1 > 0])

"""Rule count_features: kb count of one feature-barcode library, kept for the cells called
on gene expression; a hashtag library is demultiplexed, a guide library gets per-cell guide
calls (warnings to the log and the terminal)."""

import warnings
from pathlib import Path

import anndata as ad

from kbagg.cells.demux import (
    WEAK_SEPARABILITY,
    WeakHashtagsWarning,
    assign_samples,
    demultiplex,
)
from kbagg.cells.guides import add_guide_calls
from kbagg.cells.matrices import check_reads_processed, write_h5ad
from kbagg.count.features import FeatureCountJob, count_features
from kbagg.count.lane_record import read_lane_record
from kbagg.feature_types import CRISPR_GUIDE_CAPTURE, MULTIPLEXING_CAPTURE
from kbagg.rule import run_rule, to_terminal, warning_line


def main(smk) -> None:
    sample, inputs, params = smk.wildcards.sample, smk.input, smk.params
    onlist = inputs.get("onlist")
    kb_dir = Path(smk.output.run_info).parent
    job = FeatureCountJob(
        sample=sample,
        feature_type=params.feature_type,
        fastqs=list(inputs.fastqs),
        index=inputs.index,
        t2g=inputs.t2g,
        technology=params.technology,
        kb_dir=kb_dir,
        output_h5ad=None,
        gex_filtered_h5ad=Path(inputs.cells),
        reference=inputs.reference,
        onlist=onlist if onlist and Path(onlist).stat().st_size else None,
        threads=smk.threads,
        memory_mb=smk.resources.mem_mb,
        extra_args=params.extra_args,
    )
    features = count_features(job)
    lanes = [read_lane_record(path) for path in inputs.checks]
    check_reads_processed(
        f"{sample}' ({params.feature_type}", kb_dir, {f"lane {r.lane}": r.reads for r in lanes}
    )
    if params.feature_type == MULTIPLEXING_CAPTURE:
        # The RNA library size of each cell is the covariate of the mixture (demuxmix's).
        rna = ad.read_h5ad(inputs.cells, backed="r")
        rna_umis = rna.obs.get("n_umis", None)
        if rna.file.is_open:
            rna.file.close()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", WeakHashtagsWarning)
            calls = demultiplex(features, rna_umis=rna_umis, sample=sample)
        for warning in caught:  # to the log and the terminal
            to_terminal(warning_line(warning.message))
        separability = calls.attrs["hashtag_separability"]
        features.uns["hashtag_separability"] = {
            column: separability[column].to_numpy() for column in separability.columns
        }
        features.uns["hashtag_model"] = calls.attrs["hashtag_model"]
        bic = calls.attrs["hashtag_model_bic"]
        print(
            f"sample '{sample}': hashtag model: {calls.attrs['hashtag_model']} (BIC, lower "
            "fits better: "
            + ", ".join(f"{model} {value:.0f}" for model, value in bic.items())
            + ")"
        )
        print(
            f"sample '{sample}': hashtag separability (1 = clean, < {WEAK_SEPARABILITY} weak) "
            "and share of calls expected wrong: "
            + ", ".join(
                f"{r.hashtag} {r.separability:.2f} {100 * r.expected_error:.1f}%"
                for r in separability.itertuples()
            )
        )
        mapping = params.hashtags or {h: h for h in features.var_names}
        calls["hashtag_sample"] = assign_samples(calls, mapping)
        for column in calls.columns:
            features.obs[column] = calls[column].to_numpy()
        counts = calls["hashtag_class"].value_counts().to_dict()
        print(f"sample '{sample}': hashtags: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    if params.feature_type == CRISPR_GUIDE_CAPTURE:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            add_guide_calls(features, sample, int(params.guide_min_umis))
        for warning in caught:
            to_terminal(warning_line(warning.message))
        n_guides = features.obs["n_guides"]
        print(
            f"sample '{sample}': guides: {int((n_guides == 0).sum())} cells none, "
            f"{int((n_guides == 1).sum())} one, {int((n_guides > 1).sum())} two or more"
        )
    write_h5ad(features, smk.output.h5ad)
    print(f"sample '{sample}': {features.n_obs:,} cells x {features.n_vars} features")


run_rule(snakemake, main)

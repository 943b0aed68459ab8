"""Rule count_features: kb count of one feature-barcode library, kept for the cells called
on gene expression; a hashtag library is demultiplexed."""

from pathlib import Path

from kbagg.cells.demux import assign_samples, demultiplex
from kbagg.cells.matrices import check_reads_processed, write_h5ad
from kbagg.count.features import FeatureCountJob, count_features
from kbagg.count.lane_record import read_lane_record
from kbagg.feature_types import MULTIPLEXING_CAPTURE
from kbagg.rule import run_rule


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
        calls = demultiplex(features)
        mapping = params.hashtags or {h: h for h in features.var_names}
        calls["hashtag_sample"] = assign_samples(calls, mapping)
        for column in calls.columns:
            features.obs[column] = calls[column].to_numpy()
        counts = calls["hashtag_class"].value_counts().to_dict()
        print(f"sample '{sample}': hashtags: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    write_h5ad(features, smk.output.h5ad)
    print(f"sample '{sample}': {features.n_obs:,} cells x {features.n_vars} features")


run_rule(snakemake, main)

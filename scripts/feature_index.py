"""Rule feature_index: `kb ref --workflow kite` for the features of one feature type."""

from kbagg.reference.features import build_feature_index
from kbagg.rule import run_rule


def main(smk) -> None:
    features = build_feature_index(
        smk.input.reference, smk.params.feature_type, dict(smk.output.items()), threads=smk.threads
    )
    print(f"{smk.params.feature_type}: {len(features)} features indexed")


run_rule(snakemake, main)

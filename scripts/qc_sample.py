"""Rule qc_sample: metrics.tsv (one row) and a knee plot; bad samples get warnings."""

from kbagg.qc.metrics import Thresholds, metrics_frame, warning_lines
from kbagg.qc.run import run_sample_qc
from kbagg.rule import run_rule, to_terminal


def main(smk) -> None:
    sample = smk.wildcards.sample
    row = run_sample_qc(
        sample,
        smk.input.run_info,
        smk.input.inspect,
        smk.input.raw,
        smk.input.get("filtered"),
        smk.output.metrics,
        smk.output.knee,
        Thresholds(**smk.params.thresholds),
    )
    print(metrics_frame([row]).drop(columns="warnings").T.to_string(header=False, na_rep="NA"))
    for line in warning_lines(sample, row["warnings"]):
        to_terminal(line)


run_rule(snakemake, main)

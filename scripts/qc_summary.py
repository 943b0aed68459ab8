"""Rule qc_summary: summary.tsv, a bar chart per metric (PNG) and an HTML table."""

from kbagg.qc.metrics import Thresholds, warning_lines
from kbagg.qc.run import run_summary
from kbagg.rule import run_rule, to_terminal


def main(smk) -> None:
    output = smk.output
    summary = run_summary(
        list(smk.input),
        output.table,
        output.figure,
        output.html,
        Thresholds(**smk.params.thresholds),
    )
    print(summary.to_string(index=False))
    for sample, warnings in zip(summary["sample"], summary["warnings"], strict=True):
        for line in warning_lines(sample, warnings):
            to_terminal(line)


run_rule(snakemake, main)

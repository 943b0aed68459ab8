"""Rule fastq_check: stream all FASTQs of one lane once; fail the sample on damaged input."""

from kbagg.count.fastq_check import check_lane_files, write_lane_record
from kbagg.rule import run_rule


def main(smk) -> None:
    sample, lane = smk.wildcards.sample, int(smk.wildcards.lane)
    record = check_lane_files(
        list(smk.input.fastqs),
        min_lengths=tuple(smk.params.min_lengths),
        labels=tuple(smk.params.labels),
        sample=sample,
        lane=lane,
        progress=lambda done, total: print(
            f"sample '{sample}', lane {lane}: {done / 2**20:,.1f} of {total / 2**20:,.1f} MB "
            f"checked ({100 * done / max(total, 1):.0f}%)"
        ),
    )
    write_lane_record(record, smk.output[0])
    n_files = len(record.files)
    print(
        f"sample '{sample}', lane {lane}: {record.reads:,} reads in each of {n_files} files, intact"
    )


run_rule(snakemake, main)

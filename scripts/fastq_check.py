"""Rule fastq_check: stream one lane's R1/R2 once; fail the sample on damaged input."""

from kbagg.count.fastq_check import check_lane, write_lane_record
from kbagg.rule import run_rule


def main(smk) -> None:
    sample, lane = smk.wildcards.sample, int(smk.wildcards.lane)
    record = check_lane(
        smk.input.r1,
        smk.input.r2,
        min_lengths=tuple(smk.params.min_lengths),
        sample=sample,
        lane=lane,
        progress=lambda done, total: print(
            f"sample '{sample}', lane {lane}: {done / 2**20:,.1f} of {total / 2**20:,.1f} MB "
            f"checked ({100 * done / max(total, 1):.0f}%)"
        ),
    )
    write_lane_record(record, smk.output[0])
    print(f"sample '{sample}', lane {lane}: {record.reads:,} read pairs, both files intact")


run_rule(snakemake, main)

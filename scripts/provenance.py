"""Rule provenance: the uns['kbagg'] record of an aggregate, computed once (every input's
SHA-256, versions, config, sheet) and attached by every writer of that aggregate."""

from kbagg.aggregate.provenance import collect_for_run, write_provenance
from kbagg.rule import run_rule


def main(smk) -> None:
    params = smk.params
    matrices = dict(zip(params.samples, smk.input.matrices, strict=True))
    kb_infos = dict(zip(params.samples, smk.input.kb_info, strict=True))
    record = collect_for_run(
        matrices, params.config, params.sample_sheet, kb_infos, list(smk.input.checks)
    )
    write_provenance(record, smk.output[0])
    print(f"provenance of {len(matrices)} samples in {smk.output[0]}")


run_rule(snakemake, main)

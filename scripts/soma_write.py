"""Rule soma_write: write one reserved sample's X layers into the TileDB-SOMA store (no lock;
one job per sample, run in parallel). A sample the store already holds is not rewritten: its
marker says so."""

import json
from pathlib import Path

from kbagg.atomic import atomic_output
from kbagg.rule import run_rule
from kbagg.soma.context import limit_tiledb_threads
from kbagg.soma.parallel import reserved_samples, write_sample


def main(smk) -> None:
    limit_tiledb_threads(smk.threads)
    sample, uri = smk.wildcards.sample, smk.params.uri
    if sample in reserved_samples(uri):
        write_sample(uri, sample, marker_path=smk.output[0], layout=smk.params.layout, log=print)
    else:
        with atomic_output(smk.output[0]) as tmp:
            Path(tmp).write_text(json.dumps({"sample": sample, "nnz": None}) + "\n")
        print(f"{uri}: sample {sample} is already committed; nothing to write")


run_rule(snakemake, main)

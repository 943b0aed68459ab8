"""Rule lineage: register the run's aggregates, SOMA store and per-sample matrices in a
lamindb instance (kbagg.lineage.register)."""

import json
import socket
from datetime import UTC, datetime

from kbagg.atomic import atomic_output
from kbagg.lineage.register import register_run
from kbagg.rule import run_rule


def main(smk) -> None:
    params = smk.params
    artifacts = {name: smk.input[name] for name in params.artifact_names}
    if params.soma_uri:
        artifacts[params.soma_name] = params.soma_uri
    registered = register_run(
        params.instance,
        params.key_prefix,
        artifacts,
        dict(zip(params.samples, smk.input.samples, strict=True)),
        smk.input.provenance,
        params.config,
        # made here, not a param: a param would change every run and rerun the job
        run_name=f"{socket.gethostname()} {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}",
    )
    with atomic_output(smk.output[0]) as tmp, open(tmp, "w") as f:
        json.dump(registered, f, indent=2)
        f.write("\n")
    print(
        f"{registered['instance']} ({params.instance}): run {registered['run']}, "
        f"{len(registered['artifacts'])} artifacts, collection {registered['collection']['key']}"
    )


run_rule(snakemake, main)

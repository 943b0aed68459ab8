"""Rule soma: finish the TileDB-SOMA store: check every sample rule soma_write wrote against
its marker, commit them, consolidate (under the store's lock)."""

import json
from pathlib import Path

from kbagg.atomic import atomic_output
from kbagg.rule import run_rule
from kbagg.soma.context import limit_tiledb_threads
from kbagg.soma.parallel import finish_store


def main(smk) -> None:
    limit_tiledb_threads(smk.threads)
    params = smk.params
    manifest = json.loads(Path(smk.input.reserved).read_text())
    markers = {}
    for path in smk.input.markers:
        marker = json.loads(Path(path).read_text())
        if marker["nnz"] is not None:
            markers[marker["sample"]] = marker["nnz"]
    finished = finish_store(
        params.uri,
        markers,
        max_fragments=params.max_fragments,
        layout=params.layout,
        log=print,
    )
    manifest.update(
        committed=finished["committed"],
        consolidated=finished["consolidated"],
        fragments=finished["fragments"],
    )
    with atomic_output(smk.output[0]) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n")
    print(
        f"{params.uri}: {manifest['action']}; {manifest['n_obs']:,} cells x "
        f"{manifest['n_vars']:,} genes; fragments per array at most "
        f"{max(manifest['fragments'].values(), default=0)}"
    )


run_rule(snakemake, main)

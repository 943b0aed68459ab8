"""`kb ref`: build (FASTA + GTF) or download (`-d`) the kallisto index and t2g once.

kb writes into a private folder beside the outputs; the files are renamed into place only
when all of them exist, so an interrupted build never leaves an index that looks complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from kbagg.kb.run import KbError, run_kb
from kbagg.reference.check import check_reference_inputs

# kb ref flag for each output, by workflow. `cdna`/`nascent` are the FASTAs kb writes on the way.
OUTPUT_FLAGS = {
    "standard": {"index": "-i", "t2g": "-g", "cdna": "-f1"},
    "nac": {"index": "-i", "t2g": "-g", "cdna": "-f1", "nascent": "-f2", "c1": "-c1", "c2": "-c2"},
}
OUTPUT_FLAGS["lamanno"] = OUTPUT_FLAGS["nac"]
# Feature barcodes (kbagg.reference.features): -f1 is the FASTA of barcodes + Hamming-1 variants.
OUTPUT_FLAGS["kite"] = {"index": "-i", "t2g": "-g", "mismatch_fasta": "-f1"}
DOWNLOAD_OUTPUTS = ("index", "t2g", "c1", "c2")
OFFLINE_HINTS = ("ConnectionError", "NameResolution", "Max retries exceeded", "urlopen error")


def reference_outputs(outdir: str | Path, workflow: str, *, download: bool = False) -> dict:
    names = {
        "index": "index.idx",
        "t2g": "t2g.txt",
        "cdna": "cdna.fa",
        "nascent": "nascent.fa",
        "c1": "c1.txt",
        "c2": "c2.txt",
    }
    keys = list(OUTPUT_FLAGS[workflow])
    if download:
        keys = [k for k in keys if k in DOWNLOAD_OUTPUTS]
    return {k: str(Path(outdir) / names[k]) for k in keys}


def run_ref_into_place(
    args_for: Callable[[Path], list[str]],
    outputs: dict[str, str],
    workflow: str,
    label: str,
    threads: int,
):
    """Run kb with outputs inside a private folder, then rename each into place."""
    first = Path(next(iter(outputs.values())))
    staging = first.parent / f".kb_ref.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        staged = {k: staging / Path(v).name for k, v in outputs.items()}
        flags = OUTPUT_FLAGS[workflow]
        args = ["ref", "-t", str(threads)]
        args += [x for k, p in staged.items() for x in (flags[k], str(p))]
        if workflow != "standard":
            args += ["--workflow", workflow]
        log = run_kb([*args, *args_for(staging)], label=label)
        missing = [k for k, p in staged.items() if not p.exists()]
        if missing:
            raise KbError(f"{label}: kb ref finished but did not write {', '.join(missing)}")
        for key, path in staged.items():
            os.replace(path, outputs[key])
        return log
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_reference(
    fasta: str, gtf: str, workflow: str, outputs: dict[str, str], threads: int = 1
) -> None:
    for kind, path in (("fasta", fasta), ("gtf", gtf)):
        if not Path(path).is_file():
            raise KbError(f"reference.{kind}: file not found: {path}")
    shared = check_reference_inputs(fasta, gtf)
    print(
        f"reference: {len(shared)} GTF chromosome(s) found in the FASTA, "
        f"{sum(shared.values()):,} exon/transcript lines on them",
        flush=True,
    )
    run_ref_into_place(
        lambda staging: ["--tmp", str(staging / "tmp"), fasta, gtf],
        outputs,
        workflow,
        label="reference",
        threads=threads,
    )


def download_reference(name: str, workflow: str, outputs: dict[str, str], threads: int = 1) -> None:
    try:
        run_ref_into_place(
            lambda staging: ["--tmp", str(staging / "tmp"), "-d", name],
            outputs,
            workflow,
            label=f"reference download {name}",
            threads=threads,
        )
    except KbError as error:
        if any(hint in str(error) for hint in OFFLINE_HINTS):
            raise KbError(
                f"reference.download: '{name}': kb ref -d needs internet access to fetch the "
                f"prebuilt index and could not connect ({error}). Offline? Set reference.fasta "
                "and reference.gtf to build it here, or reference.index and reference.t2g."
            ) from error
        raise

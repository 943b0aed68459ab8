"""MultiQC over the run: bustools' records of every sample and kbagg's own QC metrics.

MultiQC's bustools module reads kb's `inspect.json`; kbagg's per-sample metrics go in as
custom content (a `_mqc.tsv` table that also adds its columns to the General Statistics).
MultiQC runs as a subprocess with an argument list in a private folder; the report and its
data folder are renamed into place when it has finished.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from kbagg.atomic import atomic_output
from kbagg.errors import KbaggError
from kbagg.qc.metrics import METRICS, TITLES

# MultiQC names each bustools record after its folders (`--dirs`): .../<sample>/kb/inspect.json
SAMPLE_NAME_RULE = {r"^(?:.*\| )?([^|]+) \| kb(?: \| inspect)?$": r"\1"}


def custom_content(summary: pd.DataFrame) -> str:
    """kbagg's metrics as MultiQC custom content (general statistics + a table section)."""
    header = [
        "# id: 'kbagg_qc'",
        "# section_name: 'kbagg QC'",
        "# description: 'Per-sample metrics of kbagg (see docs/qc.md).'",
        "# plot_type: 'generalstats'",
        "# pconfig:",
    ]
    for column in METRICS:
        header += [f"#    - {column}:", f"#        title: '{TITLES[column]}'"]
    table = summary[["sample", *METRICS]].rename(columns={"sample": "Sample"})
    return "\n".join(header) + "\n" + table.to_csv(sep="\t", index=False, na_rep="")


def run_multiqc(
    inspect_files: Mapping[str, str | Path],
    summary_tsv: str | Path,
    report_html: str | Path,
    log=print,
) -> Path:
    """Write MultiQC's report (and its `multiqc_data` folder beside it).

    Parameters
    ----------
    inspect_files
        Sample -> kb's `inspect.json` (bustools inspect) of that sample.
    summary_tsv
        kbagg's QC summary table (results/qc/summary.tsv).
    report_html
        The report to write; `<folder>/multiqc_data` is written beside it.
    """
    report_html = Path(report_html)
    data_dir = report_html.parent / "multiqc_data"
    summary = pd.read_csv(summary_tsv, sep="\t", na_values=["NA"], keep_default_na=False)
    report_html.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".multiqc-", dir=report_html.parent) as work:
        work = Path(work)
        inputs = work / "inputs"
        for sample, path in inspect_files.items():
            folder = inputs / sample / "kb"
            folder.mkdir(parents=True)
            os.symlink(Path(path).resolve(), folder / "inspect.json")
        (inputs / "kbagg_mqc.tsv").write_text(custom_content(summary))
        config = work / "multiqc_config.yaml"
        config.write_text(
            "sample_names_replace_regex: true\nsample_names_replace:\n"
            + "".join(f"  '{k}': '{v}'\n" for k, v in SAMPLE_NAME_RULE.items())
            + "title: 'kbagg'\n"
        )
        out = work / "out"
        command = [
            sys.executable,
            "-m",
            "multiqc",
            "--force",
            "--no-ansi",
            "--dirs",
            "--config",
            str(config),
            "--outdir",
            str(out),
            "--filename",
            "multiqc_report.html",
            str(inputs),
        ]
        log("$ " + " ".join(command))
        proc = subprocess.run(command, capture_output=True, text=True)
        log(proc.stdout + proc.stderr)
        report = out / "multiqc_report.html"
        if proc.returncode != 0 or not report.exists():
            raise KbaggError(
                f"MultiQC failed (exit {proc.returncode}): "
                f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}"
            )
        written = [p for p in out.iterdir() if p.is_dir() and p.name.endswith("_data")]
        shutil.rmtree(data_dir, ignore_errors=True)
        if written:
            os.replace(written[0], data_dir)
        with atomic_output(report_html) as tmp:
            os.replace(report, tmp)
    return report_html

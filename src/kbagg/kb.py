"""Run kb-python (`kb ref`, `kb count`) and judge success by what it wrote, not its exit code.

kb catches every exception, logs "An exception occurred" and still exits 0 without writing
its outputs; with 0 reads pseudoaligned kallisto fails and kb does just that. Every call here
therefore streams kb's log (progress for the user), keeps it, and checks the expected outputs
afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from kbagg.atomic import atomic_output


class KbError(RuntimeError):
    """kb failed; the message names the sample or reference and the reason."""


def run_kb(args: Sequence[str], *, label: str) -> str:
    """Run `kb ARGS`, echo its log to stderr prefixed by `label`, return the log."""
    command = [kb_executable(), *map(str, args)]
    print(f"[{label}] $ kb {' '.join(map(str, args))}", file=sys.stderr, flush=True)
    lines = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            print(f"[{label}] {line}", end="", file=sys.stderr, flush=True)
    log = "".join(lines)
    if proc.returncode != 0:
        raise KbError(f"{label}: kb exited with code {proc.returncode}: {last_error(log)}")
    if "An exception occurred" in log:
        raise KbError(f"{label}: kb reported an error (exit code 0): {last_error(log)}")
    return log


def kb_executable() -> str:
    """The `kb` installed with this Python (a venv need not be activated), else the PATH's."""
    beside_python = Path(sys.executable).with_name("kb")
    found = str(beside_python) if beside_python.exists() else shutil.which("kb")
    if not found:
        raise KbError("kb (kb-python) is not installed: pip install kb-python==0.30.2")
    return found


def last_error(log: str, max_lines: int = 4) -> str:
    """The most telling lines of a kb log: the final exception, else the last ERROR lines."""
    lines = [ln.rstrip() for ln in log.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith(("subprocess.CalledProcessError", "Exception", "ValueError")) or (
            "Error:" in line and not line.startswith(" ")
        ):
            return line
    errors = [ln for ln in lines if "ERROR" in ln or "error" in ln]
    return " | ".join((errors or lines)[-max_lines:]) or "(empty log)"


def onlist_path_in_package(technology: str) -> Path | None:
    """kb's bundled barcode on-list for `technology`, or None when kb has none for it."""
    from kb_python.config import TECHNOLOGIES_MAPPING

    tech = TECHNOLOGIES_MAPPING.get(technology.upper())
    if tech is None:
        raise KbError(
            f"technology '{technology}' is not known to kb; `kb --list` shows the names "
            f"({', '.join(sorted(TECHNOLOGIES_MAPPING))})"
        )
    path = tech.chemistry.whitelist_path if tech.chemistry.has_whitelist else None
    return Path(path) if path else None


def write_onlist(technology: str, output: str | Path) -> bool:
    """Decompress kb's on-list for `technology` to `output` once, atomically.

    Returns False (and writes an empty file) when kb has no on-list for the technology,
    in which case `kb count` builds one from the data itself.
    """
    import gzip

    source = onlist_path_in_package(technology)
    with atomic_output(output) as tmp:
        if source is None:
            tmp.write_text("")
        else:
            opener = gzip.open if source.suffix == ".gz" else open
            with opener(source, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    return source is not None


def read_json_if_present(path: Path) -> dict:
    """A JSON file kb may not have written (e.g. after a failed run): {} when absent or bad."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}

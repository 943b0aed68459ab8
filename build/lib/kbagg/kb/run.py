"""Run kb-python (`kb ref`, `kb count`) and judge success by what it wrote, not its exit code.

kb catches every exception, logs "An exception occurred" and still exits 0 without writing
its outputs; with 0 reads pseudoaligned kallisto fails and kb does just that. Every call here
therefore streams kb's log (progress for the user), keeps it, and checks the expected outputs
afterwards.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kbagg.atomic import child_group_stopped_on_signal
from kbagg.errors import KbaggError


class KbError(KbaggError):
    """kb failed; the message names the sample or reference and the reason."""


def run_kb(
    args: Sequence[str], *, label: str, on_start: Callable[[int], None] | None = None
) -> str:
    """Run `kb ARGS` (an argument list: no shell), echo its log to stderr prefixed by
    `label`, return the log.

    kb runs in its own process group, which a signal to this process stops too (see
    `kbagg.atomic.child_group_stopped_on_signal`); `on_start(pgid)` is told that group.
    """
    command = [kb_executable(), *map(str, args)]
    print(f"[{label}] $ kb {shlex.join(map(str, args))}", file=sys.stderr, flush=True)
    lines = []
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    ) as proc:
        if on_start is not None:
            on_start(proc.pid)
        assert proc.stdout is not None
        with child_group_stopped_on_signal(proc.pid):
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


def read_json_if_present(path: Path) -> dict:
    """A JSON file kb may not have written (e.g. after a failed run): {} when absent or bad."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}

"""Write-then-rename: every output of kbagg only ever exists complete.

`atomic_output(path)` yields a temporary name beside `path` (same filesystem, so the final
rename is atomic), renames it into place on success and deletes it on any exception. Temp
files left by killed runs are removed the next time the same output is written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_name(output: Path, pid: int | None = None) -> Path:
    """``.OUT.h5ad.tmp-<pid>`` beside OUT (same filesystem, so the final rename is atomic)."""
    return output.with_name(f".{output.name}.tmp-{os.getpid() if pid is None else pid}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temps(output: Path) -> list[Path]:
    """Delete temp files (and their scratch files) left by killed runs for this OUT."""
    pattern = re.compile(rf"^\.{re.escape(output.name)}\.tmp-(\d+)(\..*)?$")
    removed = []
    if not output.parent.is_dir():
        return removed
    for entry in output.parent.iterdir():
        m = pattern.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextmanager
def atomic_output(output: str | Path) -> Iterator[Path]:
    """Yield a temp path; on success rename it to ``output``, on any exception delete it."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(output)
    tmp = temp_name(output)
    try:
        yield tmp
        os.replace(tmp, output)
    except BaseException:
        for leftover in output.parent.glob(f"{tmp.name}*"):
            leftover.unlink(missing_ok=True)
        raise

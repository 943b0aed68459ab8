"""Write-then-rename: every output of kbagg only ever exists complete.

`atomic_output(path)` yields a temporary name beside `path` (same filesystem, so the final
rename is atomic), renames it into place on success and deletes it on any exception. Temp
files left by killed runs are removed the next time the same output is written. The output
may also be a directory (a zarr store): an existing one is moved aside, replaced, then
deleted.

`remove_outputs_on_signal()` makes SIGTERM, SIGINT and SIGHUP safe at any moment: the handler
stops the child process groups registered with `child_group_stopped_on_signal`, deletes every
temp file still being written and the outputs this process already renamed into place, and
exits with status 128 + signal at once (`os._exit`), so no half-written file survives and no
cleanup code can swallow the signal. An exit status of 0 therefore means that every output
is complete.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_in_progress: set[Path] = set()  # temp files being written now
_committed: list[Path] = []  # outputs renamed into place by this process
_child_groups: set[int] = set()  # process groups of running children (kb, kallisto, ...)
_removing_on_signal = False


def temp_name(output: Path, pid: int | None = None) -> Path:
    """``.OUT.h5ad.tmp-<pid>`` beside OUT (same filesystem, so the final rename is atomic)."""
    return output.with_name(f".{output.name}.tmp-{os.getpid() if pid is None else pid}")


def process_alive(pid: int, group: bool = False) -> bool:
    """Whether process `pid` (or process group `pid`) still exists."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
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
        if m and int(m.group(1)) != os.getpid() and not process_alive(int(m.group(1))):
            remove_path(entry)
            removed.append(entry)
    return removed


def remove_path(path: Path) -> None:
    """Delete a file, or a directory with its contents (a zarr store); absent is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_temp(tmp: Path) -> None:
    """The temp file and its scratch files (``<tmp>.<suffix>``)."""
    remove_path(tmp)
    for leftover in tmp.parent.glob(f"{glob_escape(tmp.name)}.*"):
        remove_path(leftover)


def _replace(tmp: Path, output: Path) -> None:
    """``os.replace``; a directory output that exists is first moved aside (as a temp name
    of this process, so a crash leaves it to ``remove_stale_temps``) and deleted after."""
    if not (tmp.is_dir() and output.is_dir() and not output.is_symlink()):
        os.replace(tmp, output)
        return
    old = tmp.with_name(f"{tmp.name}.replaced")
    os.replace(output, old)
    os.replace(tmp, output)
    remove_path(old)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


@contextmanager
def atomic_output(output: str | Path) -> Iterator[Path]:
    """Yield a temp path; on success rename it to ``output``, on any exception delete it."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(output)
    tmp = temp_name(output)
    _in_progress.add(tmp)
    try:
        yield tmp
        with _signals_blocked():  # the rename and the bookkeeping happen together
            _replace(tmp, output)
            _in_progress.discard(tmp)
            _committed.append(output)
    except BaseException:
        _remove_temp(tmp)
        raise
    finally:
        _in_progress.discard(tmp)


@contextmanager
def _signals_blocked() -> Iterator[None]:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def child_group_stopped_on_signal(pgid: int) -> Iterator[None]:
    """While inside, a signal handled by `remove_outputs_on_signal` also sends SIGTERM to the
    process group `pgid` (a child started with ``start_new_session=True``), so no orphaned kb
    or kallisto keeps writing after its job is gone."""
    _child_groups.add(pgid)
    try:
        yield
    finally:
        _child_groups.discard(pgid)


def _on_signal(signum: int, frame) -> None:
    for pgid in list(_child_groups):
        with suppress(OSError):
            os.killpg(pgid, signal.SIGTERM)
    for tmp in list(_in_progress):
        _remove_temp(tmp)
    for output in _committed:
        remove_path(output)
    name = signal.Signals(signum).name
    os.write(2, f"error: interrupted by {name}; no output was kept\n".encode())
    os._exit(128 + signum)


def remove_outputs_on_signal() -> None:
    """On SIGTERM/SIGINT/SIGHUP delete this process's outputs and temp files and exit 128+sig.

    For command-line tools and rule scripts, whose outputs only count when they exit 0.
    """
    global _removing_on_signal
    if not _removing_on_signal:
        for sig in _SIGNALS:
            signal.signal(sig, _on_signal)
        _removing_on_signal = True

"""What the SOMA store's writers share: its names (obs and var columns from
`kbagg.obs_columns`), its error type, and its lock."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kbagg.errors import KbaggError
from kbagg.obs_columns import OBS_ID, RUN_COLUMN, VAR_ID  # noqa: F401 - the store's names

COUNTS_LAYER = "counts"  # the X layer holding the inputs' X

Log = Callable[[str], None]


class StoreError(KbaggError):
    """An update the store cannot take; the message names the store, sample or column."""


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def lock_path(uri: str | Path) -> Path:
    """The lock file that serializes updates of the store at ``uri``: ``.<name>.lock``."""
    path = Path(uri)
    return path.parent / f".{path.name}.lock"


@contextmanager
def store_lock(uri: str | Path, timeout_s: float | None, log: Log) -> Iterator[None]:
    """Hold the store's lock (``fcntl.flock``); wait for it, or raise `StoreError` after
    ``timeout_s`` seconds (None: wait as long as it takes; 0: do not wait)."""
    path = lock_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                if timeout_s is not None and time.monotonic() - start >= timeout_s:
                    raise StoreError(
                        f"{uri}: another kbagg run (pid {holder}) is updating this store "
                        f"(lock {path}); wait for it to finish and run again"
                    ) from None
                if not told:
                    log(f"soma: waiting for the lock on {uri} (held by pid {holder})")
                    told = True
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock

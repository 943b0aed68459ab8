"""One `kb count` at a time per sample, each attempt in a private folder.

When Snakemake is killed (`kill -9`, a lost SSH session) its running jobs are not: the rule
script and kb go on as orphans. A rerun must never share a folder with such an orphan. So

- every attempt runs kb in its own folder, `kb.attempt-<pid>`, and only a finished,
  verified attempt is renamed to `kb/`;
- an attempt holds an exclusive lock on `.kb_count.lock` in the sample folder while it runs
  (`.kb_<modality>.lock` for a feature-barcode library),
  and records there its host, its pid and kb's process group;
- a new attempt that finds the lock held by a live process on this host stops it (SIGTERM,
  then SIGKILL), and likewise stops a kb process group left behind by an attempt that was
  itself killed; then it removes the old attempt folders. A holder on another host (a
  shared filesystem) is not touched: the new attempt fails with a message naming it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from kbagg.atomic import process_alive
from kbagg.kb.run import KbError, run_kb

LOCK_NAME = ".kb_count.lock"
STOP_TIMEOUT_S = 30.0


def _group_alive(pgid: int) -> bool:
    return process_alive(pgid, group=True)


def _is_kb_group(pgid: int) -> bool:
    """The group leader is still a kb process (a reused pid is left alone)."""
    cmdline = Path(f"/proc/{pgid}/cmdline")
    if not cmdline.exists():
        return _group_alive(pgid)  # no /proc (not Linux): trust the recorded group
    try:
        words = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return any(
        Path(w.decode(errors="replace")).name in ("kb", "kallisto", "bustools") for w in words
    )


class SampleLock:
    """Exclusive lock of a sample folder for one kb count attempt (a context manager).

    `name` is the lock file: one per kb output folder (gene expression and each
    feature-barcode library of a sample count at the same time, each under its own lock)."""

    def __init__(self, folder: str | Path, sample: str, log=print, name: str = LOCK_NAME):
        self.folder = Path(folder)
        self.sample = sample
        self.path = self.folder / name
        self.log = log
        self._fd: int | None = None
        self._record: dict = {}

    def __enter__(self) -> SampleLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not self._try_lock():
            self._stop_holder(self._read_record())
            self._lock_within(STOP_TIMEOUT_S)
        self._stop_leftover_group(self._read_record())
        self._write_record({"host": socket.gethostname(), "pid": os.getpid(), "kb_pgid": None})
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # releases the lock
            self._fd = None

    def record_child_group(self, pgid: int) -> None:
        """Remember kb's process group, so a later attempt can stop it if we are killed."""
        self._write_record({**self._record, "kb_pgid": pgid})

    # --- internals ---------------------------------------------------------------------
    def _try_lock(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _lock_within(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._try_lock():
            if time.monotonic() > deadline:
                raise KbError(
                    f"sample '{self.sample}': {self.path} is still locked by another kb count "
                    f"after {seconds:.0f} s; stop that process and rerun"
                )
            time.sleep(0.2)

    def _read_record(self) -> dict:
        try:
            return json.loads(Path(self.path).read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def _write_record(self, record: dict) -> None:
        self._record = record
        data = json.dumps(record).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    def _stop_holder(self, holder: dict) -> None:
        host, pid = holder.get("host"), holder.get("pid")
        if host != socket.gethostname() or not isinstance(pid, int):
            raise KbError(
                f"sample '{self.sample}': another kb count holds {self.path} "
                f"(host {host or 'unknown'}, pid {pid or 'unknown'}); if that run was "
                "interrupted, stop it on its host, then rerun"
            )
        self.log(
            f"sample '{self.sample}': stopping kb count pid {pid} left running by an "
            "interrupted run (its kb process group too)"
        )
        self._stop_group(holder.get("kb_pgid"))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if process_alive(pid):
                os.kill(pid, sig)
            deadline = time.monotonic() + STOP_TIMEOUT_S / 2
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
                _reap(pid)

    def _stop_leftover_group(self, holder: dict) -> None:
        pgid = holder.get("kb_pgid")
        if isinstance(pgid, int) and _group_alive(pgid) and _is_kb_group(pgid):
            self.log(
                f"sample '{self.sample}': stopping kb process group {pgid} left running by "
                "an interrupted run"
            )
            self._stop_group(pgid)

    @staticmethod
    def _stop_group(pgid) -> None:
        if not isinstance(pgid, int) or not _group_alive(pgid) or not _is_kb_group(pgid):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + STOP_TIMEOUT_S / 2
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
                _reap(pgid)
            if not _group_alive(pgid):
                return


def _reap(pid: int) -> None:
    """Collect a stopped child of ours (tests start the orphan themselves), if it is one."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def attempt_folder(kb_dir: Path) -> Path:
    """This attempt's private folder beside `kb_dir`."""
    return kb_dir.with_name(f"{kb_dir.name}.attempt-{os.getpid()}")


def remove_old_attempts(kb_dir: Path) -> list[Path]:
    """Folders of earlier attempts (call while holding the sample's lock)."""
    removed = []
    for old in kb_dir.parent.glob(f"{kb_dir.name}.attempt-*"):
        if old != attempt_folder(kb_dir):
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


def count_in_attempt(
    kb_dir: Path,
    sample: str,
    kb_args: Callable[[Path], list[str]],
    check: Callable[[Path, KbError | None], None],
    *,
    label: str,
    lock_name: str = LOCK_NAME,
    remove: tuple[str, ...] = (),
    log: Callable[[str], object] = print,
) -> Path:
    """Run `kb kb_args(attempt)` in a private attempt folder under the lock of `kb_dir`, and
    make the attempt `kb_dir` once `check` passes.

    Parameters
    ----------
    kb_dir
        kb's output folder of the library (``results/samples/<sample>/kb``).
    sample
        Sample name, for messages.
    kb_args
        The kb arguments, given the attempt folder (kb's ``-o``; ``<attempt>/tmp`` is its
        ``--tmp``).
    check
        Called with the attempt folder and kb's error (None when kb succeeded); raises when
        kb's outputs are missing, preferably saying why. When kb failed and `check` does
        not raise, kb's own error is raised.
    label
        Prefix of kb's log lines.
    lock_name
        The lock file beside `kb_dir`: one per library, so libraries of a sample can count
        at the same time.
    remove
        Files of kb's output not kept (large copies kb makes).
    log
        Receives what the attempt does (stopping an orphan, removing old attempts).
    """
    with SampleLock(kb_dir.parent, sample, log=log, name=lock_name) as lock:
        for old in remove_old_attempts(kb_dir):
            log(f"[{label}] removed {old.name} of an earlier attempt")
        attempt = attempt_folder(kb_dir)
        attempt.mkdir(parents=True)
        try:
            run_kb(kb_args(attempt), label=label, on_start=lock.record_child_group)
        except KbError as error:
            check(attempt, error)
            raise
        check(attempt, None)
        for name in remove:
            (attempt / name).unlink(missing_ok=True)
        shutil.rmtree(attempt / "tmp", ignore_errors=True)
        shutil.rmtree(kb_dir, ignore_errors=True)
        os.replace(attempt, kb_dir)
    return kb_dir

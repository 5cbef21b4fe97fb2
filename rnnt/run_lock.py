"""One live ``rnnt fit`` per run folder: a lock file that a dead process does not hold.

Two runs writing into the same folder interleave their checkpoints (``last.ckpt`` of one beside
``last-v1.ckpt`` of the other) and their TensorBoard curves. ``rnnt fit`` therefore holds
``RUN/.lock`` (``RUN_LOCK_FILE``) while it trains: an ``fcntl.flock`` on the open file, which
the kernel releases when the process ends in any way (SIGKILL and out-of-memory kills
included), and in it the pid, host and start time of the holder, for the error message. A
second run into the folder is refused with one line naming the folder and the holder. A lock
file whose flock is free was left by a process that is gone: it is taken over with a warning.
Where the file system has no flock (some network file systems), the pid decides: a holder on
this host that no longer runs is gone; one on another host is taken to be alive.

Under DDP only global rank 0 takes the lock: the other ranks share the folder by design.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rnnt.constants import RUN_LOCK_FILE

try:
    import fcntl
except ImportError:  # Windows: the pid alone decides
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
TAKE_ATTEMPTS = 3  # the holder may release (remove the file) while we open it: try again


class RunLock:
    """The lock of one run folder, held by this process until ``release``.

    Use ``RunLock.acquire(folder)`` (raises ``ValueError`` when a live process holds it), or
    ``hold_run_folder(trainer)`` around ``trainer.fit``.
    """

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, folder: str | Path) -> RunLock:
        """Take the lock of ``folder`` (created if missing) for this process.

        Raises:
            ValueError: a live process holds it: the message names the folder, the pid and
                the host holding it, and what to do.
        """
        path = Path(folder) / RUN_LOCK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(TAKE_ATTEMPTS):
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                lock = cls._take(path, descriptor)
            except BaseException:
                os.close(descriptor)
                raise
            if lock is not None:
                return lock
            os.close(descriptor)  # the holder released it meanwhile: open the new file
        raise ValueError(f"{path}: could not take the run folder's lock; try again")

    @classmethod
    def _take(cls, path: Path, descriptor: int) -> RunLock | None:
        flocked = _flock(descriptor)
        if flocked is False:
            raise ValueError(_busy_message(path, _read_holder(path)))
        if not _is_same_file(descriptor, path):
            return None
        holder = _read_holder(path)
        if holder and holder.get("pid") != os.getpid():
            if flocked is None and _may_be_alive(holder):
                raise ValueError(_busy_message(path, holder))
            log.warning(
                "%s: taking over the lock left by %s, which no longer holds it "
                "(a run that was killed or crashed)",
                path,
                _describe(holder),
            )
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(holder) + "\n").encode(), 0)
        os.fsync(descriptor)
        return cls(path, descriptor)

    def release(self) -> None:
        """Remove the lock file and let go of the lock (safe to call more than once)."""
        if self._descriptor is None:
            return
        try:
            # Remove the file first: a process waiting on this one finds it gone and retries.
            if _is_same_file(self._descriptor, self.path):
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        finally:
            os.close(self._descriptor)  # releases the flock
            self._descriptor = None


@contextlib.contextmanager
def hold_run_folder(trainer: Any) -> Iterator[RunLock | None]:
    """Hold the lock of ``trainer``'s run folder (its logger's ``log_dir``, else
    ``default_root_dir``) on global rank 0 while the ``with`` body runs; other ranks hold none.

    Raises:
        ValueError: the folder is in use by a live process (one line naming it and the pid).
    """
    if not trainer.is_global_zero:
        yield None
        return
    logger = trainer.logger
    folder = getattr(logger, "log_dir", None) if logger is not None else None
    lock = RunLock.acquire(folder or trainer.default_root_dir)
    try:
        yield lock
    finally:
        lock.release()


# --- helpers ------------------------------------------------------------------------------------
def _flock(descriptor: int) -> bool | None:
    # True: locked; False: a live process holds it; None: this file system has no flock.
    if fcntl is None:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _is_same_file(descriptor: int, path: Path) -> bool:
    # The open file is still the one at `path` (not removed, nor replaced, by a releasing holder).
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(path))
    except FileNotFoundError:
        return False


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _may_be_alive(holder: dict[str, Any]) -> bool:
    # Without flock: a pid on this host is checked; one on another host cannot be.
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    started = f", since {holder['started']}" if holder.get("started") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{started}"


def _busy_message(path: Path, holder: dict[str, Any]) -> str:
    return (
        f"{path.parent} is in use by another run ({_describe(holder)}): wait for it to end, or "
        "give this run its own folder (--trainer.logger.init_args.name NAME); if that "
        f"process is gone, delete {path}"
    )

"""One writer per run directory: an advisory lock the operating system releases when its holder dies.

A launcher takes ``<workdir>/.lock`` before it reads a checkpoint to resume or checks that a new work dir
is empty, and holds it until the process ends. The lock is ``fcntl.flock`` on that file: it belongs to
the open file, so a crashed, killed or preempted holder never leaves a stale lock that would block
``--resume``; the file itself stays (its content, who last held it, is only what the error names).

A second writer gets `RunLocked` naming the holder (host, pid, since when). On a multi-host run only
process 0 writes the run, so only it takes the lock. ``flock`` is honoured by local file systems and by
most network ones (NFSv4 maps it to a byte-range lock); on a file system that ignores it, two writers are
not detected.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Optional

try:
    import fcntl
except ImportError:  # not POSIX: no lock, and no guard
    fcntl = None

LOCK_NAME = ".lock"


class RunLocked(Exception):
    """Another live process holds the run directory's lock."""


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            who = json.load(f)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(who["since"]))
        return f"host {who['host']}, pid {who['pid']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet said who it is"


class RunLock:
    """Held from `acquire` until `release`, the object is dropped, or the process ends."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_NAME)
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        if fcntl is None or self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(f"{os.path.dirname(self.path)} is being written by another process "
                            f"({_holder(self.path)}); wait for it to end or stop it, then resume "
                            "(a holder that died has already released it)") from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "since": time.time()}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor of the open file drops the flock
            self._fd = None

    def __del__(self):  # a plan dropped unexecuted (tests, errors) must not keep its run locked
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

"""One writer per run directory: an advisory lock the operating system releases when its holder dies.

A launcher locks the work dir itself (``fcntl.flock`` on the directory) before it reads a checkpoint to
resume or checks that a new work dir is empty, and holds the lock until the run ends. The lock belongs
to the open directory, so a crashed, killed or preempted holder never leaves a stale lock that would
block ``--resume``; and taking it creates nothing, so a launch refused for bad input leaves the work dir
exactly as it was. Once a run is going to write, its holder says who it is in ``<workdir>/.writer``
(host, pid, since when); a second writer gets `RunLocked` naming that holder.

On a multi-host run only process 0 writes the run, so only it takes the lock. ``flock`` is honoured by
local file systems and by most network ones; on a file system that ignores it, two writers are not
detected.
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

WRITER = ".writer"


class RunLocked(Exception):
    """Another live process holds the run directory's lock."""


def holder(workdir: str) -> str:
    """Who last announced itself as the work dir's writer, in words."""
    try:
        with open(os.path.join(workdir, WRITER)) as f:
            who = json.load(f)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(who["since"]))
        return f"host {who['host']}, pid {who['pid']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet said who it is"


class RunLock:
    """Held from `acquire` until `release`, the object is dropped, or the process ends."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        if fcntl is None or self._fd is not None:
            return self
        fd = os.open(self.workdir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(f"{self.workdir} is being written by another process ({holder(self.workdir)}); "
                            "wait for it to end or stop it, then resume (a holder that died has already "
                            "released it)") from None
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def announce(self) -> None:
        """Write ``.writer`` (host, pid, now): what a refused second writer is told. Only a run that is
        about to write calls it, so a refused or invalid launch changes nothing in the work dir."""
        path = os.path.join(self.workdir, WRITER)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, f)
        os.replace(tmp, path)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor of the open directory drops the flock
            self._fd = None

    def __del__(self):  # a plan dropped unexecuted (tests, errors) must not keep its run locked
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

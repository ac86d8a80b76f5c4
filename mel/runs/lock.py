"""A run owns its files while it lives: an exclusive lock on `<name>.lock` beside them, held by the process.

The lock is an flock on the lock file, so the kernel drops it the moment its process ends, however it ends: a lock
left behind by a dead process is simply taken over by the next run. The file records who holds it (host, process
id, start time, command line) for the message a second process gets. POSIX file systems only (flock); on a network
file system that ignores flock two hosts are not kept apart.
"""
import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time

from mel.errors import DataError

logger = logging.getLogger(__name__)


class RunLock:
    """Hold `target`.lock for as long as this object is held (a context manager; `release` ends it earlier)."""

    def __init__(self, target, what, remedy):
        self.path, self.what, self.remedy, self.fd = f"{target}.lock", what, remedy, None

    def acquire(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise DataError(f"{self.path}: {self.what} belongs to a live process ({_describe(holder)}); wait "
                                f"for it to end, or {self.remedy}") from None
            try:  # the previous holder may have removed the file between our open and our flock: start again
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)
        previous = _read_holder(fd)
        if previous.get("pid") is not None:
            logger.info(f"{self.path}: taking over the lock of {_describe(previous)}, which is no longer running")
        record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
        self.fd = fd
        return self

    def release(self):
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)  # still holding the lock: no other process can be between its open and flock here
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self if self.fd is not None else self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_holder(fd):
    try:
        return json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (ValueError, OSError):
        return {}


def _describe(holder):
    if not holder:
        return "no details recorded"
    return (f"process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
            f"{holder.get('command', '')[:120]}")

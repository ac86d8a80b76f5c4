"""Atomic file writes: every file the project writes goes through `atomic_path`.

A temp file is written beside the target, flushed to disk and moved over the target with os.replace, so a crash
or a full disk never leaves a half-written checkpoint, predictions file, tree or feature file in place of a good
one, and a failed write leaves no temp file behind. A writer killed outright (kill -9, a segfault) cannot clean up:
its temp file names its host and process id, and the next write of the same target removes it once that process is
gone. Written files get the mode the user's umask gives, as open() would (tempfile.mkstemp alone makes them 0600,
unreadable to the rest of a group on a shared cluster). Every JSON file is strict JSON (no NaN or Infinity).
"""
import contextlib
import errno
import glob
import io
import json
import os
import re
import shutil
import socket
import tempfile

from mel.errors import DataError

_HOW_TO_FIX = {errno.ENOSPC: "the disk is full: free some space", errno.EDQUOT: "the disk quota is used up",
               errno.EROFS: "the file system is read-only", errno.EACCES: "no permission to write there",
               errno.EPERM: "no permission to write there"}
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def default_file_mode():
    """rw for whom the umask allows, as open() gives."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def process_alive(pid):
    """Whether process `pid` of this host is running (a process of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path):
    """Remove the temp files of writes of `path` whose writer, on this host, has died. Returns how many."""
    folder, name = os.path.split(os.path.abspath(path))
    removed = 0
    for tmp in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.{_HOST}.*.tmp")):
        found = re.fullmatch(rf"\.{re.escape(name)}\.{re.escape(_HOST)}\.(\d+)\..*\.tmp", os.path.basename(tmp))
        if found and not process_alive(int(found.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
                removed += 1
    return removed


def cannot_write(path, error):
    """The one-line DataError for an OSError met while writing `path` (full disk, read-only, no permission)."""
    reason = _HOW_TO_FIX.get(error.errno, error.strerror or str(error))
    return DataError(f"{path}: cannot write it ({reason}); any earlier version of the file is unchanged")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp file path beside `path` (an empty file) to write; on success it replaces `path`.

    For writers that want a path (h5py, torch.save to a name); `atomic_write` gives an open file instead.
    """
    tmp = None
    try:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.{_HOST}.{os.getpid()}.",
                                   suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, default_file_mode())
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if error.errno not in _HOW_TO_FIX:
            raise
        raise cannot_write(path, error) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def ensure_free_space(path, nbytes, what="it"):
    """Refuse, before writing, a file of about `nbytes` that the disk holding `path` has no room for.

    HDF5 writes that hit a full disk can crash the process (h5py's C library) instead of raising: check first.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    free = shutil.disk_usage(folder).free
    needed = int(nbytes * 1.1) + (1 << 20)  # HDF5's own structures, and a margin
    if free < needed:
        raise DataError(f"{path}: cannot write {what} ({needed / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free on its "
                        f"disk): free some space or write elsewhere; any earlier version of the file is unchanged")


def check_writable(path, flag, is_folder=False):
    """Fail now, not after hours of training, when `path` (a file to write, or a folder) cannot be written."""
    folder = path if is_folder else os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = _HOW_TO_FIX.get(error.errno, error.strerror)
        raise DataError(f"{flag} {path}: cannot write there ({reason}); choose another {flag}") from None


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """Open a temp file beside `path` ("w" text as UTF-8 with \\n line ends, or "wb"); it replaces `path` on success."""
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
    with atomic_path(path) as tmp, open(tmp, mode, **text) as f:
        yield f


def write_lines(path, lines):
    with atomic_write(path) as f:
        for line in lines:
            f.write(line + "\n")


def _strict(path, dump):
    try:
        return dump()
    except ValueError as error:  # NaN or Infinity, which JSON cannot hold: refused before anything is written
        raise DataError(f"{path}: not written, a value is not a finite number ({error})") from None


def write_json(path, obj):
    text = _strict(path, lambda: json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False))
    with atomic_write(path) as f:
        f.write(text + "\n")


def write_jsonl(path, rows):
    lines = [_strict(path, lambda row=row: json.dumps(row, ensure_ascii=False, allow_nan=False)) for row in rows]
    write_lines(path, lines)


def torch_save(obj, path):
    """torch.save, serialised in memory first: a full disk then fails as a Python write (one line), not inside
    torch's C++ writer."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getbuffer())


def file_size(path):
    size = os.path.getsize(path)
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"

"""Atomic file writes: every file the project writes goes through `atomic_path`.

A temp file is written beside the target, flushed to disk and moved over the target with os.replace, so a crash
or a full disk never leaves a half-written checkpoint, predictions file, tree or feature file in place of a good
one, and a failed write leaves no temp file behind. Written files get the mode the user's umask gives, as open()
would (tempfile.mkstemp alone makes them 0600, unreadable to the rest of a group on a shared cluster).
"""
import contextlib
import errno
import json
import os
import tempfile

from mel.errors import DataError

_HOW_TO_FIX = {errno.ENOSPC: "the disk is full: free some space", errno.EDQUOT: "the disk quota is used up",
               errno.EROFS: "the file system is read-only", errno.EACCES: "no permission to write there",
               errno.EPERM: "no permission to write there"}


def default_file_mode():
    """rw for whom the umask allows, as open() gives."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp file path beside `path` (an empty file) to write; on success it replaces `path`.

    For writers that want a path (h5py, torch.save to a name); `atomic_write` gives an open file instead.
    """
    tmp = None
    try:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, default_file_mode())
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if error.errno not in _HOW_TO_FIX:
            raise
        raise DataError(f"{path}: cannot write it ({_HOW_TO_FIX[error.errno]}); any earlier version of the file is "
                        f"unchanged") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


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


def write_json(path, obj):
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_jsonl(path, rows):
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")  # NaN is not JSON


def torch_save(obj, path):
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def file_size(path):
    size = os.path.getsize(path)
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"

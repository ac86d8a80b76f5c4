"""Reading files users download (GEMEL's pickles and checkpoints) without running code from them.

A pickle names functions and classes that are called while it is read, so an ordinary `pickle.load` of a
downloaded file runs whatever the file asks for. `load_pickle` admits only the handful of globals GEMEL's pickles
need (numpy arrays, torch tensors pickled with plain pickle; nested dicts of ints need none) and refuses any other
with a DataError naming it; `torch_load` reads checkpoints with torch's weights-only unpickler. Bad or damaged files
fail with one line naming the file and what to do, never with a traceback.

Torch is imported only when a tensor or checkpoint is read, so torch-free modules (mel/tree/trie.py) can use this one.
"""
import collections
import io
import os
import pickle
import re
import struct

import numpy as np

from mel.errors import DataError


class _Refused(Exception):
    """A global outside the allowlist (or a tensor whose bytes need one)."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name


# ----------------------------------------------------------------------------- pickles (numpy arrays, tensors, dicts)

def _numpy_core(submodule):
    """numpy's `_core.<submodule>` (numpy 2) or `core.<submodule>` (numpy 1): arrays pickled by either name load."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{submodule}")


def _latin1_encode(text, encoding="latin1"):
    """`_codecs.encode` as pickle protocols 0-2 use it for bytes (an array's data); only latin-1 is admitted."""
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise _Refused(f"_codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


def _storage_from_bytes(data):
    """Stands in for torch.storage._load_from_bytes, which would torch.load(weights_only=False) the bytes."""
    import torch

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        name = _weights_only_refusal(error)
        if name:
            raise _Refused(name) from None
        raise


def _torch_utils(name):
    import torch._utils

    return getattr(torch._utils, name)


# (module, name) in the pickle -> what it is resolved to (lazily: torch is imported only for tensors)
_ALLOWED_GLOBALS = {
    # numpy arrays: ndarray.__reduce__ (protocols 0-4) and the out-of-band form of protocol 5, under numpy 1's and
    # numpy 2's module names
    **{(f"numpy.{core}.multiarray", name): (lambda name=name: getattr(_numpy_core("multiarray"), name))
       for core in ("core", "_core") for name in ("_reconstruct", "scalar")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): (lambda: _numpy_core("numeric")._frombuffer)
       for core in ("core", "_core")},
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,  # the bytes of an array pickled with protocol 0-2
    # torch tensors pickled with plain pickle: a storage (torch.save'd bytes, read weights-only) + shape + strides
    ("torch._utils", "_rebuild_tensor_v2"): lambda: _torch_utils("_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"): lambda: _torch_utils("_rebuild_tensor"),
    ("torch.storage", "_load_from_bytes"): lambda: _storage_from_bytes,
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,  # a tensor's backward hooks
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, extra_globals):
        super().__init__(file)
        self._extra = extra_globals or {}

    def find_class(self, module, name):
        if (module, name) in self._extra:
            return self._extra[(module, name)]
        resolve = _ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            raise _Refused(f"{module}.{name}")
        return resolve()


# what damaged or foreign bytes make the unpickler raise
_UNREADABLE = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
               OverflowError, MemoryError, struct.error, RuntimeError)


def load_pickle(path, what, rebuild, extra_globals=None):
    """Unpickle `path` admitting only numpy arrays, torch tensors and plain containers (see _ALLOWED_GLOBALS).

    what: the kind of file, for messages ("mention-embedding file"); rebuild: the command that rebuilds it;
    extra_globals: {(module, name): object} further globals this kind of file may name (harmless stand-ins).
    """
    path = os.fspath(path)
    remedy = f"Rebuild it with `{rebuild}`."
    try:
        with open(path, "rb") as handle:
            return _RestrictedUnpickler(handle, extra_globals).load()
    except _Refused as refused:
        raise DataError(f"{path}: this {what} refers to {refused.name}, which a {what} never holds; it may carry "
                        f"code, so it is not loaded. {remedy}") from None
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found. {remedy}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read {what} ({error.strerror or error}). {remedy}") from None
    except _UNREADABLE as error:
        raise DataError(f"{path}: cannot read {what} ({_reason(error)}): the file is "
                        f"truncated or not a pickle; download it again or rebuild it with `{rebuild}`.") from None


# ----------------------------------------------------------------------------- torch checkpoints

def _weights_only_refusal(error):
    """The global torch's weights-only unpickler refused ("GLOBAL module.name" in its message), or None."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return found.group(1) if found else None


def _reason(error):
    """`Type: first sentence` of an error, without torch's advice to load with weights_only=False."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    text = " ".join(text.split()).split("Check the documentation")[0]  # one line, without torch's trailer
    sentence = text.split(". ")[0].strip().rstrip(".")
    if not sentence or "weights_only" in sentence:
        return type(error).__name__
    return f"{type(error).__name__}: {sentence[:200]}"


def torch_load(path, what, remedy=None):
    """torch.load(path, map_location="cpu", weights_only=True), its failures turned into one-line DataErrors.

    what: the kind of file, for messages ("checkpoint", "training state"); remedy: what the user should do
    (default: get or write the file again).
    """
    import torch

    path = os.fspath(path)
    remedy = remedy or f"Download or write the {what} again."
    if not os.path.exists(path):
        raise DataError(f"{path}: {what} not found. {remedy}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        name = _weights_only_refusal(error)
        if name:
            raise DataError(f"{path}: this {what} refers to {name}, which a {what} of tensors never holds; it may "
                            f"carry code (or the file is damaged), so it is not loaded. {remedy}") from None
        reason = _reason(error)
    except OSError as error:
        raise DataError(f"{path}: cannot read {what} ({error.strerror or error}). {remedy}") from None
    except _UNREADABLE as error:
        reason = _reason(error)
    raise DataError(f"{path}: cannot read {what} ({reason}): the file is truncated or not a torch.save file. "
                    f"{remedy}")

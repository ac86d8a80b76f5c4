"""Reading a dataset folder's files in GEMEL's released formats: JSON-lines splits, HDF5 image features, pickled
mention embeddings. Every bad line, key or row is a DataError naming it.
"""
import json
import math
import os

import numpy as np

from mel.errors import DataError
from mel.io.provenance import sha256_of
from mel.io.safeload import load_pickle

REQUIRED_FIELDS = ("text", "mention", "target", "golden")
STRING_FIELDS = ("text", "mention", "target")
IMAGE_KEY_FIELDS = ("img_url", "img_name")  # WikiDiverse, WikiMEL
NIL = "NIL"


# ----------------------------------------------------------------------------- reading the released files

def read_split(path, keep_nil=False):
    """Examples of one JSON-lines split with NIL mentions dropped (GEMEL drops them before anything else), or kept
    with target "NIL" (keep_nil: evaluation with a NIL decision)."""
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found. A dataset folder needs train.json, dev.json and test.json "
                        f"(JSON lines with fields {', '.join(REQUIRED_FIELDS)} and img_url or img_name).")
    examples = []
    for line_no, ex in read_jsonl_objects(path):
        missing = [k for k in REQUIRED_FIELDS if k not in ex]
        if missing:
            raise DataError(f"{path}, line {line_no}: missing field(s) {', '.join(missing)}.")
        if ex["golden"] == NIL:
            if not keep_nil:
                continue
            ex["target"] = NIL
        if not any(k in ex for k in IMAGE_KEY_FIELDS):
            raise DataError(f"{path}, line {line_no}: no image key; add 'img_url' or 'img_name'.")
        for field in STRING_FIELDS + ("img_name" if "img_name" in ex else "img_url",):  # as image_key reads
            if not isinstance(ex[field], str):
                raise DataError(f"{path}, line {line_no}: field {field!r} is {json.dumps(ex[field])}, not a "
                                f"string; write it as a JSON string (in double quotes).")
        ex["line"] = line_no
        examples.append(ex)
    return examples


def is_finite_number(value):
    """Whether a JSON value is a finite number (true and false are not numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_jsonl_objects(path):
    """(line number, object) for each non-blank line of a JSON-lines file; a bad line is a DataError naming it."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {line_no}: not valid JSON ({e.msg}). Each line must be one "
                                f"JSON object.") from None
            except RecursionError:
                raise DataError(f"{path}, line {line_no}: JSON nested too deeply to read; each line must be one "
                                f"flat JSON object.") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {line_no}: expected a JSON object, got {type(row).__name__}.")
            yield line_no, row


def image_key(example):
    return example["img_name"] if "img_name" in example else example["img_url"]


_RECOMPUTE_FEATURE = ("Delete such features from the file and recompute them with `python prepare.py clip` (it only "
                      "computes missing keys).")


def _nonfinite_rows(matrix):
    """Indices of the rows of a 2-D float array holding NaN or inf (row sums first: no full-size temporary)."""
    with np.errstate(over="ignore", invalid="ignore"):
        suspects = np.flatnonzero(~np.isfinite(matrix.sum(axis=1)))  # a NaN/inf row sums to NaN/inf; overflow too
    return [int(i) for i in suspects if not np.isfinite(matrix[i]).all()]


def feature_dimension(path):
    """The width of the first feature vector stored in an image-feature HDF5 file."""
    import h5py

    if not os.path.exists(path):
        raise DataError(f"{path}: image feature file not found. Build it with "
                        f"`python prepare.py clip --dataset <folder> --images <image folder>`.")
    def width(name, item):  # visititems stops at the first non-None answer
        return item.shape[-1] if isinstance(item, h5py.Dataset) and item.shape else None

    with h5py.File(path, "r") as h5:
        found = h5.visititems(width)
    if found is None:
        raise DataError(f"{path}: holds no feature vectors")
    return found


def load_image_features(path, keys, dim):
    """Float32 matrix [len(keys), dim] of the features stored under each key (rows follow `keys`).

    A stored feature must be a vector of `dim` finite numbers: shape (dim,) or (1, dim).
    """
    import h5py

    if not os.path.exists(path):
        raise DataError(f"{path}: image feature file not found. Build it with "
                        f"`python prepare.py clip --dataset <folder> --images <image folder>`.")
    feats = np.empty((len(keys), dim), dtype=np.float32)
    with h5py.File(path, "r") as h5:
        for row, key in enumerate(keys):
            if key not in h5:
                raise DataError(f"{path}: no feature for image key {key!r}. Add it with "
                                f"`python prepare.py clip` (it only computes missing keys).")
            stored = h5[key]
            shape = getattr(stored, "shape", None)  # None: a group, not a dataset
            if shape is None or len(shape) not in (1, 2) or (len(shape) == 2 and shape[0] != 1):
                found = "is an HDF5 group" if shape is None else f"has shape {shape}"
                raise DataError(f"{path}: feature of {key!r} {found}; a feature must be a vector of "
                                f"--dim_clip {dim} numbers, shape ({dim},) or (1, {dim}). {_RECOMPUTE_FEATURE}")
            if shape[-1] != dim:
                raise DataError(f"{path}: feature of {key!r} has dimension {shape[-1]}, expected --dim_clip {dim}. "
                                f"Pass --dim_clip {shape[-1]} if the file was built with another image encoder.")
            try:
                feats[row] = np.asarray(stored[()], dtype=np.float32).reshape(dim)
            except (TypeError, ValueError) as error:
                raise DataError(f"{path}: feature of {key!r} is not numbers ({error}). {_RECOMPUTE_FEATURE}") from None
    bad = _nonfinite_rows(feats)
    if bad:
        listed = ", ".join(repr(keys[i]) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise DataError(f"{path}: feature of image key {keys[bad[0]]!r} holds NaN or inf ({len(bad)} such key(s) "
                        f"among those read: {listed}). {_RECOMPUTE_FEATURE}")
    return feats


def sources_path(path):
    """The record beside a derived file whose own format holds none (a pickled array): what it was built from."""
    return path + ".sources.json"


def check_sources(path, rebuild):
    """Refuse a derived file whose record (sources_path) names a file of its folder that changed since."""
    record_file = sources_path(path)
    if not os.path.exists(record_file):
        return  # GEMEL's released files come without one
    try:
        with open(record_file, encoding="utf-8") as f:
            recorded = json.load(f)["sources"]
        items = list(recorded.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise DataError(f"{record_file}: not a record of sources ({{\"sources\": {{file: sha256}}}}); rebuild "
                        f"{os.path.basename(path)} with `{rebuild}`") from None
    for name, digest in items:
        source = os.path.join(os.path.dirname(os.path.abspath(path)), name)
        if os.path.exists(source) and sha256_of(source) != digest:
            raise DataError(f"{path}: built from another version of {source} (it changed since); rebuild it with "
                            f"`{rebuild}`")


def load_mention_embeddings(path, num_train, train_file):
    """GEMEL's pickled [num_train, dim] matrix, one row per NIL-filtered training example in file order."""
    dataset = os.path.basename(os.path.dirname(os.path.abspath(path)))
    rebuild = (f"python prepare.py embeddings --dataset {dataset} --ment_embed_file {os.path.basename(path)} "
               f"--simcse_model <encoder>")
    if not os.path.exists(path):
        raise DataError(f"{path}: training-mention embeddings not found. Build them with `{rebuild}`.")
    check_sources(path, rebuild)
    emb = load_pickle(path, "mention-embedding file", rebuild)
    if type(emb).__module__.startswith("torch"):  # a pickled tensor: safeload imported torch to read it
        emb = emb.detach().cpu().float().numpy()
    try:
        emb = np.asarray(emb, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{path}: holds a {type(emb).__name__}, not a float matrix [non-NIL training examples, "
                        f"dim]. Rebuild it with `{rebuild}`.") from None
    if emb.ndim != 2 or emb.shape[0] != num_train:
        raise DataError(f"{path}: has shape {emb.shape}, but {train_file} holds {num_train} non-NIL examples; "
                        f"it must have one row per non-NIL training example, in file order. Rebuild it with "
                        f"`{rebuild}`.")
    bad = _nonfinite_rows(emb)
    if bad:
        row = bad[0]
        line = read_split(train_file)[row]["line"] if os.path.exists(train_file) else "?"
        raise DataError(f"{path}: row {row} (the mention of {train_file}, line {line}) holds NaN or inf "
                        f"({len(bad)} such row(s)). Rebuild it with `{rebuild}`.")
    return emb

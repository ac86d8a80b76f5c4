"""Write the demo's image features: clip_vit_large_patch14_1024.hdf5 in GEMEL's layout.

GEMEL reads one 1024-d vector per image key (the pooled output of CLIP ViT-L/14's vision tower),
as `h5[key][()]`, where the key is an example's `img_url` (or `img_name`). The demo has no images
and no image model can be loaded offline, so these vectors are SYNTHETIC and carry NO visual
information: each is drawn from a standard normal seeded by the SHA-256 of its key, then scaled to
a fixed norm. They only let the visual-prefix code path run end to end on the demo.

Norm: a LayerNorm output of width 1024 has norm sqrt(1024) = 32 before its learned scale, and
CLIP's pooled output is such a LayerNorm output (`post_layernorm`). We use 32 as the "typical"
norm; it is an estimate, not a measurement on real CLIP features (none can be computed here).

Layout: one float32 dataset of shape (1024,) per key, named by the key itself. Keys such as
"demo/train_0000.jpg" contain "/", so h5py stores them under a group "demo"; `h5[key]` still
resolves the full path, which is how GEMEL's reader looks them up.

The output is byte-reproducible: the same splits give the same file (no timestamps are stored).

Usage:  python data/demo/make_image_features.py [--data_dir data/demo] [--output FILE]
"""
import argparse
import hashlib
import json
import os

import h5py
import numpy as np

FEATURE_DIM = 1024  # CLIP ViT-L/14 vision width (GEMEL's dim_clip)
TARGET_NORM = 32.0  # sqrt(FEATURE_DIM): norm of a unit-variance LayerNorm output (an estimate)
SPLITS = ("train", "dev", "test")
IMAGE_KEY_FIELDS = ("img_url", "img_name")  # WikiDiverse, WikiMEL
OUTPUT_NAME = "clip_vit_large_patch14_1024.hdf5"


def parse_args(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", default=here,
                   help="folder with train.json, dev.json, test.json (default: this script's folder)")
    p.add_argument("--output", default=None,
                   help=f"HDF5 file to write (default: <data_dir>/{OUTPUT_NAME})")
    args = p.parse_args(argv)
    if args.output is None:
        args.output = os.path.join(args.data_dir, OUTPUT_NAME)
    return args


def image_keys(data_dir):
    """Every image key of the three splits, NIL lines included, in file order, without repeats."""
    keys, seen = [], set()
    for split in SPLITS:
        path = os.path.join(data_dir, f"{split}.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found; --data_dir must hold {', '.join(s + '.json' for s in SPLITS)}.")
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                example = json.loads(line)
                key = next((example[k] for k in IMAGE_KEY_FIELDS if k in example), None)
                if key is None:
                    raise ValueError(f"{path}, line {line_no}: no image key; add 'img_url' or 'img_name'.")
                if key not in seen:
                    seen.add(key)
                    keys.append(key)
    return keys


def synthetic_feature(key):
    """A float32 vector of norm TARGET_NORM, a pure function of the key (seeded by its SHA-256)."""
    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest(), "big")
    vec = np.random.default_rng(seed).standard_normal(FEATURE_DIM)  # (1024,) float64
    return (vec * (TARGET_NORM / np.linalg.norm(vec))).astype(np.float32)


def write_features(keys, output):
    """Write one dataset per key, atomically (temp file, then os.replace)."""
    tmp = output + ".tmp"
    # Groups created on the way to "demo/..." keys would otherwise carry creation times.
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    with h5py.File(tmp, "w", libver="earliest") as h5:
        for key in keys:
            parts = key.split("/")[:-1]
            for depth in range(1, len(parts) + 1):  # parent groups, outermost first
                group = "/".join(parts[:depth])
                if group not in h5:
                    h5py.h5g.create(h5.id, group.encode("utf-8"), gcpl=gcpl)
            h5.create_dataset(key, data=synthetic_feature(key), track_times=False)
    os.replace(tmp, output)


def main(argv=None):
    args = parse_args(argv)
    keys = image_keys(args.data_dir)
    write_features(keys, args.output)
    print(f"wrote {len(keys)} synthetic {FEATURE_DIM}-d features (norm {TARGET_NORM}) to {args.output}")


if __name__ == "__main__":
    main()

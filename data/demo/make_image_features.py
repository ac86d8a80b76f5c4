"""Write the demo's image features: clip_vit_large_patch14_1024.hdf5 in GEMEL's layout, from image_captions.jsonl.

GEMEL (and DRIN) read one 1024-d vector per image key (the pooled output of CLIP ViT-L/14's vision tower), as
`h5[key][()]`, where the key is an example's `img_url` or an entity's `image`. The demo has no images and no CLIP
can be loaded offline, so each image is a written caption (image_captions.jsonl, by make_drin_data.py) and its
feature is a TEXT embedding of that caption:

    vector = 32 * Q @ normalize(MiniLM(caption))

MiniLM is the packaged sentence encoder (all-MiniLM-L6-v2, 384-d, mean of token states), L2-normalised. Q is a fixed
1024 x 384 matrix with orthonormal columns (QR of np.random.default_rng(0).standard_normal((1024, 384)), column signs
fixed by R's diagonal), so the cosine between two features is exactly the cosine between the two caption embeddings.

What this means: two images are similar when their captions say similar things (two photos of footballers are
close, a footballer and a river are far), which is what CLIP image features would give for such pictures, since
CLIP trains its image and caption embeddings to agree. What it does not mean: these are not CLIP features, not even
CLIP's text tower; they live in MiniLM's space (rotated), carry only what the caption says, and have nothing of
CLIP's geometry or of a real photo's detail. A model trained on them learns nothing transferable to real images.

Norm: a LayerNorm output of width 1024 has norm sqrt(1024) = 32 before its learned scale, and CLIP's pooled output is
such a LayerNorm output (`post_layernorm`). We use 32 as the "typical" norm; it is an estimate, not a measurement
on real CLIP features (none can be computed here).

Layout: one float32 dataset of shape (1024,) per key, named by the key itself, in the caption file's order. Keys
such as "demo/train_0000.jpg" contain "/", so h5py stores them under a group "demo"; `h5[key]` still resolves the
full path, which is how GEMEL's reader looks them up.

No timestamps are stored, so the same captions give the same bytes with the same encoder, torch and BLAS; another
CPU or library version may change the last bits of the floats.

Usage:  python data/demo/make_image_features.py [--data_dir data/demo] [--output FILE]
"""
import argparse
import json
import os
import sys

import h5py
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FEATURE_DIM = 1024  # CLIP ViT-L/14 vision width (GEMEL's dim_clip)
TARGET_NORM = 32.0  # sqrt(FEATURE_DIM): norm of a unit-variance LayerNorm output (an estimate)
ENCODER = "minilm-l6"  # retrieval.ENCODER_REGISTRY: the packaged all-MiniLM-L6-v2, mean pooling
CAPTIONS_NAME = "image_captions.jsonl"
OUTPUT_NAME = "clip_vit_large_patch14_1024.hdf5"


def parse_args(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", default=here,
                   help=f"folder with {CAPTIONS_NAME} (default: this script's folder)")
    p.add_argument("--output", default=None, help=f"HDF5 file to write (default: <data_dir>/{OUTPUT_NAME})")
    args = p.parse_args(argv)
    if args.output is None:
        args.output = os.path.join(args.data_dir, OUTPUT_NAME)
    return args


def read_captions(data_dir):
    """[(key, caption)] in file order; a key twice is an error (its vector would be ambiguous)."""
    path = os.path.join(data_dir, CAPTIONS_NAME)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found; write it first with make_drin_data.py")
    rows, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                row = json.loads(line)
                if row["key"] in seen:
                    raise ValueError(f"{path}, line {line_no}: key {row['key']!r} is listed twice")
                seen.add(row["key"])
                rows.append((row["key"], row["caption"]))
    return rows


def projection():
    """Fixed (1024, 384) matrix with orthonormal columns: it preserves every cosine of the 384-d embeddings."""
    q, r = np.linalg.qr(np.random.default_rng(0).standard_normal((FEATURE_DIM, 384)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)  # QR is unique up to column signs; fix them for any LAPACK


def caption_features(captions):
    """{caption: float32 (1024,) of norm TARGET_NORM}; each distinct caption is encoded once, in sorted order."""
    sys.path.insert(0, REPO_ROOT)
    from retrieval import MentionEncoder

    texts = sorted(set(captions))
    emb = MentionEncoder(ENCODER, device="cpu").encode(texts, batch_size=128).astype(np.float64)  # (N, 384), raw
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    vectors = TARGET_NORM * emb @ projection().T  # (N, 1024); norm stays TARGET_NORM
    return {text: vec.astype(np.float32) for text, vec in zip(texts, vectors)}


def write_features(rows, features, output):
    """Write one dataset per key, atomically (temp file, then os.replace)."""
    tmp = output + ".tmp"
    # Groups created on the way to "demo/..." keys would otherwise carry creation times.
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    with h5py.File(tmp, "w", libver="earliest") as h5:
        for key, caption in rows:
            parts = key.split("/")[:-1]
            for depth in range(1, len(parts) + 1):  # parent groups, outermost first
                group = "/".join(parts[:depth])
                if group not in h5:
                    h5py.h5g.create(h5.id, group.encode("utf-8"), gcpl=gcpl)
            h5.create_dataset(key, data=features[caption], track_times=False)
    os.replace(tmp, output)


def main(argv=None):
    args = parse_args(argv)
    rows = read_captions(args.data_dir)
    features = caption_features([caption for _, caption in rows])
    write_features(rows, features, args.output)
    print(f"wrote {len(rows)} {FEATURE_DIM}-d caption features ({len(features)} distinct captions, norm "
          f"{TARGET_NORM}) to {args.output}")


if __name__ == "__main__":
    main()

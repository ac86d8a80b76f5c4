"""A synthetic DRIN preprocessed release: every file of DRIN.md section 5, with the exact names, shapes and dtypes of
the WikiDiverse (54 .npy files) and WikiMEL (45 files, qid2idx.json included) layouts, for a few mentions."""
import json
import os

import numpy as np

SPLITS = ("train", "valid", "test")
MENTIONS = {"train": 12, "valid": 6, "test": 6}


def _mention_files(rng, n, c):
    """The per-split mention files both layouts share: {stem: array}."""
    start = rng.integers(1, 6, n)
    return {
        "mention-text-raw": np.array([f"sentence {i} about a mention" for i in range(n)]),
        "mention-image-path": np.array([f"images/{i}.jpg" for i in range(n)]),
        "start-pos": start.astype(np.int64),
        "end-pos": (start + rng.integers(1, 4, n)).astype(np.int64),
        "answer": np.where(np.arange(n) % 4 == 3, c - 1, rng.integers(0, c - 1, n)).astype(np.int64),  # c - 1: missed
        "mention-text-feature": rng.standard_normal((n, 128, 768)).astype(np.float32),
        "mention-text-mask": (np.arange(128)[None] < rng.integers(12, 40, n)[:, None]).astype(np.int64),
        "mention-image-feature": rng.random((n, 49, 2048)).astype(np.float32),
        "mention-object-feature": rng.random((n, 3, 1, 2048)).astype(np.float32),
        "mention-object-score": rng.random((n, 3)).astype(np.float32),
        "similarity-miet": (rng.random((n, c)) * 40).astype(np.float32),  # CLIP logits: 100 x cosine
        "similarity-eimt": (rng.random((n, c)) * 40).astype(np.float32),
    }


def write_wikidiverse(root, seed=0):
    """<root>/wikidiverse/ with the release's 54 files; 11 slots per mention."""
    folder = os.path.join(root, "wikidiverse")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    c = 11
    for split in SPLITS:
        n = MENTIONS[split]
        files = _mention_files(rng, n, c)
        files.update({
            "entity-attr-raw": np.array([f"Entity {i % 17}: a short brief" for i in range(n * c)]),
            "entity-image-path": np.array([f"entities/{i}.jpg" for i in range(n * c)]),
            "entity-attr-feature": rng.standard_normal((n * c, 768)).astype(np.float32),
            "entity-image-feature": rng.random((n * c, 1, 2048)).astype(np.float32),
            "entity-object-feature": rng.random((n * c, 1, 1, 2048)).astype(np.float32),
            "entity-object-score": rng.random((n * c, 1)).astype(np.float32),
        })
        for stem, array in files.items():
            np.save(os.path.join(folder, f"{stem}_{split}.npy"), array)
    return folder


def write_wikimel(root, seed=0, entities=40):
    """<root>/wikimel/ with the release's 45 files: 13 per split, 5 entity tables and qid2idx.json; 101 slots."""
    folder = os.path.join(root, "wikimel")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    c = 101
    qids = [f"Q{100 + i}" for i in range(entities)]
    for split in SPLITS:
        n = MENTIONS[split]
        files = _mention_files(rng, n, c)
        files["entity-name-raw"] = np.array([qids[j] for j in rng.integers(0, entities, n * c)])
        for stem, array in files.items():
            np.save(os.path.join(folder, f"{stem}_{split}.npy"), array)
    np.save(os.path.join(folder, "entity-attr-feature.npy"),
            rng.standard_normal((entities, 64, 768)).astype(np.float32))
    np.save(os.path.join(folder, "entity-attr-mask.npy"),
            (np.arange(64)[None] < rng.integers(4, 20, entities)[:, None]).astype(np.int64))
    np.save(os.path.join(folder, "entity-image-feature_all.npy"), rng.random((entities, 1, 2048)).astype(np.float32))
    np.save(os.path.join(folder, "entity-object-feature_all.npy"),
            rng.random((entities, 1, 1, 2048)).astype(np.float32))
    np.save(os.path.join(folder, "entity-object-score_all.npy"), rng.random((entities, 1)).astype(np.float32))
    order = rng.permutation(entities)  # qid2idx follows qid2abs.json's order, not the QIDs'
    with open(os.path.join(folder, "qid2idx.json"), "w", encoding="utf-8") as f:
        json.dump({qids[j]: int(i) for i, j in enumerate(order)}, f)
    return folder

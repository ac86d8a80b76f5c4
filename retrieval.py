"""In-context demonstrations: embed mentions with a sentence encoder, rank training examples by cosine.

Also builds the training-mention embedding file main.py reads (`prepare.py embeddings`).

GEMEL's rules (see README): the key is the mention string alone; demonstrations are the top-k training
examples, listed least similar first; a training query skips every training example with the same mention
and text; ties are broken by file order as a stable ascending sort does (later in the file = more similar).
"""
import os
import pickle
import time

import numpy as np
import torch
from tqdm import tqdm

from fileio import atomic_write, file_size
from loading import check_model_name, packaged_path, pick_device
from params import DATASET_PRESETS, ENCODER_REGISTRY, PAPER_PRESET
from utils import DataError, load_mention_embeddings, load_split


def resolve_encoder(name):
    """(path, pooling) of a short encoder name, hub id, or local directory."""
    spec = ENCODER_REGISTRY.get(name)
    if spec is None:
        for entry in ENCODER_REGISTRY.values():
            if entry.get("path") == name:
                spec = entry
    if spec is None:
        check_model_name(name, "--simcse_model", ENCODER_REGISTRY)
        # sentence-transformers folders carry modules.json and were trained with mean pooling
        pooling = "mean" if os.path.exists(os.path.join(name, "modules.json")) else "pooler"
        return name, pooling
    if "package" in spec:
        return packaged_path(spec["package"], f"sentence encoder {name!r}", spec.get("subdir", "")), spec["pooling"]
    return spec["path"], spec["pooling"]


class MentionEncoder:
    """Mention strings -> float32 vectors (SimCSE: pooler output; sentence-transformers: mean of tokens)."""

    def __init__(self, name, device="cpu", cache_dir=None):
        from transformers import AutoModel, AutoTokenizer

        path, self.pooling = resolve_encoder(name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, cache_dir=cache_dir)
            self.model = AutoModel.from_pretrained(path, cache_dir=cache_dir).to(device).eval()
        except OSError as error:
            raise DataError(f"--simcse_model {name!r}: cannot load it ({str(error).strip().splitlines()[0]}); give a "
                            f"local folder, a hub id reachable from here, or a short name "
                            f"({', '.join(ENCODER_REGISTRY)})") from None
        self.device = device

    @torch.no_grad()
    def encode(self, texts, batch_size=128, progress=False, desc="embed mentions"):
        out = []
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress):
            enc = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                 return_tensors="pt").to(self.device)
            hidden = self.model(**enc, return_dict=True)
            if self.pooling == "pooler":
                vec = hidden.pooler_output
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.last_hidden_state.dtype)
                vec = (hidden.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(vec.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size), np.float32)


class DemonstrationRetriever:
    """Top-k training examples by cosine similarity of mention embeddings."""

    def __init__(self, train_embeddings, train_examples):
        emb = np.asarray(train_embeddings, dtype=np.float32)
        # Identical rows (same mention string) must score bit-identically so that ties are exact; scoring the
        # distinct rows only and expanding guarantees it whatever the BLAS kernel does at block edges.
        unique, self._inverse = np.unique(emb, axis=0, return_inverse=True)
        self._inverse = self._inverse.reshape(-1)
        self._unique = unique / np.maximum(np.linalg.norm(unique, axis=1, keepdims=True), 1e-12)
        self._keys = [(ex["mention"], ex["text"]) for ex in train_examples]
        self._key_rows = {}
        for i, key in enumerate(self._keys):
            self._key_rows.setdefault(key, []).append(i)

    def scores(self, query_embeddings):
        q = np.asarray(query_embeddings, dtype=np.float32)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        return (q @ self._unique.T)[:, self._inverse]  # (B, N_train)

    def retrieve(self, query_embeddings, k, queries=None, exclude_self=False):
        """Training indices of the k demonstrations of each query, least similar first.

        With exclude_self, `queries` are training examples and every training example with the same mention
        and text as the query is skipped.
        """
        if k == 0:
            return [[] for _ in range(len(query_embeddings))]
        scores = self.scores(query_embeddings)
        result = []
        for row, s in enumerate(scores):
            order = np.argsort(s, kind="stable")  # ascending; among ties the later training example ranks higher
            if exclude_self:
                skip = self._key_rows.get((queries[row]["mention"], queries[row]["text"]), [])
                if skip:
                    order = order[~np.isin(order, skip)]
            result.append(order[-k:].tolist())
        return result


# ----------------------------------------------------------------------------- the training-mention embedding file

def default_embedding_path(dataset_dir, dataset, ment_embed_file=None):
    """The file main.py reads for this dataset (params.DATASET_PRESETS), unless named."""
    return os.path.join(dataset_dir, ment_embed_file or DATASET_PRESETS.get(dataset, PAPER_PRESET)["ment_embed_file"])


def build_embeddings(train_file, encoder_name, output, device=None, batch_size=128, cache_dir=None):
    """GEMEL's pickled float32 matrix [n_train, dim]: one row per NIL-filtered training line, in file order.

    Each distinct mention is embedded once (sorted by length, to pad little), so rows of equal mentions are
    bit-identical and their retrieval scores tie exactly, as GEMEL's tie-breaking rule assumes.
    """
    start = time.time()
    train = load_split(train_file)
    if not train:
        raise DataError(f"{train_file}: no non-NIL examples; the embeddings have one row per non-NIL example")
    mentions = [ex["mention"] for ex in train]
    distinct = sorted(dict.fromkeys(mentions), key=len)
    _, pooling = resolve_encoder(encoder_name)
    print(f"Embedding {len(distinct):,} distinct mentions of {len(train):,} training examples with "
          f"{encoder_name} ({pooling} pooling)")
    encoder = MentionEncoder(encoder_name, device=str(pick_device(device)), cache_dir=cache_dir)
    vectors = encoder.encode(distinct, batch_size=batch_size, progress=True)  # (n_distinct, dim)
    row = {m: i for i, m in enumerate(distinct)}
    matrix = np.ascontiguousarray(vectors[[row[m] for m in mentions]], dtype=np.float32)  # (n_train, dim)
    with atomic_write(output, "wb") as f:
        pickle.dump(matrix, f, protocol=4)
    print(f"Wrote {output}: float32 {list(matrix.shape)} (one row per non-NIL line of {train_file}), "
          f"{file_size(output)}, {time.time() - start:.1f} s")
    return output


def stale_embeddings(path, train_file):
    """Why the embedding file cannot serve main.py (missing, unreadable, wrong shape, NaN rows), or None if it can."""
    if not os.path.exists(path):
        return "does not exist"
    try:
        load_mention_embeddings(path, len(load_split(train_file)), train_file)
    except DataError as error:  # truncated, not a pickle, naming code, wrong shape, NaN: rebuilding replaces it
        return f"cannot be used ({error})"
    return None
"""In-context demonstrations: embed mentions with a sentence encoder, rank training examples by cosine.

Also builds the training-mention embedding file main.py reads (`prepare.py embeddings`).

GEMEL's rules (docs/differences.md): the key is the mention string alone; demonstrations are the top-k training
examples, listed least similar first; a training query skips every training example with the same mention
and text; ties are broken by file order as a stable ascending sort does (later in the file = more similar).
"""
import logging
import os
import pickle
import time

import numpy as np

from mel.errors import DataError
from mel.io.atomic import atomic_write, file_size, write_json
from mel.io.datasets import load_mention_embeddings, read_split, sources_path
from mel.io.provenance import sha256_of
from mel.models.loading import pick_device
from mel.models.registry import preset
from mel.retrieval.encoder import MentionEncoder, resolve_encoder

logger = logging.getLogger(__name__)


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
    """The file main.py reads for this dataset (its preset's), unless named."""
    return os.path.join(dataset_dir, ment_embed_file or preset(dataset)["ment_embed_file"])


def build_embeddings(train_file, encoder_name, output, device=None, batch_size=128, cache_dir=None):
    """GEMEL's pickled float32 matrix [n_train, dim]: one row per NIL-filtered training line, in file order.

    Each distinct mention is embedded once (sorted by length, to pad little), so rows of equal mentions are
    bit-identical and their retrieval scores tie exactly, as GEMEL's tie-breaking rule assumes.
    """
    start = time.time()
    train = read_split(train_file)
    if not train:
        raise DataError(f"{train_file}: no non-NIL examples; the embeddings have one row per non-NIL example")
    mentions = [ex["mention"] for ex in train]
    distinct = sorted(dict.fromkeys(mentions), key=len)
    _, pooling = resolve_encoder(encoder_name)
    logger.info(f"Embedding {len(distinct):,} distinct mentions of {len(train):,} training examples with "
                f"{encoder_name} ({pooling} pooling)")
    encoder = MentionEncoder(encoder_name, device=str(pick_device(device)), cache_dir=cache_dir)
    vectors = encoder.encode(distinct, batch_size=batch_size, progress=True)  # (n_distinct, dim)
    row = {m: i for i, m in enumerate(distinct)}
    matrix = np.ascontiguousarray(vectors[[row[m] for m in mentions]], dtype=np.float32)  # (n_train, dim)
    with atomic_write(output, "wb") as f:
        pickle.dump(matrix, f, protocol=4)
    write_json(sources_path(output), {"sources": {os.path.basename(train_file): sha256_of(train_file)},
                                      "encoder": encoder_name})
    logger.info(f"Wrote {output}: float32 {list(matrix.shape)} (one row per non-NIL line of {train_file}), "
                f"{file_size(output)}, {time.time() - start:.1f} s")
    return output


def stale_embeddings(path, train_file):
    """Why the embedding file cannot serve main.py (missing, unreadable, wrong shape, NaN rows), or None if it can."""
    if not os.path.exists(path):
        return "does not exist"
    try:
        load_mention_embeddings(path, len(read_split(train_file)), train_file)
    except DataError as error:  # truncated, not a pickle, naming code, wrong shape, NaN: rebuilding replaces it
        return f"cannot be used ({error})"
    return None

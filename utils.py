"""Data and prompt assembly: GEMEL's files in, token-id batches out.

One job only: read the released formats (JSON-lines splits, HDF5 image features, pickled mention
embeddings), lay out each example's prompt as GEMEL does, and collate prompts into padded id tensors in
which image slots are marked, so that model.py can fill in token and image embeddings in one pass.
"""
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from safeload import DataError, load_pickle  # noqa: F401 -- DataError lives in safeload; utils.DataError is it

REQUIRED_FIELDS = ("text", "mention", "target", "golden")
STRING_FIELDS = ("text", "mention", "target")
IMAGE_KEY_FIELDS = ("img_url", "img_name")  # WikiDiverse, WikiMEL
NIL = "NIL"


# ----------------------------------------------------------------------------- reading the released files

def load_split(path, keep_nil=False):
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


def load_mention_embeddings(path, num_train, train_file):
    """GEMEL's pickled [num_train, dim] matrix, one row per NIL-filtered training example in file order."""
    dataset = os.path.basename(os.path.dirname(os.path.abspath(path)))
    rebuild = (f"python prepare.py embeddings --dataset {dataset} --ment_embed_file {os.path.basename(path)} "
               f"--simcse_model <encoder>")
    if not os.path.exists(path):
        raise DataError(f"{path}: training-mention embeddings not found. Build them with `{rebuild}`.")
    emb = load_pickle(path, "mention-embedding file", rebuild)
    if isinstance(emb, torch.Tensor):
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
        line = load_split(train_file)[row]["line"] if os.path.exists(train_file) else "?"
        raise DataError(f"{path}: row {row} (the mention of {train_file}, line {line}) holds NaN or inf "
                        f"({len(bad)} such row(s)). Rebuild it with `{rebuild}`.")
    return emb


# ----------------------------------------------------------------------------- prompt text (GEMEL's wording)

def demonstration_text(ex):
    return (f"[Text]{ex['text']}\n[Question]What does {ex['mention']} mentioned in the text refer to?\n"
            f"[Answer]{ex['target']}\n")


def query_text(ex):
    return f"[Text]{ex['text']}\n[Question]What does {ex['mention']} mentioned in the text refer to?\n[Answer]"


class TokenCache:
    """Tokenizes each distinct text once (in batches) and keeps its ids; GEMEL strips the BOS of every piece."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._ids = {}

    def add(self, texts, batch_size=512):
        todo = list(dict.fromkeys(t for t in texts if t not in self._ids))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            enc = self.tokenizer(chunk, add_special_tokens=False)["input_ids"]
            for text, ids in zip(chunk, enc):
                self._ids[text] = np.asarray(ids, dtype=np.int64)

    def __getitem__(self, text):
        if text not in self._ids:
            self.add([text])
        return self._ids[text]


def target_ids(cache, target, eos_token_id):
    """Training target: the name's tokens (no leading space, no BOS) followed by EOS."""
    return np.append(cache[target], eos_token_id)


# ----------------------------------------------------------------------------- batching

IMAGE_SLOT = -1  # id marking a visual-prefix position in a collated batch


@dataclass
class PromptBatch:
    input_ids: torch.Tensor       # (B, T) token ids, IMAGE_SLOT where a visual prefix token goes
    image_tokens: torch.Tensor    # (B, T) row of the flattened visual prefixes (image_row * k + j), -1 for text
    images: torch.Tensor          # (N_img, dim_clip) float32 features of the images of this batch
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor | None   # (B, T) target ids at target positions, -100 elsewhere (training only)


class PromptBuilder:
    """Lays out `[image prefix][text]` for each demonstration, least similar first, then the query."""

    def __init__(self, tokenizer, train_examples, train_images, prefix_length, pad_token_id):
        self.cache = TokenCache(tokenizer)
        self.eos = tokenizer.eos_token_id
        self.pad = pad_token_id
        self.k = prefix_length
        self.train_images = train_images
        texts = [demonstration_text(ex) for ex in train_examples]
        self.cache.add(texts)
        self.demo_ids = [self.cache[t] for t in texts]

    def prepare(self, examples):
        """Tokenize all queries (and targets) of a split in one go."""
        self.cache.add([query_text(ex) for ex in examples] + [ex["target"] for ex in examples])

    def prompt_length(self, example, demos, with_target=False):
        n = sum(len(self.demo_ids[d]) for d in demos) + len(self.cache[query_text(example)])
        n += self.k * (len(demos) + 1)
        return n + (len(self.cache[example["target"]]) + 1 if with_target else 0)

    def _add_piece(self, pieces, slots, image_row, text_ids):
        """Append `[k visual prefix slots of image_row][text_ids]`."""
        pieces += [np.full(self.k, IMAGE_SLOT), text_ids]
        slots += [image_row * self.k + np.arange(self.k), np.full(len(text_ids), -1)]

    def collate(self, examples, demos, images, training):
        """Pad a batch: right-padded with labels for training, left-padded for generation.

        examples: the batch's examples; demos: per example the training indices of its demonstrations
        (least similar first); images: per example its own image feature (1-D float32 array).
        """
        rows, slot_rows, label_rows, feats = [], [], [], []
        for ex, demo_idx, image in zip(examples, demos, images):
            pieces, slots = [], []
            for d in demo_idx:
                self._add_piece(pieces, slots, len(feats), self.demo_ids[d])
                feats.append(self.train_images[d])
            self._add_piece(pieces, slots, len(feats), self.cache[query_text(ex)])
            feats.append(image)
            n_prompt = sum(len(p) for p in pieces)
            labels = None
            if training:
                tgt = target_ids(self.cache, ex["target"], self.eos)
                pieces.append(tgt)
                slots.append(np.full(len(tgt), -1))
                labels = np.concatenate([np.full(n_prompt, -100), tgt])
            ids = np.concatenate(pieces)
            slot = np.concatenate(slots)
            rows.append(ids)
            slot_rows.append(slot)
            label_rows.append(labels)

        T = max(len(r) for r in rows)
        B = len(rows)
        input_ids = np.full((B, T), self.pad, dtype=np.int64)
        image_tokens = np.full((B, T), -1, dtype=np.int64)
        attention = np.zeros((B, T), dtype=np.int64)
        labels = np.full((B, T), -100, dtype=np.int64) if training else None
        for i, ids in enumerate(rows):
            span = slice(0, len(ids)) if training else slice(T - len(ids), T)
            input_ids[i, span] = ids
            image_tokens[i, span] = slot_rows[i]
            attention[i, span] = 1
            if training:
                labels[i, span] = label_rows[i]
        return PromptBatch(
            input_ids=torch.from_numpy(input_ids),
            image_tokens=torch.from_numpy(image_tokens),
            images=torch.from_numpy(np.stack(feats).astype(np.float32)),
            attention_mask=torch.from_numpy(attention),
            labels=None if labels is None else torch.from_numpy(labels),
        )


def length_bucketed_batches(lengths, batch_size, shuffle, rng=None):
    """Batches of indices of similar length, so little compute is spent on padding.

    With shuffle, indices are shuffled, cut into windows of 50 batches, sorted by length inside each window and
    batched, then the batches are shuffled: training order stays random while padding stays small.
    """
    idx = np.arange(len(lengths))
    lengths = np.asarray(lengths)
    if not shuffle:
        order = idx[np.argsort(-lengths, kind="stable")]
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    idx = rng.permutation(idx)
    window = batch_size * 50
    batches = []
    for w in range(0, len(idx), window):
        chunk = idx[w:w + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


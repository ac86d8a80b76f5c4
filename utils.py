"""Data and prompt assembly: GEMEL's files in, token-id batches out.

One job only: read the released formats (JSON-lines splits, HDF5 image features, pickled mention
embeddings), lay out each example's prompt as GEMEL does, and collate prompts into padded id tensors in
which image slots are marked, so that model.py can fill in token and image embeddings in one pass.
"""
import json
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch

REQUIRED_FIELDS = ("text", "mention", "target", "golden")
IMAGE_KEY_FIELDS = ("img_url", "img_name")  # WikiDiverse, WikiMEL
NIL = "NIL"


class DataError(ValueError):
    """Bad or missing input data; the message names the file and what to do."""


# ----------------------------------------------------------------------------- reading the released files

def load_split(path):
    """Examples of one JSON-lines split with NIL mentions dropped (GEMEL drops them before anything else)."""
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found. A dataset folder needs train.json, dev.json and test.json "
                        f"(JSON lines with fields {', '.join(REQUIRED_FIELDS)} and img_url or img_name).")
    examples = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ex = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {line_no}: not valid JSON ({e.msg}). Each line must be one "
                                f"JSON object.") from None
            if not isinstance(ex, dict):
                raise DataError(f"{path}, line {line_no}: expected a JSON object, got {type(ex).__name__}.")
            missing = [k for k in REQUIRED_FIELDS if k not in ex]
            if missing:
                raise DataError(f"{path}, line {line_no}: missing field(s) {', '.join(missing)}.")
            if ex["golden"] == NIL:
                continue
            if not any(k in ex for k in IMAGE_KEY_FIELDS):
                raise DataError(f"{path}, line {line_no}: no image key; add 'img_url' or 'img_name'.")
            ex["line"] = line_no
            examples.append(ex)
    return examples


def image_key(example):
    return example["img_name"] if "img_name" in example else example["img_url"]


def load_image_features(path, keys, dim):
    """Float32 matrix [len(keys), dim] of the features stored under each key (rows follow `keys`)."""
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
            vec = np.asarray(h5[key][()], dtype=np.float32).reshape(-1)
            if vec.shape[0] != dim:
                raise DataError(f"{path}: feature of {key!r} has dimension {vec.shape[0]}, expected "
                                f"--dim_clip {dim}.")
            feats[row] = vec
    return feats


def load_mention_embeddings(path, num_train, train_file):
    """GEMEL's pickled [num_train, dim] matrix, one row per NIL-filtered training example in file order."""
    if not os.path.exists(path):
        raise DataError(f"{path}: training-mention embeddings not found. Build them with "
                        f"`python prepare.py embeddings --dataset <folder> --simcse_model <encoder>`.")
    with open(path, "rb") as f:
        emb = pickle.load(f)
    if isinstance(emb, torch.Tensor):
        emb = emb.cpu().numpy()
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != num_train:
        raise DataError(f"{path}: has shape {emb.shape}, but {train_file} holds {num_train} non-NIL examples; "
                        f"it must have one row per non-NIL training example, in file order. Rebuild it with "
                        f"`python prepare.py embeddings`.")
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


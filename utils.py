"""Data processing of GEMEL: examples in, prompt token-id batches out.

Lays out each example's prompt as GEMEL does (its wording, demonstrations least similar first, then the query),
tokenizes every distinct text once, and collates prompts into padded id tensors in which image slots are marked, so
that model.py can fill in token and image embeddings in one pass. Reading the dataset files is mel/io/datasets.py.
"""
from dataclasses import dataclass

import numpy as np
import torch

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


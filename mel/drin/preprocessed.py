"""DRIN's preprocessed release read as downloaded (--preprocess_dir): the .npy files of `<dir>/<dataset>/`,
memory-mapped, nothing converted or copied (the largest, `mention-text-feature_train.npy` of WikiDiverse, is
13,205 x 128 x 768 float32, 5.2 GB). Names and shapes as DRIN.md section 5 lists them; splits train, valid (our dev),
test; C candidate slots per mention, the last being the appended gold (11 for WikiDiverse, 101 for WikiMEL).

Every input the network takes is computed from these files batch by batch, as the original's loader and model do:
- mention text: the mean of the token states of the span [start + 1, end + 1) (the +1: [CLS]); a span past the 128
  tokens falls back to the whole sentence (the original gets NaN);
- mention image: the 49 ResNet-152 regions (the model averages them); objects: the detector crops and their scores;
- entity text: WikiDiverse the pooler of "name: brief" (vertex and tt edge alike); WikiMEL the mean of the tokens
  between [CLS] and [SEP] (vertex) and the [CLS] state (tt edge), looked up through qid2idx.json;
- entity image and objects: the ResNet pooler and the crop of each slot's entity;
- ti / it edges: the CLIP similarities `similarity-eimt` / `similarity-miet` divided by 100;
- `answer` = C - 1: the gold is not listed.
A missing file, a wrong shape or an unexpected dtype is one line naming the file and what was expected.
"""
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from mel.drin.model import DrinBatch
from mel.errors import DataError

SPLIT_FILES = {"train": "train", "dev": "valid", "test": "test"}  # our split -> the release's suffix
TOKENS, TEXT_DIM, REGIONS, IMAGE_DIM, MENTION_OBJECTS = 128, 768, 49, 2048, 3
SLOTS = {"wikidiverse": 11, "wikimel": 101}
WIKIMEL_ENTITY_TOKENS = 64
# per split: file stem -> shape, with N (mentions), C (slots), NC (N * C); "str": names, read only when plain strings
MENTION_FILES = {
    "start-pos": ("N",), "end-pos": ("N",), "answer": ("N",),
    "mention-text-feature": ("N", TOKENS, TEXT_DIM), "mention-text-mask": ("N", TOKENS),
    "mention-image-feature": ("N", REGIONS, IMAGE_DIM),
    "mention-object-feature": ("N", MENTION_OBJECTS, 1, IMAGE_DIM), "mention-object-score": ("N", MENTION_OBJECTS),
    "similarity-miet": ("N", "C"), "similarity-eimt": ("N", "C"),
}
WIKIDIVERSE_ENTITY_FILES = {
    "entity-attr-feature": ("NC", TEXT_DIM), "entity-image-feature": ("NC", 1, IMAGE_DIM),
    "entity-object-feature": ("NC", 1, 1, IMAGE_DIM), "entity-object-score": ("NC", 1),
}
WIKIMEL_ENTITY_FILES = {  # one table for all splits
    "entity-attr-feature": ("E", WIKIMEL_ENTITY_TOKENS, TEXT_DIM), "entity-attr-mask": ("E", WIKIMEL_ENTITY_TOKENS),
    "entity-image-feature_all": ("E", 1, IMAGE_DIM), "entity-object-feature_all": ("E", 1, 1, IMAGE_DIM),
    "entity-object-score_all": ("E", 1),
}
INTEGER_FILES = {"start-pos", "end-pos", "answer", "mention-text-mask", "entity-attr-mask"}


def _npy(folder, stem, shape, sizes, integer=False):
    """Memory-map <folder>/<stem>.npy after checking its shape against `shape` (ints, or names bound in `sizes`;
    an unbound name is bound by this file) and its dtype; one line naming the file otherwise."""
    path = os.path.join(folder, f"{stem}.npy")
    if not os.path.exists(path):
        raise DataError(f"{path}: not found; --preprocess_dir must hold DRIN's preprocessed release as downloaded "
                        f"(DRIN.md section 5 lists its files)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:  # an object array (a pickle) is refused: it could carry code
        raise DataError(f"{path}: not a plain numeric array ({error}); download the file again") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read it as .npy ({error}); download the file again") from None
    expected = []
    for dim, size in zip(shape, array.shape):
        if isinstance(dim, str):
            sizes.setdefault(dim, size)
            dim = sizes[dim]
        expected.append(dim)
    if len(shape) != array.ndim or tuple(expected) != array.shape:
        wanted = " x ".join(str(sizes.get(d, d)) for d in shape)
        raise DataError(f"{path}: has shape {' x '.join(map(str, array.shape))}, expected {wanted} "
                        f"({' x '.join(map(str, shape))})")
    if (integer and array.dtype.kind not in "iub") or (not integer and array.dtype.kind != "f"):
        raise DataError(f"{path}: holds {array.dtype} values, expected {'integers' if integer else 'floats'}")
    return array


def _names(folder, stem, count):
    """The strings of a *-raw file (for records), or None when it is absent or not plain strings."""
    path = os.path.join(folder, f"{stem}.npy")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return [str(x) for x in array] if array.dtype.kind in "US" and len(array) == count else None


@dataclass
class ReleasedEntities:
    """WikiMEL's global entity tables (WikiDiverse keeps its entities per split)."""
    text: np.ndarray       # (E, 64, 768)
    mask: np.ndarray       # (E, 64)
    image: np.ndarray      # (E, 1, 2048)
    objects: np.ndarray    # (E, 1, 1, 2048)
    object_scores: np.ndarray  # (E, 1)
    row: dict              # QID -> row (qid2idx.json)


def load_wikimel_entities(folder):
    sizes = {}
    arrays = {stem: _npy(folder, stem, shape, sizes, stem in INTEGER_FILES)
              for stem, shape in WIKIMEL_ENTITY_FILES.items()}
    path = os.path.join(folder, "qid2idx.json")
    if not os.path.exists(path):
        raise DataError(f"{path}: not found; WikiMEL's release maps each QID to its entity row there")
    try:
        with open(path, encoding="utf-8") as f:
            row = json.load(f)
    except ValueError as error:
        raise DataError(f"{path}: not valid JSON ({error}); download the file again") from None
    if not isinstance(row, dict) or not all(isinstance(v, int) and 0 <= v < sizes["E"] for v in row.values()):
        raise DataError(f"{path}: expected {{QID: entity row 0..{sizes['E'] - 1}}}")
    return ReleasedEntities(*(arrays[stem] for stem in WIKIMEL_ENTITY_FILES), row)


def _npy_strings(folder, stem, count):
    """The `count` strings of <folder>/<stem>.npy (WikiMEL's candidate QIDs), which the split cannot do without."""
    path = os.path.join(folder, f"{stem}.npy")
    names = _names(folder, stem, count)
    if names is None:
        raise DataError(f"{path}: expected {count} strings (the QIDs of the candidate slots)" +
                        ("" if os.path.exists(path) else "; not found"))
    return names


class ReleasedSplit:
    """One split of the release as DRIN's batches: `slots` (N, S) entity rows, `gold` (N,) index among the first
    `scored` = C - 1 slots or -1, `examples` (line, mention sentence, gold name) for the records."""

    def __init__(self, folder, dataset, split, gold_slot, training, entities=None):
        self.name, self.wikimel = split, dataset == "wikimel"
        suffix = SPLIT_FILES[split]
        sizes = {"C": SLOTS[dataset]}
        self.m = {stem: _npy(folder, f"{stem}_{suffix}", shape, sizes, stem in INTEGER_FILES)
                  for stem, shape in MENTION_FILES.items()}
        n, c = sizes["N"], sizes["C"]
        sizes["NC"] = n * c
        if self.wikimel:
            self.entities = entities
            qids = _npy_strings(folder, f"entity-name-raw_{suffix}", n * c)
            unknown = next((q for q in qids if q not in entities.row), None)
            if unknown is not None:
                raise DataError(f"{os.path.join(folder, f'entity-name-raw_{suffix}.npy')}: QID {unknown!r} is not in "
                                f"qid2idx.json")
            every = np.array([entities.row[q] for q in qids], dtype=np.int64).reshape(n, c)
            self._name_of = {row: qid for qid, row in entities.row.items()}
        else:
            self.e = {stem: _npy(folder, f"{stem}_{suffix}", shape, sizes, stem in INTEGER_FILES)
                      for stem, shape in WIKIDIVERSE_ENTITY_FILES.items()}
            every = np.arange(n * c, dtype=np.int64).reshape(n, c)
            raw = _names(folder, f"entity-attr-raw_{suffix}", n * c)  # "name: brief", or the name alone
            self._name_of = [text.split(": ", 1)[0] for text in raw] if raw else [f"slot {i}" for i in range(n * c)]
        answer = np.asarray(self.m["answer"], dtype=np.int64)
        if answer.size and (answer.min() < 0 or answer.max() > c - 1):
            raise DataError(f"{os.path.join(folder, f'answer_{suffix}.npy')}: holds {answer.min()}..{answer.max()}, "
                            f"expected 0..{c - 1} ({c - 1}: the gold is not listed)")
        gold = np.where(answer < c - 1, answer, -1)
        rows, columns = every, np.tile(np.arange(c, dtype=np.int64), (n, 1))  # columns: each slot's similarity
        if not gold_slot:  # leak-free: the appended gold slot goes, except as the positive of a training mention
            rows, columns = every[:, :-1].copy(), columns[:, :-1].copy()
            if training:
                missed = gold < 0
                rows[missed, -1], columns[missed, -1], gold[missed] = every[missed, -1], c - 1, c - 2
        self.scored = c - 1
        self.slots, self.columns, self.gold = (torch.from_numpy(a) for a in (rows, columns, gold))
        texts = _names(folder, f"mention-text-raw_{suffix}", n)
        self.examples = [{"line": i + 1, "mention": texts[i] if texts else "",
                          "target": self.entity_name(int(every[i, -1]))} for i in range(n)]
        self.dims = (TEXT_DIM, IMAGE_DIM)

    def entity_name(self, row):
        return self._name_of[row]

    def batch(self, idx):
        """The DrinBatch of mentions `idx`, gathered from the memory-mapped files."""
        idx = np.asarray(idx, dtype=np.int64)
        m = {k: torch.from_numpy(np.asarray(v[idx])) for k, v in self.m.items()}
        slots, columns = self.slots[idx], self.columns[idx]
        rows = slots.numpy()
        text, mask = m["mention-text-feature"].float(), m["mention-text-mask"].float()           # (B, T, D), (B, T)
        positions = torch.arange(text.shape[1])
        start, end = m["start-pos"].long() + 1, m["end-pos"].long() + 1  # + 1: [CLS]
        span = ((positions >= start[:, None]) & (positions < end[:, None])).float() * mask
        empty = span.sum(1) == 0  # past the 128 tokens: the whole sentence
        span = torch.where(empty[:, None], mask, span)
        token_span = torch.where(empty[:, None], torch.stack([torch.zeros_like(start), mask.sum(1).long()], 1),
                                 torch.stack([start, end], 1))
        mention_text = (text * span[..., None]).sum(1) / span.sum(1, keepdim=True).clamp(min=1)
        if self.wikimel:
            e = self.entities
            tokens = torch.from_numpy(np.asarray(e.text[rows.ravel()])).float()                  # (B*S, 64, D)
            n_tokens = torch.from_numpy(np.asarray(e.mask[rows.ravel()])).float().sum(1)         # (B*S,)
            place = torch.arange(tokens.shape[1])
            inner = ((place >= 1) & (place[None] < n_tokens[:, None] - 1)).float()  # between [CLS] and [SEP]
            entity_text = (tokens * inner[..., None]).sum(1) / inner.sum(1, keepdim=True).clamp(min=1)
            entity_edge = tokens[:, 0]
            image, objects, object_scores = (np.asarray(a[rows.ravel()]) for a in
                                             (e.image, e.objects, e.object_scores))
        else:
            entity_text = entity_edge = torch.from_numpy(np.asarray(self.e["entity-attr-feature"][rows.ravel()]))
            image, objects, object_scores = (np.asarray(self.e[k][rows.ravel()]) for k in
                                             ("entity-image-feature", "entity-object-feature", "entity-object-score"))
        b, s = slots.shape
        return DrinBatch(
            mention_text=mention_text, mention_image=m["mention-image-feature"].float(),
            mention_text_joint=torch.zeros(b, 1), mention_image_joint=torch.zeros(b, 1),
            mention_objects=m["mention-object-feature"].float().mean(-2),
            mention_object_scores=m["mention-object-score"].float(),
            entity_text=entity_text.float().reshape(b, s, -1), entity_text_edge=entity_edge.float().reshape(b, s, -1),
            entity_image=torch.from_numpy(image).float().mean(-2).reshape(b, s, -1),
            entity_text_joint=torch.zeros(b, s, 1), entity_image_joint=torch.zeros(b, s, 1),
            entity_objects=torch.from_numpy(objects).float().mean(-2).reshape(b, s, -1, IMAGE_DIM),
            entity_object_scores=torch.from_numpy(object_scores).float().reshape(b, s, -1),
            mask=torch.ones(b, s),  # the release pads short lists with __nil__ entities: every slot is real
            edge_ti=m["similarity-eimt"].float().gather(1, columns) / 100,   # mention text - entity image
            edge_it=m["similarity-miet"].float().gather(1, columns) / 100,   # mention image - entity text
            mention_tokens=text, mention_token_mask=m["mention-text-mask"].long(), mention_span=token_span)

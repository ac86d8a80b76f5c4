"""A DRIN split as tensors: features read once, candidate lists resolved to entity rows, batches gathered by index.

Candidate handling (--protocol):
- default, leak-free: a mention's slots are its candidates. At evaluation nothing else; in training a list that
  misses the gold has its last candidate replaced by the gold, so that every training mention has a positive.
- original, the released code's: the gold entity is appended to every list as an extra slot (also when it is
  listed already). The loss and the metrics leave that slot out, but the mention vertices' mean over candidates
  includes it, at test time too (DRIN.md quirk 1), so its figures may use the gold entity's features.
"""
import json
import os
from dataclasses import dataclass

import h5py
import numpy as np
import torch

from mel.drin.features import ENTITIES_FILE, FORMAT, entity_features_path, split_features_path
from mel.drin.model import DrinBatch
from mel.errors import DataError
from mel.io.provenance import sha256_of
from mel.retrieval.candidates import candidates_path, read_candidates

PREPARE = "python prepare.py drin --dataset {dataset}"


ENCODER_ATTRS = ("text_encoder", "pooling", "image_text", "clip_model", "img_feat")
ENTITY_ARRAYS = ("text", "text_edge", "image", "text_joint", "image_joint")
SPLIT_ARRAYS = ("text", "image", "text_joint", "image_joint")


def _read_h5(path, what, dataset, numeric, names=None):
    """(arrays, attrs) of a feature file: its format, the `numeric` arrays (float, finite) and the `names` array
    (strings) it must hold, and its sources unchanged since it was built; one line naming the file otherwise."""
    rebuild = f"rebuild it with `{PREPARE.format(dataset=dataset)}`"
    if not os.path.exists(path):
        raise DataError(f"{path}: DRIN {what} features not found; build them with `{PREPARE.format(dataset=dataset)}`")
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("format") != FORMAT:
                raise DataError(f"{path}: not a DRIN feature file of this version (format "
                                f"{h5.attrs.get('format')!r}); {rebuild}")
            missing = [name for name in (*numeric, *([names] if names else [])) if name not in h5]
            if missing:
                raise DataError(f"{path}: has no `{missing[0]}` (it holds {', '.join(h5) or 'nothing'}); {rebuild}")
            arrays = {name: h5[name][()] for name in h5}
            attrs = dict(h5.attrs)
    except OSError as error:
        raise DataError(f"{path}: cannot read it as HDF5 ({error}); {rebuild}") from None
    for name, value in arrays.items():
        if name == names:
            if value.dtype.kind not in "OSU":
                raise DataError(f"{path}: `{name}` holds {value.dtype} values, not names; {rebuild}")
        elif value.dtype.kind not in "fiub":
            raise DataError(f"{path}: `{name}` holds {value.dtype} values, not numbers; {rebuild}")
        elif value.dtype.kind == "f" and not np.isfinite(value).all():
            raise DataError(f"{path}: `{name}` holds NaN or inf; {rebuild}")
    _check_sources(path, attrs, dataset)
    return arrays, attrs


def _check_sources(path, attrs, dataset):
    """Refuse a feature file computed from another version of a file of the dataset folder (the entity list or
    split, the image features, the captions): `sources` records the sha256 of each."""
    try:
        recorded = json.loads(attrs.get("sources", "{}"))
    except (TypeError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        raise DataError(f"{path}: its `sources` attribute is not a JSON object; rebuild it with "
                        f"`{PREPARE.format(dataset=dataset)}`")
    folder = os.path.dirname(path)
    for name, digest in recorded.items():
        source = os.path.join(folder, name)
        if os.path.exists(source) and sha256_of(source) != digest:
            raise DataError(f"{path}: built from another version of {source} (it changed since); rebuild it with "
                            f"`{PREPARE.format(dataset=dataset)}`")


def _objects(arrays, image):
    """Detector crops and scores, or the whole image as one object with score 1."""
    if "objects" in arrays:
        return torch.from_numpy(arrays["objects"]).float(), torch.from_numpy(arrays["object_scores"]).float()
    return image.unsqueeze(-2), torch.ones(image.shape[:-1] + (1,))


@dataclass
class EntityTable:
    names: list
    row: dict               # name -> row
    text: torch.Tensor      # (E, Dt)
    text_edge: torch.Tensor
    image: torch.Tensor     # (E, Di)
    text_joint: torch.Tensor
    image_joint: torch.Tensor
    objects: torch.Tensor   # (E, J, Do)
    object_scores: torch.Tensor
    encoders: dict = None   # what computed the features (features.encoders): link.py computes new mentions alike

    @classmethod
    def load(cls, folder, dataset):
        path = entity_features_path(folder)
        arrays, attrs = _read_h5(path, "entity", dataset, ENTITY_ARRAYS, names="names")
        if ENTITIES_FILE not in json.loads(attrs["sources"]):
            raise DataError(f"{path}: records no {ENTITIES_FILE} it was built from; rebuild it with "
                            f"`{PREPARE.format(dataset=dataset)}`")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in arrays["names"]]
        t = {k: torch.from_numpy(v).float() for k, v in arrays.items() if k not in ("names", "has_image")}
        image = t["image"].mean(-2) if t["image"].dim() == 3 else t["image"]
        objects, scores = _objects(arrays, image)
        encoders = {k: str(attrs[k]) for k in ENCODER_ATTRS if k in attrs}
        return cls(names, {n: i for i, n in enumerate(names)}, t["text"], t["text_edge"], image, t["text_joint"],
                   t["image_joint"], objects, scores, encoders)


@dataclass
class DrinSplit:
    name: str
    examples: list
    text: torch.Tensor         # (N, Dt)
    image: torch.Tensor        # (N, R, Di)
    text_joint: torch.Tensor
    image_joint: torch.Tensor
    objects: torch.Tensor      # (N, K, Do)
    object_scores: torch.Tensor
    slots: torch.Tensor        # (N, S) entity rows, -1 for padding; S = C (+ 1 with the gold slot)
    gold: torch.Tensor         # (N,) index of the gold among the first C slots, -1 when not listed
    scored: int                # C: the slots the loss and the metrics see
    entities: EntityTable      # what the slots' rows index
    tokens: torch.Tensor | None = None       # (N, T, Dt) token states ([CLS] first), for GHMFC and MEL-HI
    token_mask: torch.Tensor | None = None   # (N, T)
    token_span: torch.Tensor | None = None   # (N, 2) the mention's tokens [start, end)

    @property
    def dims(self):
        """(text, image) widths of the features: what the network's input layers take."""
        return self.entities.text.shape[1], self.entities.image.shape[-1]

    def batch(self, idx):
        return make_batch(self, self.entities, idx)

    def entity_name(self, row):
        return self.entities.names[row]

    @classmethod
    def load(cls, folder, dataset, split, examples, entities, gold_slot, training, max_candidates=None):
        """The features of a split's non-NIL `examples` (mel.io.datasets.read_split) with their candidate slots."""
        path = split_features_path(folder, split)
        arrays, attrs = _read_h5(path, split, dataset, SPLIT_ARRAYS + ("lines",))
        split_file = os.path.join(folder, f"{split}.json")
        if os.path.basename(split_file) not in json.loads(attrs["sources"]):
            raise DataError(f"{path}: records no {split}.json it was built from; rebuild it with "
                            f"`{PREPARE.format(dataset=dataset)}`")
        if arrays["lines"].tolist() != [ex["line"] for ex in examples]:
            raise DataError(f"{path}: its rows are not the non-NIL lines of {split_file}; rebuild it with "
                            f"`{PREPARE.format(dataset=dataset)}`")
        lists = read_candidates(candidates_path(folder, split), examples,
                                alternative="or convert DRIN's raw data (python prepare.py drin_release)")
        if max_candidates:
            lists = {line: names[:max_candidates] for line, names in lists.items()}
        slots, gold = resolve_slots(lists, examples, entities, gold_slot, training, candidates_path(folder, split))
        return cls.from_arrays(split, examples, arrays, slots, gold, max(len(v) for v in lists.values()), entities)

    @classmethod
    def from_arrays(cls, name, examples, arrays, slots, gold, scored, entities):
        """A split of `examples` from their feature arrays (numpy, as a drin.<split>.h5 holds them) and their slots
        (resolve_slots), the first `scored` of which the metrics see."""
        t = {k: torch.from_numpy(v).float() for k, v in arrays.items() if k not in ("lines", "tokens", "token_mask",
                                                                                    "token_span")}
        image = t["image"] if t["image"].dim() == 3 else t["image"].unsqueeze(1)
        objects, scores = _objects(arrays, image.mean(-2))
        tokens = {k: torch.from_numpy(arrays[k]) for k in ("tokens", "token_mask", "token_span") if k in arrays}
        return cls(name, examples, t["text"], image, t["text_joint"], t["image_joint"], objects, scores, slots, gold,
                   scored, entities, **tokens)


def resolve_slots(lists, examples, entities, gold_slot, training, source):
    """(slots (N, S), gold (N,)) from {line: names}: entity rows, padded with -1 to the longest list."""
    width = max(len(names) for names in lists.values())
    slots = np.full((len(examples), width + gold_slot), -1, dtype=np.int64)
    gold = np.full(len(examples), -1, dtype=np.int64)
    for i, ex in enumerate(examples):
        names = list(lists[ex["line"]])
        unknown = [n for n in names if n not in entities.row]
        if unknown:
            raise DataError(f"{source}: candidate {unknown[0]!r} of line {ex['line']} is not in the knowledge base's "
                            f"entities.jsonl; rebuild the candidates from the same knowledge base")
        target_row = entities.row.get(ex["target"])
        needs_gold = gold_slot or (training and ex["target"] not in names)
        if needs_gold and target_row is None:
            raise DataError(f"{source}: the gold entity {ex['target']!r} of line {ex['line']} is not in "
                            f"entities.jsonl, so it has no features (add it to the knowledge base and rerun prepare.py "
                            f"drin)")
        if training and not gold_slot and ex["target"] not in names:
            names[-1] = ex["target"]  # leak-free training: a positive for every mention
        slots[i, :len(names)] = [entities.row[n] for n in names]
        if gold_slot:
            slots[i, -1] = target_row
        gold[i] = names.index(ex["target"]) if ex["target"] in names else -1
    return torch.from_numpy(slots), torch.from_numpy(gold)


def make_batch(split, entities, idx):
    """The DrinBatch of examples `idx`: every candidate slot of every mention, gathered in one go. A padded slot
    (a list shorter than the longest) holds zero features: an empty entity."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    slots = split.slots[idx]                 # (B, S)
    rows, mask = slots.clamp(min=0), (slots >= 0).float()

    def gather(table):  # (E, ...) -> (B, S, ...), zero at padded slots
        out = table[rows]
        return out * mask.view(*mask.shape, *[1] * (out.dim() - 2))

    return DrinBatch(mention_text=split.text[idx], mention_image=split.image[idx],
                     mention_text_joint=split.text_joint[idx], mention_image_joint=split.image_joint[idx],
                     mention_objects=split.objects[idx], mention_object_scores=split.object_scores[idx],
                     entity_text=gather(entities.text), entity_text_edge=gather(entities.text_edge),
                     entity_image=gather(entities.image), entity_text_joint=gather(entities.text_joint),
                     entity_image_joint=gather(entities.image_joint), entity_objects=gather(entities.objects),
                     entity_object_scores=gather(entities.object_scores), mask=mask,
                     mention_tokens=None if split.tokens is None else split.tokens[idx].float(),
                     mention_token_mask=None if split.token_mask is None else split.token_mask[idx].long(),
                     mention_span=None if split.token_span is None else split.token_span[idx])

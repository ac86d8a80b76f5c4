"""DRIN's feature files: what `prepare.py drin` computes once with frozen encoders, and what the runs read.

In the dataset folder:
    entities.jsonl        the knowledge base: {"name", "description", "image": image key or null} per entity
    drin.entities.h5      per entity: text (vertex input), text_edge (tt edge input), image, text_joint, image_joint
    drin.<split>.h5       per non-NIL line: lines, text (mention span), image (R regions), text_joint, image_joint

`text*` come from a BERT-style encoder (any AutoModel). The mention's text feature is the mean of its span's token
states: the original stores all 128 token states and averages the span inside the model, which gives the same
numbers (a linear layer commutes with the mean) at 1/128 of the disk. `image` is the image-feature HDF5 the GEMEL
runs read (--img_feat); `*_joint` are the two towers of an image-text space for the cross-modal edges (CLIP in the
original: its logits / 100 are these cosines). Optional `objects` / `object_scores` hold detector crops for the ii
edge; without them the ii edge compares the two whole images (one object per side, score 1).
"""
import json
import logging
import os

import h5py
import numpy as np
import torch
from tqdm import tqdm

from mel.errors import DataError
from mel.io.atomic import atomic_path, ensure_free_space, file_size
from mel.io.datasets import image_key, load_image_features, read_jsonl_objects, read_split
from mel.io.provenance import sha256_of

logger = logging.getLogger(__name__)

ENTITIES_FILE = "entities.jsonl"
CAPTIONS_FILE = "image_captions.jsonl"
ENTITY_TEXT_CHARS = 512  # WikiDiverse's "name: brief" was cut to 512 characters
FORMAT = "drin-features-2"  # the attribute `sources`: {file name in the dataset folder: sha256}


def split_features_path(folder, split):
    return os.path.join(folder, f"drin.{split}.h5")


def entity_features_path(folder):
    return os.path.join(folder, "drin.entities.h5")


# ----------------------------------------------------------------------------- inputs

def read_entities(path):
    """[{"name", "description", "image", "text"}] of the knowledge base, checked line by line; "text" (optional) is
    the exact text to encode, as DRIN's release builds it (prepare.py drin_release writes it)."""
    if not os.path.exists(path):
        raise DataError(f"{path}: not found. DRIN needs the knowledge base's entities, one JSON object per line: "
                        f"{{\"name\": ..., \"description\": ..., \"image\": <image key or null>}} (see README, DRIN)")
    entities, seen = [], {}
    for number, row in read_jsonl_objects(path):
        name, description, image = row.get("name"), row.get("description", ""), row.get("image")
        text = row.get("text")
        if not isinstance(name, str) or not name or not isinstance(description, str) \
                or not (image is None or isinstance(image, str)) or not (text is None or isinstance(text, str)):
            raise DataError(f"{path}, line {number}: expected {{\"name\": non-empty string, \"description\": string, "
                            f"\"image\": image key or null, optionally \"text\": string}}")
        if name in seen:
            raise DataError(f"{path}, line {number}: entity {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = number
        entities.append({"name": name, "description": description, "image": image or None, "text": text})
    return entities


def entity_text(entity):
    """The text an entity is encoded from: its own "text" when given, else WikiDiverse's "name: brief", cut to 512
    characters."""
    if entity.get("text") is not None:
        return entity["text"]
    text = f"{entity['name']}: {entity['description']}" if entity["description"] else entity["name"]
    return text[:ENTITY_TEXT_CHARS]


def read_captions(path):
    """{image key: caption} of a caption file (images described in words, the demo's stand-in for pictures)."""
    captions = {}
    for number, row in read_jsonl_objects(path):
        if not isinstance(row.get("key"), str) or not isinstance(row.get("caption"), str):
            raise DataError(f"{path}, line {number}: expected {{\"key\": image key, \"caption\": text}}")
        captions[row["key"]] = row["caption"]
    return captions


def mention_span(text, mention):
    """Character span of the mention's first occurrence (the original's str.index for WikiMEL; a split line's own
    `mention_span` [start, end) wins), case aside if need be; None when the text does not contain it."""
    start = text.find(mention)
    if start < 0:
        start = text.lower().find(mention.lower())
    return None if start < 0 else (start, start + len(mention))


# ----------------------------------------------------------------------------- encoders

class TextEncoder:
    """Token states of a BERT-style encoder: span means, pooled sentences, and WikiMEL's entity poolings."""

    def __init__(self, name, device="cpu", cache_dir=None, max_length=512):
        from mel.retrieval.encoder import MentionEncoder
        self.encoder = MentionEncoder(name, device=device, cache_dir=cache_dir)
        self.name, self.device, self.max_length = name, device, max_length
        self.dim = self.encoder.model.config.hidden_size

    def sentences(self, texts, batch_size=64, desc="encode texts"):
        """(N, D) sentence vectors with the encoder's own pooling (pooler output, or the mean of tokens)."""
        return self.encoder.encode(texts, batch_size, progress=len(texts) > batch_size, desc=desc)

    @torch.no_grad()
    def spans(self, texts, spans, batch_size=64):
        """(N, D) mean of the token states overlapping each character span (the whole text where span is None or
        past the truncation); also how many fell back to the whole text."""
        out, fallbacks = [], 0
        for start in tqdm(range(0, len(texts), batch_size), desc="encode mentions", disable=len(texts) <= batch_size):
            enc = self.encoder.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                         max_length=self.max_length, return_offsets_mapping=True, return_tensors="pt")
            offsets = enc.pop("offset_mapping")
            states = self.encoder.model(**enc.to(self.device)).last_hidden_state.float().cpu()
            real = offsets[..., 1] > offsets[..., 0]  # special and padding tokens have empty offsets
            for row, span in enumerate(spans[start:start + batch_size]):
                chosen = None
                if span is not None:
                    inside = real[row] & (offsets[row, :, 0] < span[1]) & (offsets[row, :, 1] > span[0])
                    chosen = inside if inside.any() else None
                if chosen is None:
                    chosen, fallbacks = real[row], fallbacks + 1
                out.append(states[row][chosen].mean(0).numpy())
        return (np.stack(out) if out else np.zeros((0, self.dim), np.float32)), fallbacks

    @torch.no_grad()
    def token_states(self, texts, spans, length=128, batch_size=64):
        """What GHMFC and MEL-HI read besides the span mean: (N, length, D) float16 token states of the first `length`
        tokens ([CLS] first), (N, length) int8 mask, (N, 2) token span [start, end) of the mention (the whole
        sentence where the span is None or past `length`)."""
        states_out, masks, token_spans = [], [], []
        for start in tqdm(range(0, len(texts), batch_size), desc="encode tokens", disable=len(texts) <= batch_size):
            enc = self.encoder.tokenizer(texts[start:start + batch_size], padding="max_length", truncation=True,
                                         max_length=length, return_offsets_mapping=True, return_tensors="pt")
            offsets = enc.pop("offset_mapping")
            states = self.encoder.model(**enc.to(self.device)).last_hidden_state.float().cpu()
            mask = enc["attention_mask"].cpu()
            real = offsets[..., 1] > offsets[..., 0]
            for row, span in enumerate(spans[start:start + batch_size]):
                inside = (real[row] & (offsets[row, :, 0] < span[1]) & (offsets[row, :, 1] > span[0])
                          if span is not None else torch.zeros_like(real[row]))
                chosen = (inside if inside.any() else real[row]).nonzero().flatten()
                whole = (0, int(mask[row].sum()))
                token_spans.append((int(chosen[0]), int(chosen[-1]) + 1) if len(chosen) else whole)
            states_out.append(states.half().numpy())
            masks.append(mask.numpy().astype(np.int8))
        if not states_out:
            states_out, masks = [np.zeros((0, length, self.dim), np.float16)], [np.zeros((0, length), np.int8)]
        return np.concatenate(states_out), np.concatenate(masks), np.array(token_spans, dtype=np.int64).reshape(-1, 2)

    @torch.no_grad()
    def wikimel_entities(self, texts, batch_size=64):
        """WikiMEL's entity features: the mean of the tokens between [CLS] and [SEP] (vertex) and the [CLS] state
        (tt edge)."""
        means, cls = [], []
        for start in tqdm(range(0, len(texts), batch_size), desc="encode entities", disable=len(texts) <= batch_size):
            enc = self.encoder.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                         max_length=self.max_length, return_special_tokens_mask=True,
                                         return_tensors="pt")
            special = enc.pop("special_tokens_mask")
            states = self.encoder.model(**enc.to(self.device)).last_hidden_state.float().cpu()
            inner = ((special == 0) & (enc["attention_mask"].cpu() == 1)).unsqueeze(-1).float()
            means.append(((states * inner).sum(1) / inner.sum(1).clamp(min=1)).numpy())
            cls.append(states[:, 0].numpy())
        return np.concatenate(means), np.concatenate(cls)


class CaptionSpace:
    """An image-text space for images known by a written caption: both towers are the text encoder (the demo's
    stand-in for CLIP, whose image and caption embeddings are trained to agree)."""

    kind = "captions"

    def __init__(self, text_encoder, captions, source):
        self.text, self.captions, self.source = text_encoder, captions, source
        self.model_name, self.dim = "", text_encoder.dim

    def images(self, keys):
        missing = [k for k in keys if k not in self.captions]
        if missing:
            raise DataError(f"{self.source}: no caption for image key {missing[0]!r} ({len(missing)} missing)")
        return self.text.sentences([self.captions[k] for k in keys], desc="encode captions")

    def texts(self, texts):
        return self.text.sentences(texts)


class ClipSpace:
    """CLIP's two towers (projected embeddings), as the original's similarity-miet / similarity-eimt files."""

    kind = "clip"

    def __init__(self, model_name, image_paths, device="cpu", cache_dir=None, batch_size=32):
        from transformers import AutoProcessor, CLIPModel
        self.model = CLIPModel.from_pretrained(model_name, cache_dir=cache_dir).to(device).eval()
        self.processor = AutoProcessor.from_pretrained(model_name, cache_dir=cache_dir)
        self.paths, self.device, self.batch_size = image_paths, device, batch_size
        self.model_name, self.dim = model_name, self.model.config.projection_dim

    @torch.no_grad()
    def images(self, keys):
        from PIL import Image
        out = []
        for start in tqdm(range(0, len(keys), self.batch_size), desc="CLIP images"):
            batch = []
            for key in keys[start:start + self.batch_size]:
                path = self.paths.get(key)
                if path is None:
                    raise DataError(f"--images: no image file for key {key!r}")
                with Image.open(path) as image:
                    batch.append(image.convert("RGB"))
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            out.append(_embeddings(self.model.get_image_features(pixel_values=pixels)))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    @torch.no_grad()
    def texts(self, texts):
        out = []
        for start in range(0, len(texts), self.batch_size):
            # truncation keeps the end-of-text token the text tower pools (the original cut it off, quirk 5)
            enc = self.processor(text=texts[start:start + self.batch_size], padding=True, truncation=True,
                                 max_length=77, return_tensors="pt").to(self.device)
            out.append(_embeddings(self.model.get_text_features(**enc)))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def _embeddings(output):
    # transformers 5 returns a model output whose pooler_output is the projected embedding
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return tensor.float().cpu().numpy()


# ----------------------------------------------------------------------------- building (prepare.py drin)

def per_key(keys, compute, width):
    """(len(keys), width) rows: compute(distinct keys) spread back over `keys`; a None key (no image) gets zeros, the
    original's blank default image."""
    known = [k for k in dict.fromkeys(keys) if k is not None]
    out = np.zeros((len(keys), width), np.float32)
    if known:
        vectors, row = compute(known), {k: i for i, k in enumerate(known)}
        rows = [i for i, k in enumerate(keys) if k is not None]
        out[rows] = vectors[[row[keys[i]] for i in rows]]
    return out


def _write_h5(path, arrays, attrs):
    ensure_free_space(path, sum(v.nbytes for v in arrays.values() if v.dtype.kind not in "UO"), "the DRIN features")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as h5:
            for name, value in arrays.items():
                if value.dtype.kind in "UO":
                    h5.create_dataset(name, data=value.astype(object), dtype=h5py.string_dtype())
                else:
                    h5.create_dataset(name, data=value)
            h5.attrs.update(attrs)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items())
    logger.info(f"Wrote {path}: {shapes}, {file_size(path)}")


def build_entity_features(folder, text, space, img_feat, dim_image, pooling="encoder"):
    """drin.entities.h5 for every entity of entities.jsonl."""
    path = os.path.join(folder, ENTITIES_FILE)
    entities = read_entities(path)
    texts = [entity_text(e) for e in entities]
    logger.info(f"DRIN entity features for {len(entities):,} entities ({sum(e['image'] is None for e in entities):,} "
                f"without an image) with {text.name}")
    if pooling == "wikimel":
        vertex, edge = text.wikimel_entities(texts)
    else:
        vertex = edge = text.sentences(texts, desc="encode entities")
    images = [e["image"] for e in entities]
    text_joint = space.texts(texts)
    arrays = {"names": np.array([e["name"] for e in entities], dtype=object), "text": vertex, "text_edge": edge,
              "image": per_key(images, lambda keys: load_image_features(img_feat, keys, dim_image), dim_image),
              "text_joint": text_joint, "image_joint": per_key(images, space.images, text_joint.shape[1]),
              "has_image": np.array([k is not None for k in images])}
    _write_h5(entity_features_path(folder), arrays, {"format": FORMAT, "sources": sources(path, img_feat, space),
                                                   **encoders(text, space, img_feat), "pooling": pooling})


def build_split_features(folder, split, text, space, img_feat, dim_image, token_states=False):
    """drin.<split>.h5 for the non-NIL lines of <split>.json; with token_states also each sentence's token states
    (`tokens`, `token_mask`, `token_span`), which GHMFC and MEL-HI read."""
    split_file = os.path.join(folder, f"{split}.json")
    examples = read_split(split_file)
    spans = [tuple(ex["mention_span"]) if isinstance(ex.get("mention_span"), list) and len(ex["mention_span"]) == 2
             else mention_span(ex["text"], ex["mention"]) for ex in examples]
    keys = [image_key(ex) for ex in examples]
    image = per_key(keys, lambda known: load_image_features(img_feat, known, dim_image), dim_image)
    arrays, fallbacks = mention_arrays(text, space, [ex["text"] for ex in examples], spans, image,
                                       per_key(keys, space.images, space.dim), token_states)
    if fallbacks:
        logger.info(f"  {split}: {fallbacks} mention(s) not found in their text (or past {text.max_length} tokens): "
                    f"their text feature is the mean of the whole sentence")
    arrays = {"lines": np.array([ex["line"] for ex in examples], dtype=np.int64), **arrays}
    _write_h5(split_features_path(folder, split), arrays, {"format": FORMAT,
                                                        "sources": sources(split_file, img_feat, space),
                                                        **encoders(text, space, img_feat)})


def mention_arrays(text, space, texts, spans, image, image_joint, token_states=False):
    """({text, image, text_joint, image_joint[, tokens, token_mask, token_span]}, number of spans that fell back to
    the whole sentence) for mentions at character `spans` of `texts`, with their image features (N, Di) and image
    towers (N, Dj) given: what a drin.<split>.h5 holds per mention, and what link.py computes for new text."""
    span_means, fallbacks = text.spans(texts, spans)
    arrays = {"text": span_means, "image": image[:, None, :],  # one region: a pooled feature
              "text_joint": space.texts(texts), "image_joint": image_joint}
    if token_states:
        arrays["tokens"], arrays["token_mask"], arrays["token_span"] = text.token_states(texts, spans)
    return arrays, fallbacks


def encoders(text, space, img_feat):
    """The attributes naming what computed a feature file, which link.py recomputes new mentions with: the text
    encoder, the image-text space (captions or clip, and its CLIP model) and the image feature file."""
    return {"text_encoder": text.name, "image_text": space.kind, "clip_model": space.model_name,
            "img_feat": os.path.basename(img_feat)}


def sources(*inputs):
    """The `sources` attribute of a feature file, as JSON: {file name: sha256} of what it was computed from (the
    entity list or split, the image features, the captions of a caption space; paths or objects with `.source`)."""
    paths = [getattr(item, "source", item) for item in inputs]
    return json.dumps({os.path.basename(p): sha256_of(p) for p in paths if isinstance(p, str) and os.path.exists(p)})

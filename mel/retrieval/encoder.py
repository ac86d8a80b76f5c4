"""Sentence encoders: a short name, hub id or local folder in, mention (or name) strings out as float32 vectors.

SimCSE uses its pooler output, as the paper; sentence-transformers models mean pooling over tokens.
"""
import os

import numpy as np
import torch
from tqdm import tqdm

from mel.errors import DataError
from mel.models.loading import check_model_name, packaged_path
from mel.models.registry import ENCODER_REGISTRY


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

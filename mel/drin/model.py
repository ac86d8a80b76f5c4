"""DRIN's network, as the original code (starreeze/drin, drin/model.py) computes it.

Four vertices per (mention, candidate list): mention text `mt` and image `mi` (B, d); entity text `et` and image
`ei` (B, C, d). Four edges per (mention, candidate), scalars (B, C) or vectors (B, C, d): `tt` (mention text -
entity text), `ti` (mention text - entity image), `it` (mention image - entity text), `ii` (mention image - entity
image). Each GCN layer updates every vertex from its two (edge, neighbour) pairs and, with dynamic edges, every
edge from its two end vertices, both from the layer's input. The score of a candidate is cos(mt, et) after the last
layer; the image vertices act only through the messages they send.
"""
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

EDGES = ("tt", "ti", "it", "ii")
# vertex <- its (edge, neighbour vertex) pairs (the original's vertex_graph)
NEIGHBOURS = {"mt": (("tt", "et"), ("ti", "ei")), "mi": (("it", "et"), ("ii", "ei")),
              "et": (("tt", "mt"), ("it", "mi")), "ei": (("ti", "mt"), ("ii", "mi"))}
# edge -> (mention vertex, entity vertex) (the original's edge_graph)
ENDS = {"tt": ("mt", "et"), "ti": ("mt", "ei"), "it": ("mi", "et"), "ii": ("mi", "ei")}


@dataclass
class DrinBatch:
    """The features of B mentions and their C candidate slots (padded slots have mask 0)."""
    mention_text: torch.Tensor           # (B, Dt) mean of the mention span's token states (raw encoder output)
    mention_image: torch.Tensor          # (B, R, Di) image regions (R = 1: a pooled feature)
    mention_text_joint: torch.Tensor     # (B, Ds) the sentence in the image-text space (CLIP text tower)
    mention_image_joint: torch.Tensor    # (B, Ds) the image in the image-text space (CLIP vision tower)
    mention_objects: torch.Tensor        # (B, K, Do) detected objects (K = 1, score 1: the whole image)
    mention_object_scores: torch.Tensor  # (B, K) detector scores
    entity_text: torch.Tensor            # (B, C, Dt) entity text feature the vertex is built from
    entity_text_edge: torch.Tensor       # (B, C, Dt) entity text feature the tt edge compares (CLS or pooled)
    entity_image: torch.Tensor           # (B, C, Di)
    entity_text_joint: torch.Tensor      # (B, C, Ds)
    entity_image_joint: torch.Tensor     # (B, C, Ds)
    entity_objects: torch.Tensor         # (B, C, J, Do)
    entity_object_scores: torch.Tensor   # (B, C, J)
    mask: torch.Tensor                   # (B, C) 1 for a real candidate slot
    edge_ti: torch.Tensor | None = None  # (B, C) the ti / it edges when given as such (the release's CLIP
    edge_it: torch.Tensor | None = None  # similarities / 100) instead of computed from the *_joint features
    mention_tokens: torch.Tensor | None = None      # (B, T, Dt) the sentence's token states, [CLS] first
    mention_token_mask: torch.Tensor | None = None  # (B, T) 1 for a real token (GHMFC and MEL-HI read these three)
    mention_span: torch.Tensor | None = None        # (B, 2) the mention's tokens [start, end)

    def to(self, device):
        return DrinBatch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                            for f in fields(self)})


def initial_edges(batch):
    """The four edges before the first layer, (B, C) each, as the original's EdgeEncoder and CLIP logits / 100."""
    tt = F.cosine_similarity(batch.mention_text.unsqueeze(1), batch.entity_text_edge, dim=-1)
    ti, it = batch.edge_ti, batch.edge_it
    if ti is None:
        ti = F.cosine_similarity(batch.mention_text_joint.unsqueeze(1), batch.entity_image_joint, dim=-1)
    if it is None:
        it = F.cosine_similarity(batch.mention_image_joint.unsqueeze(1), batch.entity_text_joint, dim=-1)
    # ii: detector-score-weighted mean cosine over (mention object i, entity object j) pairs
    cos = F.cosine_similarity(batch.mention_objects[:, None, :, None, :], batch.entity_objects[:, :, None, :, :],
                              dim=-1)                                                          # (B, C, K, J)
    weight = batch.mention_object_scores[:, None, :, None] * batch.entity_object_scores[:, :, None, :]
    ii = (cos * weight).sum((-1, -2)) / (weight.sum((-1, -2)) + 1e-9)
    return {"tt": tt, "ti": ti, "it": it, "ii": ii}


class GCNLayer(nn.Module):
    """One layer: W_h and LayerNorm shared by the four vertex types, W_u / W_v (and W_m) by the four edge types."""

    def __init__(self, dim, vector_edges):
        super().__init__()
        self.w_h = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        width = dim // 2 if vector_edges else dim  # vector edges concatenate the two halves back to dim
        self.w_u = nn.Linear(dim, width)
        self.w_v = nn.Linear(dim, width)
        self.w_m = nn.Linear(dim, dim) if vector_edges else nn.Identity()
        self.vector_edges = vector_edges

    def forward(self, vertices, edges, mask, dynamic):
        new_vertices = {}
        for u, pairs in NEIGHBOURS.items():
            message = sum(self.message(edges[e], vertices[v], mask) for e, v in pairs)
            new_vertices[u] = F.gelu(self.norm(self.w_h(vertices[u] + message)))
        if not dynamic:
            return new_vertices, edges
        new_edges = {e: torch.sigmoid(self.w_m(self.relation(vertices[m], vertices[v]) + edges[e]))
                     for e, (m, v) in ENDS.items()}
        return new_vertices, new_edges

    @staticmethod
    def message(edge, neighbour, mask):
        """What a vertex receives over one edge type: a mention vertex the mean over candidates of edge * entity
        vertex (B, d); an entity vertex edge * mention vertex (B, C, d)."""
        edge = edge if edge.dim() == 3 else edge.unsqueeze(-1)
        if neighbour.dim() == 3:
            weights = mask.unsqueeze(-1)
            return (edge * neighbour * weights).sum(1) / weights.sum(1).clamp(min=1)
        return edge * neighbour.unsqueeze(1)

    def relation(self, mention, entity):
        """The new edge's input from its two end vertices: mean_d(W_u m * W_v v) (B, C), or [W_u m; W_v v]."""
        fu = self.w_u(mention).unsqueeze(1).expand(-1, entity.shape[1], -1)
        if self.vector_edges:
            return torch.cat([fu, self.w_v(entity)], dim=-1)
        return (fu * self.w_v(entity)).mean(-1)


class DRIN(nn.Module):
    """Scores (B, C): cos(mention text vertex, entity text vertex) after the GCN layers."""

    def __init__(self, dim_text, dim_image, dim=768, num_layers=2, edges=EDGES, edge_type="dynamic",
                 vector_edges=False, mention_mean="listed"):
        super().__init__()
        unknown = set(edges) - set(EDGES)
        if unknown or edge_type not in ("dynamic", "static"):
            raise ValueError(f"edges must be among {EDGES} (got {sorted(unknown)}), edge_type dynamic or static")
        self.mention_text = nn.Linear(dim_text, dim)
        self.mention_image = nn.Linear(dim_image, dim)
        self.entity_text = nn.Linear(dim_text, dim)
        self.entity_image = nn.Linear(dim_image, dim)
        self.layers = nn.ModuleList(GCNLayer(dim, vector_edges) for _ in range(num_layers))
        self.register_buffer("edge_on", torch.tensor([e in edges for e in EDGES], dtype=torch.float32),
                             persistent=False)
        self.dim, self.dynamic, self.vector_edges = dim, edge_type == "dynamic", vector_edges
        # a mention vertex's messages: the mean over its listed candidates, or over every slot ("all", the released
        # code's torch.mean over C: padded slots and an appended gold slot included)
        self.mention_mean = mention_mean

    def forward(self, batch):
        vertices = {"mt": self.mention_text(batch.mention_text),
                    "mi": self.mention_image(batch.mention_image.mean(-2)),
                    "et": self.entity_text(batch.entity_text),
                    "ei": self.entity_image(batch.entity_image)}
        edges = initial_edges(batch)
        if self.vector_edges:
            edges = {e: v.unsqueeze(-1).expand(-1, -1, self.dim) for e, v in edges.items()}
        mask = batch.mask.to(vertices["mt"].dtype)
        if self.mention_mean == "all":
            mask = torch.ones_like(mask)
        for layer in self.layers:
            # a switched-off edge is zero at every layer's input (the original's gcn_edge_enabled)
            edges = {e: edges[e] * self.edge_on[i] for i, e in enumerate(EDGES)}
            vertices, edges = layer(vertices, edges, mask, self.dynamic)
        return F.cosine_similarity(vertices["mt"].unsqueeze(1), vertices["et"], dim=-1)


def gold_scores(scores, gold):
    """(B,) the gold candidate's score per mention, 0 when its gold is not listed (gold -1: a label row of zeros)."""
    return torch.where(gold >= 0, scores.gather(1, gold.clamp(min=0).unsqueeze(1)).squeeze(1),
                       torch.zeros_like(scores[:, 0]))


def released_triplet_loss(scores, gold, mask, margin=0.25):
    """The released code's TripletLoss (common/utils.py): each mention's gold score g_i against every candidate of
    every mention of the batch, (1/B) sum_i mean_{b,c} max(0, s_bc - g_i + margin).
    scores, mask: (B, C) (an appended gold slot already dropped; padded slots, mask 0, left out of the mean);
    gold: (B,) index or -1."""
    mask = mask.to(scores.dtype)
    hinge = (scores.unsqueeze(0) - gold_scores(scores, gold)[:, None, None] + margin).clamp(min=0)  # (B_i, B, C)
    return ((hinge * mask).sum((1, 2)) / mask.sum().clamp(min=1)).mean()


def per_mention_triplet_loss(scores, gold, mask, margin=0.25):
    """The usual triplet loss: per mention the mean over its own candidates c of max(0, s_c - g + margin), the gold's
    own term (= margin) included; g = 0 when the gold is not listed."""
    mask = mask.to(scores.dtype)
    hinge = (scores - gold_scores(scores, gold).unsqueeze(1) + margin).clamp(min=0) * mask
    return (hinge.sum(1) / mask.sum(1).clamp(min=1)).mean()


LOSSES = {"released": released_triplet_loss, "per_mention": per_mention_triplet_loss}


def gold_ranks(scores, gold, mask, ties="hit"):
    """1-based rank of the gold candidate per mention, 0 when it is not listed. ties="hit" counts candidates that tie
    with the gold as ranked below it (the original's Hits@k: `score >= k-th best`); "miss" ranks them above."""
    gold_score = scores.gather(1, gold.clamp(min=0).unsqueeze(1))
    valid = mask.bool()
    above = (scores > gold_score) & valid
    if ties == "miss":
        others = torch.ones_like(valid).scatter(1, gold.clamp(min=0).unsqueeze(1), False)
        above |= (scores == gold_score) & valid & others
    ranks = above.sum(1) + 1
    return torch.where(gold >= 0, ranks, torch.zeros_like(ranks))

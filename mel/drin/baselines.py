"""The two baselines DRIN's repository ships (baselines/ghmfc.py, baselines/melhi.py; BASELINES.md), on DRIN's data,
batches, training, evaluation and run files (`--method ghmfc`, `--method melhi`).

Both score a mention against each candidate slot by the cosine of two vectors, as DRIN does, and read what DRIN's
batches hold plus the sentence's token states (`mention_tokens`, `mention_token_mask`, `mention_span`: the release's
files have them, `prepare.py drin --token_states` stores them). Faithful by default to the released computations;
where the released code is plainly broken (MEL-HI's last-step read, its gate seeing the gold slot) the fixed
computation is the default and `--protocol original` reproduces the released one.
"""
import torch
import torch.nn.functional as F
from torch import nn


class CrossAttention(nn.Module):
    """GHMFC's CrossAttention(A, B): A attends to B, then that result attends back to A; each attention is followed by
    LayerNorm, a single Linear with a residual and LayerNorm (no residual around the attentions, as released)."""

    def __init__(self, dim_a, dim_b, heads=8, dropout=0.1):
        super().__init__()
        self.a_to_b = nn.MultiheadAttention(dim_a, heads, dropout, kdim=dim_b, vdim=dim_b, batch_first=True)
        self.a_to_b_ffn = nn.Linear(dim_a, dim_a)
        self.b_to_a = nn.MultiheadAttention(dim_a, heads, dropout, batch_first=True)
        self.b_to_a_ffn = nn.Linear(dim_a, dim_a)
        self.norms = nn.ModuleList(nn.LayerNorm(dim_a) for _ in range(4))

    def forward(self, a, a_padding, b, b_padding):
        """a (B, La, dim_a), b (B, Lb, dim_b); paddings True where a position is padding -> (B, La, dim_a)."""
        h = self.norms[0](self.a_to_b(a, b, b, key_padding_mask=b_padding, need_weights=False)[0])
        h = self.norms[1](self.a_to_b_ffn(h) + h)
        o = self.norms[2](self.b_to_a(h, a, a, key_padding_mask=a_padding, need_weights=False)[0])
        return self.norms[3](self.b_to_a_ffn(o) + o)


class GHMFC(nn.Module):
    """GHMFC as DRIN's repository re-implements it: the mention is the gated mix of a text-to-image and an
    image-to-text cross-attention, each max-pooled over its positions (padded token rows included, as released)
    then Linear + GELU; the entity is its text feature through a Linear. The mention span is not used (the released
    final layer is the identity), nor are entity images, objects or CLIP similarities. Scores (B, C)."""

    def __init__(self, dim_text, dim_image, dim=768, heads=8, dropout=0.1):
        super().__init__()
        self.text_to_image = CrossAttention(dim_text, dim_image, heads, dropout)
        self.image_to_text = CrossAttention(dim_image, dim_text, heads, dropout)
        self.text_out = nn.Linear(dim_text, dim)
        self.image_out = nn.Linear(dim_image, dim)
        self.gate = nn.Linear(2 * dim, 2)
        self.entity_text = nn.Linear(dim_text, dim)

    def forward(self, batch):
        tokens, text_padding = batch.mention_tokens, batch.mention_token_mask == 0      # (B, T, Dt), (B, T)
        regions = batch.mention_image                                                  # (B, R, Di), never masked
        region_padding = torch.zeros(regions.shape[:2], dtype=torch.bool, device=regions.device)
        t = F.gelu(self.text_out(self.text_to_image(tokens, text_padding, regions, region_padding).max(1)[0]))
        v = F.gelu(self.image_out(self.image_to_text(regions, region_padding, tokens, text_padding).max(1)[0]))
        alpha = F.softmax(self.gate(torch.cat([t, v], dim=1)), dim=1)                 # (B, 2)
        mention = alpha[:, :1] * t + alpha[:, 1:] * v                                 # (B, dim)
        entity = self.entity_text(batch.entity_text)                                  # (B, C, dim)
        return F.cosine_similarity(mention.unsqueeze(1), entity, dim=-1)


class MELHI(nn.Module):
    """MEL-HI as DRIN's repository re-implements it ("Attention-Based Multimodal Entity Linking with High-Quality
    Images", DASFAA 2021). The image enters only when it passes a hard gate: cos([CLS], mapped mention image) > 0.3
    and some candidate's raw image has cosine > 0.3 with the mention's. Every token of the sentence is extended
    with the mention's span mean and its mapped image; one LSTM reads the left context [1, start) and the right
    context [end, n); their last states give the mention, [entity text; mapped entity image] the entity.

    released=True reproduces the released code's two defects: the "last step" of each context is the packed
    output's row `rank - 1`, i.e. the first step of another mention of the batch (BASELINES.md, MEL-HI quirk 1), and
    the gate's candidate test sees every slot, the appended gold slot included. Otherwise each context's own last
    state is read and the gate sees the listed candidates only."""

    def __init__(self, dim_text, dim_image, threshold=0.3, released=False):
        super().__init__()
        width = 3 * dim_text
        self.image_to_text = nn.Linear(dim_image, dim_text)
        self.lstm = nn.LSTM(width, width)
        self.mention_out = nn.Linear(2 * width, dim_text)
        self.entity_out = nn.Linear(2 * dim_text, dim_text)
        self.threshold, self.released = threshold, released

    def forward(self, batch):
        tokens, mask, span = batch.mention_tokens, batch.mention_token_mask, batch.mention_span   # (B, T, D), ...
        image = batch.mention_image.mean(-2)                                            # (B, Di)
        image_mapped, entity_mapped = self.image_to_text(image), self.image_to_text(batch.entity_image)
        gate = self.gate(batch, image, image_mapped)
        image_mapped = image_mapped * gate[:, None]
        entity_mapped = entity_mapped * gate[:, None, None]
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        inside = ((positions >= span[:, :1]) & (positions < span[:, 1:])).unsqueeze(-1).float()
        word = (tokens * inside).sum(1) / inside.sum(1).clamp(min=1)                    # (B, D) the span mean
        steps = torch.cat([tokens, word.unsqueeze(1).expand_as(tokens),
                           image_mapped.unsqueeze(1).expand_as(tokens)], dim=-1)        # (B, T, 3D)
        lengths = mask.sum(1)
        left = self._last([steps[i, 1:s] for i, s in enumerate(span[:, 0].tolist())])
        right = self._last([steps[i, e:n] for i, (e, n) in enumerate(zip(span[:, 1].tolist(), lengths.tolist()))])
        mention = self.mention_out(torch.cat([left, right], dim=-1))                     # (B, D)
        entity = self.entity_out(torch.cat([batch.entity_text, entity_mapped], dim=-1))  # (B, C, D)
        return F.cosine_similarity(mention.unsqueeze(1), entity, dim=-1)

    def gate(self, batch, image, image_mapped):
        """(B,) 1 where the image is used: cos([CLS], mapped image) > threshold and some candidate's raw image is that
        close to the mention's (every slot when released, the gold slot included; else the listed ones). Hard: no
        gradient flows through it."""
        text_image = F.cosine_similarity(batch.mention_tokens[:, 0], image_mapped, dim=-1)        # (B,)
        image_image = F.cosine_similarity(image.unsqueeze(1).expand_as(batch.entity_image), batch.entity_image,
                                          dim=-1)                                                # (B, C)
        seen = torch.ones_like(batch.mask) if self.released else batch.mask
        return ((text_image > self.threshold) & ((image_image > self.threshold) & seen.bool()).any(1)).float()

    def _last(self, contexts):
        """(B, 3D): per context its LSTM's last state (an empty context reads one zero step, as released)."""
        width = self.lstm.input_size
        contexts = [c if len(c) else c.new_zeros(1, width) for c in contexts]
        packed = nn.utils.rnn.pack_sequence(contexts, enforce_sorted=False)
        output, (last, _) = self.lstm(packed)
        if self.released:
            return output.data[output.unsorted_indices - 1]
        return last[-1]

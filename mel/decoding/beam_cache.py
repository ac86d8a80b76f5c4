"""The KV cache of the fast beam search (decoding.constrained_beam_search): each prompt prefilled once, then laid out
for its beams.

Two layouts, both preallocated for the answer so that a decoding step writes in place (transformers' DynamicLayer
concatenates the whole cache at every step):
- SharedPromptLayer (used where it applies): an example's prompt keys/values are stored once, the answer's once per
  beam. Decoding steps run `shared_prompt_attention`, which attends every beam of an example to the one prompt copy.
  With 5 beams the prompt part of the cache is 5x smaller, and nothing is copied to the beams.
- BeamLayer: the prompt copied into every beam's row, the layout generate() uses; the fallback when the shared
  attention cannot be used (DecodingOptions.share_prompt off, --no-share_prompt: a model whose attention needs more
  than scores and softmax, or bypasses transformers' attention interface).
Models whose cache is not all DynamicLayers (sliding windows, recurrent state) keep the library's own cache.
On CPU the prompts of a batch are prefilled one at a time, unpadded, and a prompt that begins like an earlier one
reuses that one's keys/values for the common part (see _prefill_each).

Rows: row b * K + k of every per-beam tensor is beam k of example b.
"""
import contextlib
import inspect

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.masking_utils import AttentionMaskInterface

SHARED_ATTENTION = "gemel_shared_prompt"  # name registered with transformers' attention interfaces
SHARED_CACHE_KWARG = "gemel_shared_prompt_cache"  # forward kwarg that carries the cache to shared_prompt_attention
_USE_PLAIN_CACHE = ("rerun with --no-share_prompt (DecodingOptions(share_prompt=False)), which copies the prompt to "
                    "every beam and uses the model's own attention")


def last_logits_only(lm):
    """generate() computes only the last position's logits when the model supports it; do the same."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(lm.forward).parameters else {}


def has_plain_layers(lm):
    """True when the model's cache is all DynamicLayers: then the layouts here apply; otherwise the library's cache."""
    try:
        layers = DynamicCache(config=lm.config).layers
    except Exception:  # an unusual config: the library's own cache is always correct
        return False
    return len(layers) > 0 and all(type(layer) is DynamicLayer for layer in layers)


# ----------------------------------------------------------------------------------------------- layouts

class _BufferedLayer(DynamicLayer):
    """keys/values are views of preallocated buffers (rows, heads, room, head_dim), filled up to a length, so that a
    decoding step writes in place."""

    def __init__(self, key_buffer, value_buffer, length):
        super().__init__()
        self.key_buffer, self.value_buffer = key_buffer, value_buffer
        self.dtype, self.device = key_buffer.dtype, key_buffer.device
        self.is_initialized = True
        self._set_length(length)

    def _set_length(self, length):
        self.keys = self.key_buffer[:, :, :length]
        self.values = self.value_buffer[:, :, :length]

    def update(self, key_states, value_states, *args, **kwargs):
        start = self.keys.shape[2]
        end = start + key_states.shape[2]
        if end > self.key_buffer.shape[2]:
            raise RuntimeError(f"beam cache full: room for {self.key_buffer.shape[2]} positions, {end} needed")
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self._set_length(end)
        return self.keys, self.values

    def _select_rows(self, indices):
        length = self.keys.shape[2]
        self.key_buffer = self.key_buffer.index_select(0, indices.to(self.device))
        self.value_buffer = self.value_buffer.index_select(0, indices.to(self.device))
        self._set_length(length)


class BeamLayer(_BufferedLayer):
    """Prompt copied to every beam row: buffers (rows, heads, prompt + max_new, head_dim)."""

    def reorder_answer(self, rows, prompt_length):
        """Rows take the generated positions of `rows`; prompt positions are equal within an example."""
        for states in (self.keys, self.values):
            generated = states[:, :, prompt_length:]
            generated.copy_(generated.index_select(0, rows))  # index_select: far faster than [rows] on a view

    def batch_select_indices(self, indices):
        """Keep (or reorder to) these rows: the library's batch operations act on the whole buffers."""
        self._select_rows(indices)


class SharedPromptLayer(_BufferedLayer):
    """Prompt keys/values once per example (B, heads, T, head_dim), answer keys/values per beam in the buffers
    (B * K, heads, max_new, head_dim). `update` returns the answer part only: the model's attention must be
    `shared_prompt_attention`, which adds the prompt part (see `shared_prompt_attention_for`)."""

    def __init__(self, prompt_keys, prompt_values, prompt_mask, beams, max_new_tokens):
        rows, heads, _, head_dim = prompt_keys.shape
        key_buffer = prompt_keys.new_empty((rows * beams, heads, max_new_tokens, head_dim))
        super().__init__(key_buffer, torch.empty_like(key_buffer), 0)
        self.prompt_keys, self.prompt_values = prompt_keys, prompt_values
        self.prompt_mask = prompt_mask  # (B, T) bool, True on real tokens; None when nothing is padded
        self.beams = beams
        self.attention_calls = 0  # counted by shared_prompt_attention: a model that bypasses it is caught

    def get_seq_length(self):
        return self.prompt_keys.shape[2] + self.keys.shape[2]

    def get_mask_sizes(self, query_length):
        return self.get_seq_length() + query_length, 0

    def reorder_answer(self, rows, prompt_length=None):
        """Beams take the answers of `rows` (rows stay within their example, whose prompt they share)."""
        for states in (self.keys, self.values):
            states.copy_(states.index_select(0, rows))

    def batch_select_indices(self, indices):
        """Keep these beam rows, which must be whole examples (all K beams, in order): finished examples leave."""
        beams = self.beams
        examples = indices.view(-1, beams)[:, 0] // beams
        expected = (examples[:, None] * beams + torch.arange(beams, device=indices.device)).view(-1)
        if not torch.equal(indices, expected):
            raise ValueError("SharedPromptLayer keeps whole examples only (all beams, in order)")
        self.prompt_keys = self.prompt_keys.index_select(0, examples)
        self.prompt_values = self.prompt_values.index_select(0, examples)
        if self.prompt_mask is not None:
            self.prompt_mask = self.prompt_mask.index_select(0, examples)
        self._select_rows(indices)


# ----------------------------------------------------------------------------------------------- shared attention

def shared_prompt_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, softcap=None,
                            **kwargs):
    """Attention of one new token per beam over its example's shared prompt plus its own answer so far.

    query (B*K, heads, 1, D); key/value: the answer part (B*K, kv_heads, t, D) from SharedPromptLayer.update.
    The model's own mask is not needed: the prompt's padding is in the layer, and every answer token is real.
    Returns (B*K, 1, heads, D) like transformers' attention functions. Scores, softmax (float32) and weighted sums
    as in eager attention; grouped-query heads read kv head h // group, as repeat_kv does. The cache arrives as the
    forward kwarg SHARED_CACHE_KWARG, which transformers passes down to attention functions.
    """
    cache = kwargs.get(SHARED_CACHE_KWARG)
    if cache is None or kwargs.get("s_aux") is not None or kwargs.get("position_bias") is not None \
            or query.shape[2] != 1:
        raise NotImplementedError(f"{type(module).__name__}: the shared prompt cache handles one new token of plain "
                                  f"softmax attention reached through transformers' attention interface; "
                                  f"{_USE_PLAIN_CACHE}")
    layer = cache.layers[module.layer_idx]
    layer.attention_calls += 1
    prompt_keys, prompt_values = layer.prompt_keys, layer.prompt_values  # (B, kv_heads, T, D)
    batch_size, kv_heads, prompt_length, head_dim = prompt_keys.shape
    rows, heads = query.shape[:2]
    beams, group, generated = rows // batch_size, heads // kv_heads, key.shape[2]
    scale = head_dim ** -0.5 if scaling is None else scaling

    # Query rows of an example ordered (beam, group) under each kv head: one matmul against its one prompt copy.
    q = query.reshape(batch_size, beams, kv_heads, group, head_dim).permute(0, 2, 1, 3, 4)
    q = q.reshape(batch_size, kv_heads, beams * group, head_dim)
    prompt_scores = torch.matmul(q, prompt_keys.transpose(-1, -2)) * scale            # (B, kv, K*G, T)
    answer_scores = torch.matmul(query.reshape(rows, kv_heads, group, head_dim), key.transpose(-1, -2)) * scale
    answer_scores = answer_scores.view(batch_size, beams, kv_heads, group, generated).permute(0, 2, 1, 3, 4)
    scores = torch.cat([prompt_scores, answer_scores.reshape(batch_size, kv_heads, beams * group, generated)], -1)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if layer.prompt_mask is not None:
        padding = ~layer.prompt_mask[:, None, None, :]  # (B, 1, 1, T)
        scores[..., :prompt_length] = scores[..., :prompt_length].masked_fill(padding, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # (B, kv, K*G, T + t)

    out = torch.matmul(probs[..., :prompt_length], prompt_values)  # (B, kv, K*G, D)
    answer_probs = probs[..., prompt_length:].reshape(batch_size, kv_heads, beams, group, generated)
    answer_probs = answer_probs.permute(0, 2, 1, 3, 4).reshape(rows, kv_heads, group, generated)
    out = out.view(batch_size, kv_heads, beams, group, head_dim).permute(0, 2, 1, 3, 4).reshape(
        rows, kv_heads, group, head_dim) + torch.matmul(answer_probs, value)  # (B*K, kv, G, D)
    return out.reshape(rows, 1, heads, head_dim), None


AttentionInterface.register(SHARED_ATTENTION, shared_prompt_attention)
AttentionMaskInterface.register(SHARED_ATTENTION, lambda *args, **kwargs: None)  # the mask lives in the layers


def is_shared(cache):
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(isinstance(layer, SharedPromptLayer) for layer in layers)


@contextlib.contextmanager
def shared_prompt_attention_for(lm, cache):
    """Within the block the LM's attention is shared_prompt_attention over `cache` (a no-op for other caches).

    Yields the extra forward kwargs that carry the cache to the attention function.
    """
    if not is_shared(cache):
        yield {}
        return
    previous = lm.config._attn_implementation
    for layer in cache.layers:
        layer.attention_calls = 0
    lm.config._attn_implementation = SHARED_ATTENTION
    try:
        yield {SHARED_CACHE_KWARG: cache}
    finally:
        lm.config._attn_implementation = previous
    calls = [layer.attention_calls for layer in cache.layers]
    if calls != [1] * len(calls):  # a model that bypasses transformers' attention interface
        raise RuntimeError(f"{type(lm).__name__}: {sum(c == 1 for c in calls)} of its {len(calls)} attention layers "
                           f"went through transformers' attention interface, so the shared prompt cache cannot be "
                           f"used with it; {_USE_PLAIN_CACHE}")


# ----------------------------------------------------------------------------------------------- prefill and steps

def prefill(lm, inputs_embeds, attention_mask, beams, max_new_tokens, options):
    """Run each prompt once, as generate() does, and lay its cache out for the beams (options: DecodingOptions).

    inputs_embeds (B, T, H), attention_mask (B, T) left-padded. Returns the last logits (B, V) float32; the cache,
    with room for max_new_tokens more positions; the attention mask for decoding steps (B * beams, T), or None when
    nothing is padded (generate() drops an all-ones mask); the next position of each beam row (B * beams,).
    On CPU a padded batch is prefilled one unpadded prompt at a time: SDPA's CPU kernel skips the upper triangle only
    without a mask, and computes every block with one (2.4x slower per token on a 16-demonstration prompt). On a GPU
    one batched forward is what fills the device.
    """
    batch_size, width = attention_mask.shape
    lengths = attention_mask.long().sum(-1)  # (B,)
    padded = bool((lengths < width).any())
    prompt_mask = attention_mask.long() if padded else None  # (B, T)
    mask = None if prompt_mask is None else prompt_mask.repeat_interleave(beams, dim=0)  # (B*K, T)
    positions = lengths.repeat_interleave(beams)  # (B*K,) generate(): position = number of tokens before it
    if not has_plain_layers(lm):
        logits, cache = _prefill_batch(lm, inputs_embeds, prompt_mask)
        cache.batch_repeat_interleave(beams)
        return logits, cache, mask, positions

    if padded and inputs_embeds.device.type in options.prefill_each_on:
        logits, prompt_layers = _prefill_each(lm, inputs_embeds, lengths.tolist(), options.min_shared_prefix)
    else:
        logits, library_cache = _prefill_batch(lm, inputs_embeds, prompt_mask)
        prompt_layers = [(layer.keys, layer.values) for layer in library_cache.layers]  # (B, heads, T, head_dim)
    if options.share_prompt:
        real = None if prompt_mask is None else prompt_mask.bool()  # (B, T) True on real tokens
        layers = [SharedPromptLayer(keys, values, real, beams, max_new_tokens) for keys, values in prompt_layers]
    else:
        layers = [BeamLayer(*(_copy_to_beams(states, beams, max_new_tokens) for states in pair), width)
                  for pair in prompt_layers]
    return logits, Cache(layers=layers), mask, positions


def _copy_to_beams(states, beams, max_new_tokens):
    """(B, heads, T, D) -> buffer (B * beams, heads, T + max_new, D) with each example in its beams' rows."""
    batch_size, heads, width, head_dim = states.shape
    # uninitialised beyond the prompt: every answer position is written before attention reads it
    buffer = states.new_empty((batch_size * beams, heads, width + max_new_tokens, head_dim))
    buffer[:, :, :width].view(batch_size, beams, heads, width, head_dim).copy_(states[:, None])
    return buffer


def _prefill_batch(lm, inputs_embeds, mask):
    """One forward over the batch; position_ids as generate() computes them (0 on padding)."""
    if mask is None:
        position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)[None]
    else:
        position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (B, T)
    out = lm(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids, use_cache=True,
             **last_logits_only(lm))
    return out.logits[:, -1].float(), out.cache


def _prefill_each(lm, inputs_embeds, lengths, min_shared_prefix):
    """One unpadded forward per prompt (exactly generate()'s batch-1 prefill); keys/values left-padded into
    (B, heads, T, D) per layer, zeros under the padding (masked, but stale memory could hold NaN, and 0 * NaN
    would still reach the attention output).

    A prompt that begins like one already prefilled in this batch (GEMEL: the same mention retrieves the same
    demonstrations, so whole demonstration blocks repeat) reuses that prompt's keys/values for the common part and
    runs only the rest: keys/values of position t depend on positions <= t alone.
    """
    batch_size, width = inputs_embeds.shape[:2]
    device = inputs_embeds.device
    logits, prompt_layers = [], None
    for row, length in enumerate(lengths):
        prompt = inputs_embeds[row, width - length:]  # (L, H)
        source, shared = _longest_shared_prefix(inputs_embeds, lengths, row)
        past = None
        if shared >= min_shared_prefix:
            shared = min(shared, length - 1)  # the last position must run: its logits start the answer
            past = DynamicCache()
            start = width - lengths[source]
            for index, buffers in enumerate(prompt_layers):  # copies: the forward appends to them
                past.update(*(buffer[source:source + 1, :, start:start + shared].clone() for buffer in buffers), index)
        else:
            shared = 0
        out = lm(inputs_embeds=prompt[None, shared:], cache=past,
                 position_ids=torch.arange(shared, length, device=device)[None], use_cache=True,
                 **last_logits_only(lm))
        logits.append(out.logits[:, -1].float())
        layers = out.cache.layers  # keys/values (1, heads, length, head_dim)
        if prompt_layers is None:
            prompt_layers = [tuple(states.new_zeros((batch_size, states.shape[1], width, states.shape[3]))
                                   for states in (layer.keys, layer.values)) for layer in layers]
        for layer, buffers in zip(layers, prompt_layers):
            for states, buffer in zip((layer.keys, layer.values), buffers):
                buffer[row, :, width - length:] = states[0]
        del out, layers, past  # free this prompt's cache before the next forward
    return torch.cat(logits), prompt_layers


def _longest_shared_prefix(inputs_embeds, lengths, row):
    """(earlier row, number of leading positions whose embeddings equal this row's); (-1, 0) when none."""
    width = inputs_embeds.shape[1]
    prompt = inputs_embeds[row, width - lengths[row]:]
    best_row, best = -1, 0
    for other in range(row):
        candidate = inputs_embeds[other, width - lengths[other]:]
        limit = min(len(prompt), len(candidate))
        if limit <= best or not torch.equal(prompt[0], candidate[0]):
            continue
        equal = (prompt[:limit] == candidate[:limit]).all(-1)  # (limit,)
        shared = limit if bool(equal.all()) else int(equal.int().argmin())
        if shared > best:
            best_row, best = other, shared
    return best_row, best


def forward_token(lm, tokens, cache, mask, positions):
    """One decoding step for every row: tokens (N,) at positions (N,); mask (N, past + 1) or None."""
    with shared_prompt_attention_for(lm, cache) as shared:
        out = lm(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None],
                 cache=cache, use_cache=True, **last_logits_only(lm), **shared)
    return out.logits[:, -1].float(), out.cache


def reorder_beams(cache, rows, prompt_length):
    """cache.reorder_cache(rows), but moving only the generated positions.

    The prompt positions of all beams of an example are one prompt's, and `rows` never leaves its example, so
    reordering them changes nothing; skipping them saves copying the whole prompt cache every step (on CPU the copy
    costs more than the forward pass). The library's fallback cache is reordered by the library.
    """
    if not is_beam_layout(cache):
        cache.reorder_cache(rows)
        return
    for layer in cache.layers:
        layer.reorder_answer(rows, prompt_length)


def is_beam_layout(cache):
    """Whether the cache is laid out here (so finished examples can leave it), not the library's fallback cache."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(isinstance(layer, (BeamLayer, SharedPromptLayer)) for layer in layers)


def keep_rows(cache, rows):
    """Keep these beam rows (whole examples) in every layer."""
    for layer in cache.layers:
        layer.batch_select_indices(rows)

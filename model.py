"""GEMEL's model: a frozen causal LM plus one trained linear layer mapping an image feature to k prefix tokens.

Plain torch: the prompt batches come from utils.py, decoding is mel/decoding (run by mel/gemel/evaluation.py), and the
checkpoint format (the projector's state dict, as GEMEL's released files) is mel/runs/checkpoints.py.
"""
import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch import nn


class GEMEL(nn.Module):
    """Frozen LM + visual prefix projector (the only trained parameters)."""

    def __init__(self, lm, dim_clip, prefix_length):
        super().__init__()
        self.lm = lm
        lm.requires_grad_(False)  # frozen: nothing of the LM is trained
        self.prefix_length = prefix_length
        self.hidden_size = lm.get_input_embeddings().embedding_dim
        # named `linear` so state_dict keys are weight/bias as in GEMEL's checkpoints; float32 master weights
        with warnings.catch_warnings():  # prefix_length 0 (text only) makes an empty layer, which torch warns about
            warnings.simplefilter("ignore", UserWarning)
            self.linear = nn.Linear(dim_clip, prefix_length * self.hidden_size)
        self.linear.to(input_device(lm))  # where the prompt's embeddings are assembled

    def parameter_counts(self):
        trainable = sum(p.numel() for p in self.linear.parameters())
        frozen = sum(p.numel() for p in self.lm.parameters())
        return trainable, frozen

    def embed(self, batch):
        """inputs_embeds (B, T, H) of a PromptBatch: token embeddings, visual prefixes at image slots."""
        device = self.linear.weight.device
        emb_table = self.lm.get_input_embeddings()
        ids = batch.input_ids.to(device)
        slots = batch.image_tokens.to(device)
        is_image = slots >= 0
        embeds = emb_table(ids.clamp(min=0))  # (B, T, H); image slots get a placeholder row, replaced below
        prefixes = self.linear(batch.images.to(device, self.linear.weight.dtype))  # (N_img, k*H)
        prefixes = prefixes.reshape(-1, self.hidden_size).to(embeds.dtype)  # (N_img*k, H)
        return embeds.masked_scatter(is_image.unsqueeze(-1), prefixes[slots[is_image]])

    def forward(self, batch):
        """Mean cross-entropy over the target tokens of a right-padded training batch."""
        device = self.linear.weight.device
        labels = batch.labels.to(device)
        inputs_embeds = self.embed(batch)
        # Only positions that predict a target token need logits: the LM head (V wide) sees those rows alone.
        targets = labels[:, 1:]                                # position t predicts token t + 1
        rows, cols = (targets != -100).nonzero(as_tuple=True)  # (N,) each
        with _only_rows_reach_the_head(self.lm, rows, cols):
            out = self.lm(inputs_embeds=inputs_embeds, attention_mask=batch.attention_mask.to(device), use_cache=False)
        logits = out.logits.float()  # (N, V), on the LM head's device (the last one with --device_map)
        return F.cross_entropy(logits, targets[rows, cols].to(logits.device)).to(device)


@contextlib.contextmanager
def _only_rows_reach_the_head(lm, rows, cols):
    """Within the block, the LM's output layer gets hidden[rows, cols] (N, H) instead of hidden (B, T, H).

    A hook rather than calling the base model and the head directly, so that whatever a model does to the logits
    after its head (Gemma's soft-capping, Cohere's scale: element-wise) still applies.
    """
    def gather(module, args):
        hidden = args[0]
        return (hidden[rows.to(hidden.device), cols.to(hidden.device)],) + tuple(args[1:])

    handle = lm.get_output_embeddings().register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()


def input_device(lm):
    """Where the LM's input embeddings run: with a device map (offloaded weights sit on `meta`), the device
    accelerate executes the embedding on; else the embedding weight's device."""
    embedding = lm.get_input_embeddings()
    hook = getattr(embedding, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    return embedding.weight.device

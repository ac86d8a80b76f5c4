"""GEMEL's model: a frozen causal LM plus one trained linear layer mapping an image feature to k prefix tokens."""
import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import decoding
import fileio
from loading import input_device
from safeload import DataError, torch_load


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

    @torch.no_grad()
    def generate(self, batch, tree, num_beams, max_new_tokens, method="fast", options=None):
        """Best name per example of a left-padded batch (token ids without EOS, and scores).

        method: "fast" (decoding.constrained_beam_search, run as `options` says) or "reference" (transformers'
        generate()); both score a name as GEMEL's original did: its log-probabilities, EOS included, summed and
        divided by that length.
        """
        inputs_embeds = self.embed(batch)
        mask = batch.attention_mask.to(inputs_embeds.device)
        if method == "reference":
            return decoding.generate_reference(self.lm, inputs_embeds, mask, tree, num_beams=num_beams,
                                               max_new_tokens=max_new_tokens)
        return decoding.constrained_beam_search(self.lm, inputs_embeds, mask, tree, num_beams=num_beams,
                                                max_new_tokens=max_new_tokens, options=options)


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


# ----------------------------------------------------------------------------- GEMEL's checkpoint format

_CHECKPOINT_REMEDY = "Download it again, or train one with `python main.py` (same flags)."

def save_checkpoint(model, path):
    """GEMEL's format: torch.save of the linear layer's state dict {weight, bias} in float16, written atomically."""
    state = {k: v.detach().to("cpu", torch.float16).clone() for k, v in model.linear.state_dict().items()}
    fileio.torch_save(state, path)


def read_checkpoint(path):
    """A GEMEL checkpoint's state dict, read with torch's weights-only unpickler (safeload.torch_load): a checkpoint
    is tensors, never code. Scripts read it before loading the LM, so that a damaged file fails at once."""
    state = torch_load(path, "checkpoint", _CHECKPOINT_REMEDY)
    if _tensor_shapes(state) is None:
        what = "a dict whose values are not all tensors" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise DataError(f"{path}: holds {what}, not GEMEL's checkpoint (a dict of tensors {{weight, bias}}). "
                        f"{_CHECKPOINT_REMEDY}")
    return state


def load_checkpoint(model, path, state=None):
    """Load a GEMEL checkpoint (the released ones load unchanged; `state` if already read); weights become the
    projector's float32."""
    state = read_checkpoint(path) if state is None else state
    expected = {k: tuple(v.shape) for k, v in model.linear.state_dict().items()}
    got = _tensor_shapes(state)
    if got != expected:
        raise DataError(f"{path}: holds {got}, but this model's projector needs {expected} "
                        f"(--visual_prefix_length x hidden size of the LM, --dim_clip). Was it trained with "
                        f"another LM or prefix length? Pass the --model_name, --visual_prefix_length and "
                        f"--dim_clip it was trained with.")
    model.linear.load_state_dict({k: v.float() for k, v in state.items()})


def _tensor_shapes(state):
    """{key: shape} of a dict of tensors, or None for anything else."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None
    return {k: tuple(v.shape) for k, v in state.items()}


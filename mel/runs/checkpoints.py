"""The two checkpoint formats, read without running code (torch's weights-only unpickler).

- A projector checkpoint is GEMEL's released format: torch.save of the visual prefix projector's state dict
  {weight: [k*hidden, dim_clip], bias: [k*hidden]} in float16. The released files load unchanged and ours load in
  the original code.
- A model checkpoint holds a whole trained model (DRIN): {"state_dict": its tensors, "architecture": the flags that
  rebuild it}.
Scripts read a checkpoint before loading anything expensive, so that a damaged file fails at once.
"""
import torch

from mel.errors import DataError
from mel.io.atomic import torch_save
from mel.io.safeload import torch_load

_PROJECTOR_REMEDY = "Download it again, or train one with `python main.py` (same flags)."


# ----------------------------------------------------------------------------- GEMEL: the projector

def save_projector_checkpoint(projector, path):
    """The projector's state dict {weight, bias} in float16, written atomically."""
    state = {k: v.detach().to("cpu", torch.float16).clone() for k, v in projector.state_dict().items()}
    torch_save(state, path)


def read_projector_checkpoint(path):
    """A projector checkpoint's state dict (GEMEL's released format): a dict of tensors, never code."""
    state = torch_load(path, "checkpoint", _PROJECTOR_REMEDY)
    if _tensor_shapes(state) is None:
        what = "a dict whose values are not all tensors" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise DataError(f"{path}: holds {what}, not GEMEL's checkpoint (a dict of tensors {{weight, bias}}). "
                        f"{_PROJECTOR_REMEDY}")
    return state


def load_projector_checkpoint(projector, path, state=None):
    """Load a projector checkpoint (`state` if already read) into `projector`; its weights stay float32."""
    state = read_projector_checkpoint(path) if state is None else state
    expected = {k: tuple(v.shape) for k, v in projector.state_dict().items()}
    got = _tensor_shapes(state)
    if got != expected:
        raise DataError(f"{path}: holds {got}, but this model's projector needs {expected} "
                        f"(--visual_prefix_length x hidden size of the LM, --dim_clip). Was it trained with "
                        f"another LM or prefix length? Pass the --model_name, --visual_prefix_length and "
                        f"--dim_clip it was trained with.")
    projector.load_state_dict({k: v.float() for k, v in state.items()})


def _tensor_shapes(state):
    """{key: shape} of a dict of tensors, or None for anything else."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None
    return {k: tuple(v.shape) for k, v in state.items()}


# ----------------------------------------------------------------------------- a whole model (DRIN)

def save_model_checkpoint(model, architecture, path):
    torch_save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "architecture": dict(architecture)}, path)


def read_model_checkpoint(path, architecture_keys, method):
    """{"state_dict", "architecture"} of a `method` checkpoint whose architecture has exactly the keys and types of
    `architecture_keys` ({key: type})."""
    saved = torch_load(path, f"{method} checkpoint", f"Train one with `python main.py --method {method.lower()}`.")
    if not isinstance(saved, dict) or set(saved) != {"state_dict", "architecture"} \
            or not isinstance(saved["architecture"], dict) or set(saved["architecture"]) != set(architecture_keys):
        raise DataError(f"{path}: not a {method} checkpoint of this version (expected state_dict and architecture)")
    for key, kind in architecture_keys.items():
        value = saved["architecture"][key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise DataError(f"{path}: architecture {key!r} is {value!r}, not {kind.__name__}; not a checkpoint "
                            f"this version wrote")
    return saved


def load_model_checkpoint(model, path, saved):
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as error:
        raise DataError(f"{path}: does not fit these features ({str(error).splitlines()[0]}); evaluate with the "
                        f"feature files it was trained on") from None

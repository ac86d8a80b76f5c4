"""GEMEL's checkpoint format: a float16 state dict {weight, bias} of the projector, loadable both ways."""
import pytest
import torch
from torch import nn

from mel.errors import DataError
from mel.runs.checkpoints import load_projector_checkpoint, save_projector_checkpoint
from model import GEMEL
from tiny import tiny_opt


def test_round_trip_in_gemel_format(tmp_path, tokenizer):
    model = GEMEL(tiny_opt(len(tokenizer)), dim_clip=16, prefix_length=4)
    path = tmp_path / "smollm2-135m_demo_linear_4token_8examples.pkl"
    save_projector_checkpoint(model.linear, path)
    state = torch.load(path, weights_only=True)
    assert set(state) == {"weight", "bias"}
    assert state["weight"].shape == (4 * 32, 16) and state["weight"].dtype == torch.float16
    # what the original code does with it: load into an fp16 nn.Linear of the same shape
    original = nn.Linear(16, 4 * 32, dtype=torch.float16)
    original.load_state_dict(state)
    torch.testing.assert_close(original.weight.float(), model.linear.weight, atol=1e-3, rtol=1e-3)

    other = GEMEL(tiny_opt(len(tokenizer), seed=1), dim_clip=16, prefix_length=4)
    load_projector_checkpoint(other.linear, path)
    assert other.linear.weight.dtype == torch.float32  # master weights stay float32
    torch.testing.assert_close(other.linear.weight, state["weight"].float())


def test_released_style_checkpoint_loads_and_shape_mismatch_is_explained(tmp_path, tokenizer):
    # a checkpoint written like the original: torch.save of an fp16 Linear's state dict
    path = tmp_path / "released.pkl"
    torch.save(nn.Linear(16, 2 * 32, dtype=torch.float16).state_dict(), path)
    model = GEMEL(tiny_opt(len(tokenizer)), dim_clip=16, prefix_length=2)
    load_projector_checkpoint(model.linear, path)
    wrong = GEMEL(tiny_opt(len(tokenizer)), dim_clip=16, prefix_length=4)
    with pytest.raises(DataError, match=r"released\.pkl: holds .*--visual_prefix_length"):
        load_projector_checkpoint(wrong.linear, path)

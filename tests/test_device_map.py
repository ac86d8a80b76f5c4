"""--device_map: the frozen LM placed module by module by accelerate (here CPU and disk offload, what a machine without
GPUs allows) decodes with the fast path and trains the projector exactly as the LM in one piece does."""
import json

import pytest
import torch

import infe
import main as train_script
from tiny import tiny_run_flags

# the tiny OPT's modules: the second decoder layer's weights live on disk and are loaded for each forward
SPLIT_MAP = {"model.decoder.embed_tokens": "cpu", "model.decoder.embed_positions": "cpu",
             "model.decoder.final_layer_norm": "cpu", "model.decoder.layers.0": "cpu", "model.decoder.layers.1": "disk",
             "lm_head": "cpu"}


@pytest.fixture(scope="module")
def one_piece(tmp_path_factory, tiny_dataset, tiny_opt_dir):
    out = tmp_path_factory.mktemp("one-piece")
    flags = tiny_run_flags(tiny_dataset, tiny_opt_dir, out, "--train_epoch", "1", "--lr", "1e-3", "--accum_iter", "2",
                           "--do_eval", "--no-do_test")
    train_script.main(flags)
    infe.main(flags + ["--split", "dev", "--predictions_file", str(out / "dev.jsonl")])
    return {"out": out, "flags": flags}


def records(path):
    return [json.loads(line) for line in open(path)]


@pytest.mark.parametrize("placement", [["--device_map", json.dumps(SPLIT_MAP)],
                                       ["--device_map", "auto", "--max_memory", "cpu=60KB"]],
                         ids=["explicit map with a disk layer", "auto with too little memory"])
def test_placed_lm_decodes_and_trains_as_one_piece(one_piece, tiny_dataset, tiny_opt_dir, tmp_path, placement, capsys):
    out = tmp_path / "placed"
    flags = tiny_run_flags(tiny_dataset, tiny_opt_dir, out, "--train_epoch", "1", "--lr", "1e-3", "--accum_iter", "2",
                           "--do_eval", "--no-do_test", *placement, "--offload_folder", str(tmp_path / "offload"))
    train_script.main(flags)
    assert "disk" in capsys.readouterr().out  # some weights were really offloaded
    name = "tiny-opt0_tiny_linear_4token_2examples.pkl"
    placed = torch.load(out / "ckpt" / name, weights_only=True)
    reference = torch.load(one_piece["out"] / "ckpt" / name, weights_only=True)
    for key in reference:  # the same projector after training (float16 checkpoints)
        torch.testing.assert_close(placed[key].float(), reference[key].float(), atol=2e-3, rtol=0)
    infe.main(one_piece["flags"] + ["--split", "dev", "--predictions_file", str(tmp_path / "dev.jsonl"), *placement,
                                    "--offload_folder", str(tmp_path / "offload2")])
    a, b = records(one_piece["out"] / "dev.jsonl"), records(tmp_path / "dev.jsonl")
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]
    for x, y in zip(a, b):
        assert x["score"] == pytest.approx(y["score"], abs=1e-4)


def test_bad_placement_flags_are_named(tiny_dataset, tiny_opt_dir, tmp_path, capsys):
    flags = tiny_run_flags(tiny_dataset, tiny_opt_dir, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        infe.main(flags + ["--device_map", "{not json"])
    assert exit_info.value.code == 2  # argparse's usage error, before anything loads
    assert "--device_map: auto, balanced, balanced_low_0, sequential, or a JSON object" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        infe.main(flags + ["--max_memory", "cpu=1GiB"])  # without --device_map
    assert exit_info.value.code == 2 and "--max_memory is for --device_map" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="'no.such.module' is not a module of"):
        train_script.main(flags + ["--device_map", json.dumps({**SPLIT_MAP, "no.such.module": "cpu"})])
    partial = {k: v for k, v in SPLIT_MAP.items() if k != "model.decoder.layers.1"}
    with pytest.raises(SystemExit, match="places no device for model.decoder.layers.1"):
        train_script.main(flags + ["--overwrite", "--device_map", json.dumps(partial)])

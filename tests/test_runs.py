"""Runs never overwrite each other, resume exactly or refuse, and bad input fails before the LM loads.

Each error case asserts that the message names the file (or flag) and what to do, and that the scripts end with that
one line (SystemExit), not a traceback.
"""
import json
import os
import shutil

import pytest
import torch

import infe
import main as train_script
from mel.gemel import experiment
from tiny import tiny_run_flags

RUN = "tiny-opt0_tiny_linear_4token_2examples"


def flags(data, model_dir, out, *extra):
    return tiny_run_flags(data, model_dir, out, "--train_epoch", "1", "--lr", "1e-3", *extra, max_new_tokens=4)


def exits_with(argv, script=train_script):
    with pytest.raises(SystemExit) as raised:
        script.main(argv)
    return str(raised.value)


@pytest.fixture
def no_lm_load(monkeypatch):
    """Fail the test if the LM is loaded: the checks under test must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the LM was loaded before the bad input was found")

    monkeypatch.setattr(experiment, "load_lm", refuse)


@pytest.fixture
def dataset_copy(tmp_path, tiny_dataset):
    """A private copy of the tiny dataset folder that a test may break."""
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset["folder"], root / "tiny")
    return {**tiny_dataset, "data_dir": str(root), "folder": str(root / "tiny")}


# ----------------------------------------------------------------------------------------------- runs stay apart

def test_a_second_run_in_the_same_folder_is_refused_until_overwrite(tmp_path, tiny_dataset, tiny_opt_dir):
    first = flags(tiny_dataset, tiny_opt_dir, tmp_path, "--no-do_test")
    train_script.main(first)
    checkpoint = tmp_path / "ckpt" / f"{RUN}.pkl"
    before = checkpoint.read_bytes()
    message = exits_with(first[:-1] + ["--lr", "1e-4", "--no-do_test"])
    assert str(tmp_path / "ckpt") in message and "--resume" in message and "--overwrite" in message
    assert checkpoint.read_bytes() == before  # untouched
    train_script.main(first + ["--overwrite", "--lr", "1e-2"])
    assert json.loads((tmp_path / "ckpt" / f"{RUN}.json").read_text())["lr"] == 1e-2
    metrics = [json.loads(line) for line in open(tmp_path / "log" / f"{RUN}.metrics.jsonl")]
    assert [r["step"] for r in metrics if "dev_acc" in r] == [12]  # the replaced run's rows are gone


def test_infe_never_overwrites_predictions(tmp_path, tiny_dataset, tiny_opt_dir):
    common = flags(tiny_dataset, tiny_opt_dir, tmp_path)
    train_script.main(common + ["--train_epoch", "0"])
    main_predictions = tmp_path / "ckpt" / f"{RUN}.test.predictions.jsonl"
    before = main_predictions.read_bytes()
    infe.main(common)
    assert main_predictions.read_bytes() == before
    ours = tmp_path / "ckpt" / f"{RUN}.infe.test.predictions.jsonl"
    assert len(ours.read_text().splitlines()) == 3
    message = exits_with(common, infe)
    assert str(ours) in message and "--overwrite" in message and "--predictions_file" in message
    infe.main(common + ["--overwrite"])


def test_resume_with_changed_flags_is_refused_with_the_differences(tmp_path, tiny_dataset, tiny_opt_dir,
                                                                   crash_at_evaluation):
    common = flags(tiny_dataset, tiny_opt_dir, tmp_path, "--accum_iter", "2", "--do_eval_steps", "4",
                   "--no-do_test")
    crash_at_evaluation(train_script, common)
    message = exits_with(common + ["--resume", "--lr", "5e-4", "--train_bs", "2"])
    assert f"{RUN}.train_state.pt" in message and "--lr 0.001 -> 0.0005" in message
    assert "--train_bs 1 -> 2" in message
    train_script.main(common + ["--resume", "--eval_bs", "3"])  # speed-only flags may change


def spy_on_saves(monkeypatch):
    saved_steps = []
    real_save = train_script.runs.save_state

    def spy(path, model, optimizer, scheduler, progress, config):
        saved_steps.append(progress["global_step"])
        return real_save(path, model, optimizer, scheduler, progress, config)

    monkeypatch.setattr(train_script.runs, "save_state", spy)
    return saved_steps


def test_state_is_saved_every_save_steps_optimizer_steps(tmp_path, tiny_dataset, tiny_opt_dir, monkeypatch):
    saved_steps = spy_on_saves(monkeypatch)
    train_script.main(flags(tiny_dataset, tiny_opt_dir, tmp_path, "--accum_iter", "2", "--save_steps", "2",
                            "--no-do_test"))
    assert saved_steps == [4, 8, 12, 12]  # every 2nd optimizer step of 2 micro-steps, then at the end


def test_evaluation_inside_an_accumulation_window_resumes_exactly(tmp_path, tiny_dataset, tiny_opt_dir,
                                                                  monkeypatch, crash_at_evaluation):
    """Dev evaluation every 6 micro-steps inside 4-step accumulation windows (as the paper preset: 5000 % 16 = 8):
    the state holds no accumulated gradients, so it is saved at the next optimizer step, and resuming gives the
    uninterrupted run's projector and metrics exactly."""
    def run_flags(out):
        return flags(tiny_dataset, tiny_opt_dir, out, "--train_epoch", "2", "--accum_iter", "4",
                     "--do_eval_steps", "6", "--no-do_test")

    train_script.main(run_flags(tmp_path / "whole"))
    saved_steps = spy_on_saves(monkeypatch)
    crash_at_evaluation(train_script, run_flags(tmp_path / "crashed"))  # at step 12
    assert saved_steps == [8]  # after the evaluation at step 6, at the optimizer step that closes its window
    train_script.main(run_flags(tmp_path / "crashed") + ["--resume"])

    whole = torch.load(tmp_path / "whole" / "ckpt" / f"{RUN}.train_state.pt", weights_only=True)
    resumed = torch.load(tmp_path / "crashed" / "ckpt" / f"{RUN}.train_state.pt", weights_only=True)
    assert resumed["progress"]["global_step"] == whole["progress"]["global_step"] == 24
    for key in ("weight", "bias"):
        torch.testing.assert_close(resumed["weights"][key], whole["weights"][key], rtol=0, atol=0)
    timing = ("time", "saved", "dev_examples_per_s")  # wall clock, and where the checkpoint went
    rows = {name: [{k: v for k, v in json.loads(line).items() if k not in timing}
                   for line in open(tmp_path / name / "log" / f"{RUN}.metrics.jsonl")] for name in ("whole", "crashed")}
    assert rows["crashed"] == rows["whole"]  # no row twice, the same averages


def test_checkpoint_of_another_setting_is_refused(tmp_path, tiny_dataset, tiny_opt_dir, no_lm_load):
    """k=4 x hidden 32 and k=2 x hidden 64 give the same weight shape: the saved config tells them apart."""
    common = flags(tiny_dataset, tiny_opt_dir, tmp_path)
    os.makedirs(tmp_path / "ckpt")
    torch.save({"weight": torch.zeros(128, 1024), "bias": torch.zeros(128)}, tmp_path / "ckpt" / f"{RUN}.pkl")
    (tmp_path / "ckpt" / f"{RUN}.json").write_text(json.dumps({"model_name": "other-lm", "visual_prefix_length": 2}))
    message = exits_with(common, infe)
    assert f"{RUN}.pkl" in message and "--visual_prefix_length 2 (checkpoint) vs 4 (now)" in message
    assert "--model_name other-lm" in message


# ----------------------------------------------------------------------------------------------- early, clear errors

def test_all_nil_test_split_is_an_error_not_zero_accuracy(tmp_path, dataset_copy, tiny_opt_dir, no_lm_load):
    with open(os.path.join(dataset_copy["folder"], "test.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps({"text": "Hans baked.", "mention": "Hans", "target": "NIL", "golden": "NIL",
                            "img_url": "test/0.jpg"}) + "\n")
    message = exits_with(flags(dataset_copy, tiny_opt_dir, tmp_path) + ["--train_epoch", "0"])
    assert "test.json" in message and "no non-NIL examples" in message


def test_empty_dev_split_is_an_error(tmp_path, dataset_copy, tiny_opt_dir, no_lm_load):
    open(os.path.join(dataset_copy["folder"], "dev.json"), "w").close()
    message = exits_with(flags(dataset_copy, tiny_opt_dir, tmp_path))
    assert "dev.json" in message and "best checkpoint" in message


def test_more_demonstrations_than_training_examples_is_an_error(tmp_path, tiny_dataset, tiny_opt_dir, no_lm_load):
    argv = flags(tiny_dataset, tiny_opt_dir, tmp_path)
    argv[argv.index("--ICL_examples_num") + 1] = "40"
    message = exits_with(argv)
    assert "--ICL_examples_num 40" in message and "train.json" in message and "12" in message


def test_misspelled_model_and_missing_cuda_fail_at_once(tmp_path, tiny_dataset, tiny_opt_dir, no_lm_load):
    message = exits_with(flags(tiny_dataset, "smollm2-135", tmp_path))
    assert "'smollm2-135'" in message and "smollm2-135m" in message
    argv = flags(tiny_dataset, tiny_opt_dir, tmp_path)
    argv[argv.index("--simcse_model") + 1] = "minilm-l"
    message = exits_with(argv)
    assert "--simcse_model 'minilm-l'" in message and "minilm-l6" in message
    if not torch.cuda.is_available():
        message = exits_with(flags(tiny_dataset, tiny_opt_dir, tmp_path) + ["--device", "cuda"])
        assert "--device cuda" in message and "--device cpu" in message


def test_unwritable_checkpoint_folder_fails_before_training(tmp_path, tiny_dataset, tiny_opt_dir, no_lm_load):
    blocker = tmp_path / "ckpt"
    blocker.write_text("a file where the folder should be")
    message = exits_with(flags(tiny_dataset, tiny_opt_dir, tmp_path))
    assert "--ckpt_dir" in message and str(blocker) in message


def test_nonfinite_loss_stops_training_and_keeps_no_nan_checkpoint(tmp_path, dataset_copy, tiny_opt_dir,
                                                                    monkeypatch):
    real_load = train_script.load_experiment

    def with_nan_projector(*args):
        exp = real_load(*args)
        with torch.no_grad():
            exp.model.linear.bias[0] = float("inf")
        return exp

    monkeypatch.setattr(train_script, "load_experiment", with_nan_projector)
    message = exits_with(flags(dataset_copy, tiny_opt_dir, tmp_path))
    assert "training loss is" in message and "train.json lines" in message and "--lr" in message
    assert not (tmp_path / "ckpt" / f"{RUN}.pkl").exists()


# ----------------------------------------------------------------------------------------------- sensible behaviour

def test_prompts_longer_than_the_context_drop_their_least_similar_demonstrations(tmp_path, tiny_dataset,
                                                                                 tokenizer, capsys):
    """A 2-layer OPT with 160 positions: some 2-demonstration prompts do not fit; they keep their most similar
    demonstrations (the last ones) and every prompt plus its answer fits."""
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                       num_attention_heads=4, max_position_embeddings=160, word_embed_proj_dim=32,
                       bos_token_id=2, eos_token_id=2, pad_token_id=1)
    lm = OPTForCausalLM(config)
    folder = tmp_path / "short-opt"
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    args = train_script.params.parse_args(flags(tiny_dataset, str(folder), tmp_path))
    full = experiment.load_experiment(train_script.params.parse_args(flags(tiny_dataset, str(folder), tmp_path)
                                                                    + ["--max_new_tokens", "1"]), ["dev"])
    capsys.readouterr()
    args.max_new_tokens = 60
    exp = experiment.load_experiment(args, ["dev", "train"])
    printed = capsys.readouterr().out
    dev = exp.splits["dev"]
    shortened = [i for i, d in enumerate(dev.demos) if len(d) < 2]
    assert shortened and f"dev: {len(shortened)} of 4 prompts" in printed
    for ex, demos, full_demos in zip(dev.examples, dev.demos, full.splits["dev"].demos):
        assert demos == full_demos[len(full_demos) - len(demos):]  # the most similar ones stay
        assert exp.builder.prompt_length(ex, demos) + 60 <= 160
    for ex, demos in zip(exp.splits["train"].examples, exp.splits["train"].demos):
        assert exp.builder.prompt_length(ex, demos, with_target=True) <= 160


def test_gold_names_missing_from_the_tree_are_reported(tmp_path, dataset_copy, tiny_opt_dir, capsys):
    entities = os.path.join(dataset_copy["folder"], "entities.txt")
    names = open(entities, encoding="utf-8").read().split("\n")
    with open(entities, "w", encoding="utf-8") as f:
        f.write("\n".join(n for n in names if n not in ("Michael Jordan", "Mercury (planet)")))
    for tree in os.listdir(dataset_copy["folder"]):
        if tree.startswith("prefix_tree_"):
            os.remove(os.path.join(dataset_copy["folder"], tree))
    args = train_script.params.parse_args(flags(dataset_copy, tiny_opt_dir, tmp_path))
    experiment.load_experiment(args, ["dev"])
    assert "2 of 4 dev gold names are not in the prefix tree" in capsys.readouterr().out


def test_an_edited_entity_list_rebuilds_the_cached_tree(tmp_path, dataset_copy, tiny_opt_dir, capsys):
    args = train_script.params.parse_args(flags(dataset_copy, tiny_opt_dir, tmp_path))
    first = experiment.load_experiment(args, ["dev"]).tree
    entities = os.path.join(dataset_copy["folder"], "entities.txt")
    with open(entities, "a", encoding="utf-8") as f:
        f.write("\nA Name Added Later\n")
    capsys.readouterr()
    second = experiment.load_experiment(args, ["dev"]).tree
    assert "entities.txt changed after" in capsys.readouterr().out
    assert len(second) == len(first) + 1
    third = experiment.load_experiment(args, ["dev"]).tree  # now up to date: loaded, not rebuilt
    assert len(third) == len(second) and "changed after" not in capsys.readouterr().out


def test_missing_trie_file_is_named(tmp_path, tiny_dataset, tiny_opt_dir, no_lm_load):
    message = exits_with(flags(tiny_dataset, tiny_opt_dir, tmp_path) + ["--trie_file", "no_such_tree.marisa"])
    assert "--trie_file" in message and "no_such_tree.marisa" in message and "prepare.py trie" in message


def test_a_damaged_checkpoint_fails_before_the_lm_loads(tmp_path, tiny_dataset, tiny_opt_dir, no_lm_load):
    os.makedirs(tmp_path / "ckpt")
    (tmp_path / "ckpt" / f"{RUN}.pkl").write_bytes(os.urandom(300))
    message = exits_with(flags(tiny_dataset, tiny_opt_dir, tmp_path), infe)
    assert f"{RUN}.pkl" in message and "weights_only=False" not in message


def test_report_to_a_missing_tracker_fails_before_the_lm(tmp_path, tiny_dataset, tiny_opt_dir, no_lm_load):
    from accelerate.utils import is_tensorboard_available

    if is_tensorboard_available():
        pytest.skip("tensorboard is installed here")
    message = exits_with(flags(tiny_dataset, tiny_opt_dir, tmp_path) + ["--report_to", "tensorboard"])
    assert "--report_to tensorboard" in message and "pip install tensorboard" in message


def test_every_metrics_row_reaches_the_tracker(tmp_path, tiny_dataset, tiny_opt_dir, monkeypatch):
    """--report_to: the numbers of each metrics row are logged at its step, and the tracker is closed once."""
    logged, closed = [], []

    class Recorder:
        def log(self, values, step):
            logged.append((step, values))

        def end_training(self):
            closed.append(True)

    monkeypatch.setattr(train_script, "check_tracker", lambda report_to: None)
    monkeypatch.setattr(train_script, "start_tracker", lambda *a: Recorder())
    train_script.main(flags(tiny_dataset, tiny_opt_dir, tmp_path, "--report_to", "tensorboard"))
    rows = [json.loads(line) for line in open(tmp_path / "log" / f"{RUN}.metrics.jsonl")]
    assert [step for step, _ in logged] == [r["step"] for r in rows] and closed == [True]
    for (_, values), row in zip(logged, rows):
        assert values == {k: v for k, v in row.items() if k not in ("step", "time", "checkpoint", "saved")}
    assert {"train_loss", "lr"} <= set(logged[0][1]) and any("test_acc" in v for _, v in logged)

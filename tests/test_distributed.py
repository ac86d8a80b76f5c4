"""Data parallelism (mel/runs/processes.py): 2 CPU processes over gloo give what one process gives.

The multi-process runs are real launches (`accelerate launch` for infe.py, `torchrun` for main.py) of the scripts as
subprocesses; the one-process runs are the scripts called in this process, as the other tests call them.
"""
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

import infe
import main as train_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(importlib.util.find_spec("accelerate") is None or not torch.distributed.is_available(),
                                reason="accelerate or torch.distributed is not available")
MODEL = "tiny-opt-nodrop"
RUN = f"{MODEL}_tiny_linear_4token_2examples"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_opt_dir):
    """The tiny OPT without dropout: with dropout each process draws its own masks (equal only in distribution)."""
    folder = tmp_path_factory.mktemp("models") / MODEL
    shutil.copytree(tiny_opt_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def flags(data, model_dir, out, *extra):
    return ["--data_dir", data["data_dir"], "--dataset", "tiny", "--model_name", model_dir,
            "--simcse_model", data["simcse_model"], "--ment_embed_file", data["ment_embed_file"],
            "--ckpt_dir", str(out / "ckpt"), "--log_dir", str(out / "log"), "--ICL_examples_num", "2",
            "--max_new_tokens", "4", "--eval_bs", "1", "--device", "cpu", *extra]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(launcher, script, argv, timeout=240):
    """Run `script` on 2 processes with `launcher` ("accelerate" or "torchrun"); the completed process."""
    if launcher == "accelerate":  # --multi_gpu starts N processes through torchrun; on CPU they join over gloo
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port())]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port())]
    # GEMEL_CACHE is the session's (conftest); PYTHONPATH for a wrapper script outside the repository
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": REPO}
    script = script if os.path.isabs(script) else os.path.join(REPO, script)
    return subprocess.run(cmd + [script, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def assert_same_records(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert {k: v for k, v in a.items() if k not in ("score", "ranked")} == \
               {k: v for k, v in b.items() if k not in ("score", "ranked")}
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)
        assert [r["name"] for r in a["ranked"]] == [r["name"] for r in b["ranked"]]
        assert [r["score"] for r in a["ranked"]] == pytest.approx([r["score"] for r in b["ranked"]], abs=1e-6)


def test_infe_on_two_processes_writes_what_one_process_writes(tmp_path, tiny_dataset, model_dir):
    common = flags(tiny_dataset, model_dir, tmp_path, "--train_epoch", "0", "--lr", "1e-3")
    train_script.main(common + ["--no-do_test"])  # the projector at initialisation, as a checkpoint
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    accuracy = infe.main(common + ["--split", "dev", "--predictions_file", str(one)])
    proc = ok(launch("accelerate", "infe.py", common + ["--split", "dev", "--predictions_file", str(two)]))
    assert_same_records(read_jsonl(one), read_jsonl(two))
    assert len(read_jsonl(two)) == 4
    summary_one = json.loads((tmp_path / "one.summary.json").read_text())
    summary_two = json.loads((tmp_path / "two.summary.json").read_text())
    timing = ("seconds", "examples_per_s")
    assert {k: v for k, v in summary_two.items() if k not in timing} == \
           pytest.approx({k: v for k, v in summary_one.items() if k not in timing}, abs=1e-9)
    assert summary_two["accuracy"] == accuracy
    assert proc.stdout.count("Wrote 4 predictions") == 1  # the main process alone prints
    assert proc.stdout.count("acc: ") == 1


# 12 training examples, 4 micro-batches per optimizer step: 3 steps; a dev evaluation inside a window (step 6)
TRAIN_ARGV = ["--train_epoch", "1", "--accum_iter", "4", "--do_eval_steps", "6", "--save_steps", "1", "--lr", "1e-2"]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, tiny_dataset, model_dir):
    """The one-process run the multi-process runs must equal: its folder and main.py's result."""
    single = tmp_path_factory.mktemp("single")
    result = train_script.main(flags(tiny_dataset, model_dir, single, *TRAIN_ARGV))
    return single, result


def assert_same_run(single, multi):
    state_one = torch.load(single / "ckpt" / f"{RUN}.train_state.pt", weights_only=True)
    state_two = torch.load(multi / "ckpt" / f"{RUN}.train_state.pt", weights_only=True)
    for key in ("weight", "bias"):
        torch.testing.assert_close(state_two["weights"][key], state_one["weights"][key], atol=1e-5, rtol=1e-4)
        assert not torch.equal(state_one["weights"][key], state_two["weights"][key] * 0)  # it trained
    assert state_two["progress"]["global_step"] == state_one["progress"]["global_step"] == 12
    assert state_two["progress"]["loss_sum"] == pytest.approx(state_one["progress"]["loss_sum"], abs=1e-5)

    metrics_one = read_jsonl(single / "log" / f"{RUN}.metrics.jsonl")
    metrics_two = read_jsonl(multi / "log" / f"{RUN}.metrics.jsonl")
    assert [sorted(r) for r in metrics_two] == [sorted(r) for r in metrics_one]  # the same rows, written once
    assert [r["step"] for r in metrics_two if "dev_acc" in r] == [6, 12]
    for a, b in zip(metrics_one, metrics_two):
        for key in ("dev_acc", "dev_mrr", "test_acc", "test_mrr", "train_loss", "lr"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-5), key
    config = json.loads((multi / "ckpt" / f"{RUN}.json").read_text())
    assert config["best_dev_acc"] == json.loads((single / "ckpt" / f"{RUN}.json").read_text())["best_dev_acc"]
    assert_same_records(read_jsonl(single / "ckpt" / f"{RUN}.test.predictions.jsonl"),
                        read_jsonl(multi / "ckpt" / f"{RUN}.test.predictions.jsonl"))
    assert sorted(os.listdir(multi / "ckpt")) == sorted(os.listdir(single / "ckpt"))  # no temp file left


def test_main_on_two_processes_trains_the_projector_one_process_trains(tmp_path, tiny_dataset, model_dir, single_run):
    single, result = single_run
    multi = tmp_path / "two"
    proc = ok(launch("torchrun", "main.py", flags(tiny_dataset, model_dir, multi, *TRAIN_ARGV)))
    assert_same_run(single, multi)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["best_dev_acc"] == result["best_dev_acc"]
    assert proc.stdout.count("GEMEL training on") == 1

    # Starting the same run again is refused on the main process, and both processes stop (no hang at a barrier).
    again = launch("torchrun", "main.py", flags(tiny_dataset, model_dir, multi, *TRAIN_ARGV), timeout=120)
    assert again.returncode != 0
    assert again.stderr.count("another run's results are here") == 1, again.stderr[-3000:]


def test_more_processes_than_accumulation_steps_are_refused(tmp_path, tiny_dataset, model_dir):
    proc = launch("torchrun", "main.py", flags(tiny_dataset, model_dir, tmp_path, "--accum_iter", "1"), timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.count("2 processes but --accum_iter 1") == 1, proc.stderr[-3000:]
    assert not (tmp_path / "ckpt").exists() or not os.listdir(tmp_path / "ckpt")


CRASH_AT_FIRST_EVALUATION = """
import runpy, sys
import mel.gemel.evaluation as evaluation
def crash(*args, **kwargs):
    raise KeyboardInterrupt("simulated crash")
evaluation.evaluate = crash  # main.py imports it from mel.gemel.evaluation when it runs
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_two_process_run_resumes_after_a_crash(tmp_path, tiny_dataset, model_dir, single_run):
    """Both processes die at the dev evaluation of step 6 (inside an accumulation window; the state was saved at
    step 4); `--resume` on 2 processes loads that state in each and ends where the one-process run ended."""
    wrapper = tmp_path / "crash.py"
    wrapper.write_text(CRASH_AT_FIRST_EVALUATION)
    multi = tmp_path / "two"
    argv = flags(tiny_dataset, model_dir, multi, *TRAIN_ARGV)
    crashed = launch("torchrun", str(wrapper), [os.path.join(REPO, "main.py"), *argv])
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr
    saved = torch.load(multi / "ckpt" / f"{RUN}.train_state.pt", weights_only=True)
    assert saved["progress"]["global_step"] == 4
    proc = ok(launch("torchrun", "main.py", argv + ["--resume"]))
    assert proc.stdout.count("Resumed from") == 1
    assert_same_run(single_run[0], multi)


def test_data_parallel_benchmark_reports_identical_predictions(tiny_dataset, model_dir, tmp_path):
    """bench/data_parallel.py end to end on the tiny OPT: one process against torchrun's two, same predictions."""
    train_script.main(flags(tiny_dataset, model_dir, tmp_path, "--train_epoch", "0"))
    spec = importlib.util.spec_from_file_location("bench_data_parallel",
                                                  os.path.join(REPO, "bench", "data_parallel.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--out", str(tmp_path / "dp.json"), "--",
                         *flags(tiny_dataset, model_dir, tmp_path, "--split", "dev")])
    assert result["predictions_identical"] and result["single"]["examples"] == 4
    assert result["single"]["accuracy"] == result["data_parallel"]["accuracy"]
    assert json.loads((tmp_path / "dp.json").read_text())["nproc"] == 2

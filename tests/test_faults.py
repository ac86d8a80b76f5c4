"""Nothing lost, nothing silently wrong: concurrent runs, dead writers, resumes, numbers, configs, full disks.

Each case ends in one line naming the file, line, key or flag (before the LM loads where it can), or in the right
behaviour. The scripts are called in this process; the concurrent ones are real processes.
"""
import errno
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import infe
import main as train_script
import params
from mel.errors import DataError
from mel.gemel import experiment
from mel.io import atomic
from mel.io.datasets import read_split
from mel.runs import files as runs
from tiny import tiny_run_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = "tiny-opt0_tiny_linear_4token_2examples"


def flags(data, model_dir, out, *extra):
    return tiny_run_flags(data, model_dir, out, "--train_epoch", "1", "--lr", "1e-3", *extra, max_new_tokens=4)


def exits_with(argv, script=train_script):
    with pytest.raises(SystemExit) as raised:
        script.main(argv)
    return str(raised.value)


@pytest.fixture
def no_lm_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the LM was loaded before the bad input was found")

    monkeypatch.setattr(experiment, "load_lm", refuse)


def dead_pid():
    """The process id of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def lock_holder():
    """lock_holder(target): another live process holding the RunLock of `target`; its Popen."""
    procs = []

    def hold(target):
        code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from mel.runs.lock import RunLock; "
                "RunLock(sys.argv[1], 'x', 'y').acquire(); print('held', flush=True); time.sleep(120)")
        proc = subprocess.Popen([sys.executable, "-c", code, str(target), REPO], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


# ----------------------------------------------------------------------------------------------- a run owns its files

def test_a_live_run_refuses_a_second_process_and_overwrite(tmp_path, tiny_dataset, tiny_opt_dir, lock_holder,
                                                           no_lm_load, capsys):
    argv = flags(tiny_dataset, tiny_opt_dir, tmp_path, "--no-do_test")
    os.makedirs(tmp_path / "ckpt")
    (tmp_path / "ckpt" / f"{RUN}.json").write_text("{}")  # a file of the live run
    holder = lock_holder(tmp_path / "ckpt" / RUN)
    for extra in ([], ["--overwrite"], ["--resume"]):
        message = exits_with(argv + extra)
        assert f"{RUN}.lock: the run {RUN} belongs to a live process (process {holder.pid} on" in message
        assert "wait for it to end, or choose another --ckpt_dir" in message and "\n" not in message
    assert (tmp_path / "ckpt" / f"{RUN}.json").read_text() == "{}"  # --overwrite deleted nothing
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    os.remove(tmp_path / "ckpt" / f"{RUN}.json")
    with pytest.raises(AssertionError, match="LM was loaded"):  # the dead holder's lock is taken over
        train_script.main(argv)
    assert "taking over the lock of process" in capsys.readouterr().out


def test_an_evaluation_output_is_owned_while_it_is_written(tmp_path, tiny_dataset, tiny_opt_dir, lock_holder):
    argv = flags(tiny_dataset, tiny_opt_dir, tmp_path)
    train_script.main(argv + ["--train_epoch", "0", "--no-do_test"])
    out = tmp_path / "p.jsonl"
    holder = lock_holder(out)
    message = exits_with(argv + ["--predictions_file", str(out), "--overwrite"], infe)
    assert f"p.jsonl.lock: the output p.jsonl belongs to a live process (process {holder.pid}" in message
    assert not out.exists()


def test_two_runs_started_at_once_leave_one_whole_run(tmp_path, tiny_dataset, tiny_opt_dir):
    """Two main.py into one --ckpt_dir at the same moment, with another --lr: one trains, the other is refused,
    and the files are the first's alone."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, os.path.join(REPO, "main.py"),
                               *flags(tiny_dataset, tiny_opt_dir, tmp_path, "--no-do_test", "--lr", lr)],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for lr in ("1e-3", "2e-3")]
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    codes = [proc.returncode for proc in procs]
    assert sorted(codes) == [0, 1], errors
    loser = errors[codes.index(1)].strip().splitlines()[-1]
    assert "belongs to a live process" in loser or "another run's results are here" in loser, loser
    winner_lr = (1e-3, 2e-3)[codes.index(0)]
    assert json.loads((tmp_path / "ckpt" / f"{RUN}.json").read_text())["lr"] == winner_lr
    rows = [json.loads(line) for line in open(tmp_path / "log" / f"{RUN}.metrics.jsonl")]
    assert sum("dev_acc" in r for r in rows) == 1  # one run's rows, not both
    assert not os.path.exists(tmp_path / "ckpt" / f"{RUN}.lock")  # released at the end


def test_temp_files_of_a_dead_writer_go_at_the_next_run(tmp_path, tiny_dataset, tiny_opt_dir):
    ckpt = tmp_path / "ckpt"
    os.makedirs(ckpt)
    host = atomic._HOST
    dead = ckpt / f".{RUN}.train_state.pt.{host}.{dead_pid()}.abc123.tmp"
    alive = ckpt / f".{RUN}.pkl.{host}.{os.getpid()}.def456.tmp"  # a writer that still runs: left alone
    for path in (dead, alive):
        path.write_bytes(b"half a file")
    train_script.main(flags(tiny_dataset, tiny_opt_dir, tmp_path, "--train_epoch", "0", "--no-do_test"))
    assert not dead.exists() and alive.exists()


def test_a_dead_writers_temp_file_goes_at_the_next_write(tmp_path):
    target = tmp_path / "tree.marisa"
    stale = tmp_path / f".tree.marisa.{atomic._HOST}.{dead_pid()}.x.tmp"
    stale.write_bytes(b"x")
    atomic.write_lines(str(target), ["a"])
    assert os.listdir(tmp_path) == ["tree.marisa"]


# ----------------------------------------------------------------------------------------------- resuming

def test_resume_with_nothing_to_resume_is_refused(tmp_path, tiny_dataset, tiny_opt_dir, no_lm_load):
    message = exits_with(flags(tiny_dataset, tiny_opt_dir, tmp_path / "typo", "--resume"))
    assert f"--resume: no run {RUN} in --ckpt_dir {tmp_path / 'typo' / 'ckpt'}" in message


def test_a_crash_after_the_last_save_resumes_to_the_uninterrupted_log(tmp_path, tiny_dataset, tiny_opt_dir,
                                                                     crash_at_evaluation):
    """The crash comes in the test evaluation, after the final training state was saved: the resumed run logs
    the test row once, and its log equals the uninterrupted run's."""
    def argv(out):
        return flags(tiny_dataset, tiny_opt_dir, out, "--accum_iter", "4", "--do_eval_steps", "6")

    train_script.main(argv(tmp_path / "whole"))
    crash_at_evaluation(train_script, argv(tmp_path / "crashed"), number=3)  # dev at 6, dev at the end, test
    train_script.main(argv(tmp_path / "crashed") + ["--resume"])
    timing = ("time", "saved", "checkpoint", "dev_examples_per_s", "test_seconds", "test_examples_per_s")
    logs = {name: [{k: v for k, v in json.loads(line).items() if k not in timing}
                   for line in open(tmp_path / name / "log" / f"{RUN}.metrics.jsonl")] for name in ("whole", "crashed")}
    assert logs["crashed"] == logs["whole"]
    assert sum("train_loss" in r for r in logs["crashed"]) == 1 and sum("test_acc" in r for r in logs["crashed"]) == 1


# ----------------------------------------------------------------------------------------------- numbers

@pytest.mark.parametrize("extra, expected", [
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--lr", "-1"], "--lr must be a finite number > 0, got -1.0"),
    (["--warmup_ratio", "2"], "--warmup_ratio must be a number from 0 to 1"),
    (["--nil_threshold", "nan"], "NaN compares false with every score"),
    (["--nil_threshold", "inf"], "inf makes every mention NIL"),
    (["--nil_threshold", "abc"], "--nil_threshold must be a number, dev or checkpoint"),
])
def test_numbers_are_checked_at_the_door(tmp_path, tiny_dataset, tiny_opt_dir, no_lm_load, capsys, extra, expected):
    with pytest.raises(SystemExit) as raised:
        infe.main(flags(tiny_dataset, tiny_opt_dir, tmp_path) + extra)
    assert raised.value.code == 2 and expected in capsys.readouterr().err


def test_minus_inf_is_a_threshold_that_never_predicts_nil(tiny_dataset):
    args = params.parse_args(["--data_dir", tiny_dataset["data_dir"], "--dataset", "tiny", "--nil_threshold", "-inf"],
                             script="evaluate")
    assert args.nil_threshold is None
    args = params.parse_args(["--data_dir", tiny_dataset["data_dir"], "--dataset", "tiny", "--nil_threshold", "-2.5"],
                             script="evaluate")
    assert args.nil_threshold == -2.5


@pytest.mark.parametrize("stored", ["abc", [1.0], float("nan"), True])
def test_a_stored_threshold_that_is_no_number_is_named(tmp_path, stored):
    ckpt = tmp_path / "run.pkl"
    (tmp_path / "run.json").write_text(json.dumps({"chosen_nil_threshold": stored}))  # NaN as JSON's extension
    with pytest.raises(DataError, match=r"run\.json: key 'chosen_nil_threshold' is .* not a finite number or null"):
        runs.stored_nil_threshold(str(ckpt))


def test_summaries_are_strict_json(tmp_path):
    with pytest.raises(DataError, match="not a finite number"):
        atomic.write_json(str(tmp_path / "s.json"), {"nil_threshold": math.inf})
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------------------------- malformed files

@pytest.mark.parametrize("config, expected", [
    ([1, 2], "the checkpoint's config is a JSON list, not an object of flags"),
    ({"visual_prefix_length": "4"}, "key 'visual_prefix_length' is \"4\", not an integer"),
    ({"model_name": 7}, "key 'model_name' is 7, not a string"),
])
def test_a_malformed_checkpoint_config_is_named(tmp_path, config, expected):
    (tmp_path / "run.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=expected) as raised:
        runs.checkpoint_config(str(tmp_path / "run.pkl"))
    assert str(raised.value).startswith(f"{tmp_path / 'run.json'}: ")


def test_a_deeply_nested_json_line_is_named(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"text": "a", "mention": "a", "target": "a", "golden": "a", "img_url": "x"}) + "\n"
                    + "[" * 100000 + "]" * 100000 + "\n")
    with pytest.raises(DataError, match=r"train\.json, line 2: JSON nested too deeply"):
        read_split(str(path))


def test_device_map_devices_are_named(tiny_dataset, tiny_opt_dir, capsys):
    with pytest.raises(SystemExit):
        params.parse_args(["--data_dir", tiny_dataset["data_dir"], "--dataset", "tiny", "--device_map",
                           '{"model": "banana"}'], script="evaluate")
    assert "'model' is placed on 'banana', which is no device" in capsys.readouterr().err
    from mel.models.loading import check_device_map

    if not torch.cuda.is_available():
        with pytest.raises(DataError, match=r"places 'model' on 'cuda:7', but 0 CUDA device\(s\) are visible"):
            check_device_map(tiny_opt_dir, {"model": "cuda:7"})


# ----------------------------------------------------------------------------------------------- full disks

def test_a_checkpoint_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "run.pkl"
    atomic.torch_save({"weight": torch.zeros(2)}, str(target))
    before = target.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)  # where a delayed allocation reports the full disk
    with pytest.raises(DataError, match=r"run\.pkl: cannot write it \(the disk is full: free some space\)"):
        atomic.torch_save({"weight": torch.ones(1000)}, str(target))
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["run.pkl"]


def test_an_hdf5_file_is_refused_before_it_fills_the_disk(tmp_path, monkeypatch):
    """h5py's C library can crash the process on a full disk: the space is checked before writing."""
    from mel.drin import features

    real_usage = atomic.shutil.disk_usage
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=10_000))
    with pytest.raises(DataError, match=r"drin\.test\.h5: cannot write the DRIN features .* MB free"):
        features._write_h5(str(tmp_path / "drin.test.h5"), {"text": np.zeros((1000, 64), np.float32)}, {})
    assert not os.listdir(tmp_path)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs (where this machine lets the tests mount one), nearly filled."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected full-disk tests stand in")
    try:
        (mount / "filler").write_bytes(b"\0" * (1024 * 1024 - 96 * 1024))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk(small_disk):
    from mel.drin import features

    with pytest.raises(DataError, match="disk is full"):
        atomic.torch_save({"weight": torch.zeros(256, 1024)}, str(small_disk / "run.pkl"))
    with pytest.raises(DataError, match="MB free"):
        features._write_h5(str(small_disk / "drin.test.h5"), {"text": np.zeros((256, 1024), np.float32)}, {})
    assert sorted(os.listdir(small_disk)) == ["filler"]

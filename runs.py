"""The files of one training run, and the rules that keep runs apart.

A run is named after its checkpoint (GEMEL's file name, e.g. opt-6.7b_wikidiverse_linear_4token_16examples.pkl). Its
other files sit beside it in --ckpt_dir (the config JSON, the training state, the test predictions) and in --log_dir
(the metrics log). A run never replaces another run's files: main.py refuses to start where they exist unless told
--resume (continue that run, with the same flags that shape it) or --overwrite (replace it).
"""
import json
import os
from dataclasses import dataclass

import torch

import fileio
import params
import safeload
from utils import DataError

# Flags that may differ between a run and its resumption: where files are, how fast or on what it runs, what is
# done after training. Every other flag shapes the run (its data, model, schedule or model selection).
MAY_CHANGE_ON_RESUME = {"resume", "overwrite", "device", "cache_dir", "data_dir", "log_dir", "ckpt_dir", "eval_bs",
                        "share_prompt", "do_test", "save_steps", "best_ckpt", "predictions_file", "dataset_dir",
                        "data_file", "split", "report_to", "method", "device_map", "max_memory",
                        "offload_folder"}
PATH_FLAGS = {"img_feat", "ment_embed_file", "trie_file"}  # compared by file name: the folder may move


@dataclass(frozen=True)
class RunFiles:
    checkpoint: str        # GEMEL's checkpoint: the projector's state dict, float16
    config: str            # the run's flags and its best dev accuracy, JSON
    state: str             # training state for --resume: projector, optimizer, schedule, progress, RNG
    test_predictions: str  # the best checkpoint's test predictions, JSONL
    metrics: str           # training loss, learning rate, dev accuracy over steps, JSONL

    @classmethod
    def of(cls, args):
        stem = os.path.splitext(params.checkpoint_name(args))[0]
        base = os.path.join(args.ckpt_dir, stem)
        return cls(checkpoint=base + ".pkl", config=base + ".json", state=base + ".train_state.pt",
                   test_predictions=base + ".test.predictions.jsonl",
                   metrics=os.path.join(args.log_dir, f"{stem}.metrics.jsonl"))

    def existing(self):
        return [path for path in vars(self).values() if os.path.exists(path)]


def resolve_checkpoint(best_ckpt, ckpt_dir, default):
    """--best_ckpt as a path or a file name in --ckpt_dir; `default` (the run's own checkpoint) when not given."""
    if best_ckpt is None:
        return default
    if os.path.exists(best_ckpt) or os.path.isabs(best_ckpt):
        return best_ckpt
    return os.path.join(ckpt_dir, best_ckpt)


def summary_path(predictions):
    """An evaluation's summary (accuracy or Hits@k, MRR, throughput) as JSON, beside its predictions."""
    return os.path.splitext(predictions)[0] + ".summary.json"


def check_predictions_output(out, overwrite):
    """An evaluation never replaces earlier predictions (or their summary) unless told --overwrite."""
    if (os.path.exists(out) or os.path.exists(summary_path(out))) and not overwrite:
        raise DataError(f"{out}: predictions of an earlier evaluation are there; pass --overwrite to replace them, or "
                        f"--predictions_file <another file>")
    fileio.check_writable(out, "--predictions_file")


def run_config(args):
    """The flags as JSON-able values (the config written beside the checkpoint and into the training state)."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None), dict))}


def claim(files, args):
    """Make sure this run may write its files: refuse to replace another run's unless --resume or --overwrite."""
    for path, flag in ((args.ckpt_dir, "--ckpt_dir"), (args.log_dir, "--log_dir")):
        fileio.check_writable(path, flag, is_folder=True)
    found = files.existing()
    if args.resume:
        if found and not os.path.exists(files.state):
            raise DataError(f"{files.checkpoint}: --resume needs the training state {files.state}, which is missing; "
                            f"the run finished or never saved one. Use --overwrite to train it again, or another "
                            f"--ckpt_dir")
        return
    if found and not args.overwrite:
        raise DataError(f"{found[0]}: another run's results are here ({len(found)} file(s) of "
                        f"{os.path.basename(files.checkpoint)}). Pass --resume to continue that run, --overwrite to "
                        f"replace it, or another --ckpt_dir / --log_dir for a new one")
    for path in found:  # --overwrite: the old run goes now, so that none of its files mixes with the new run's
        os.remove(path)


def check_resume(saved_config, args, state_file):
    """Refuse to resume a run whose shaping flags changed: the saved schedule and data order would silently differ."""
    current = run_config(args)
    changed = []
    for key in sorted(set(saved_config) | set(current)):
        if key in MAY_CHANGE_ON_RESUME:
            continue
        old, new = saved_config.get(key), current.get(key)
        if key in PATH_FLAGS:
            old, new = (os.path.basename(v) if isinstance(v, str) else v for v in (old, new))
        if old != new:
            changed.append(f"--{key} {old} -> {new}")
    if changed:
        raise DataError(f"{state_file}: cannot resume with other flags than the run was started with: "
                        f"{'; '.join(changed)}. Resume with the run's flags, or start a new run (--overwrite or "
                        f"another --ckpt_dir)")


def save_state(path, trained, optimizer, scheduler, progress, config):
    """`trained`: the module whose parameters are trained (GEMEL's projector `linear`, or all of DRIN)."""
    fileio.torch_save({"linear": trained.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict() if scheduler is not None else {},
                       "progress": dict(progress), "config": config,
                       "torch_rng": torch.get_rng_state(),
                       "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, path)


def load_state(path):
    """The saved training state, read without running code (weights_only)."""
    saved = safeload.torch_load(path, "training state",
                                remedy="Start the run again with --overwrite, or train into another --ckpt_dir.")
    missing = {"linear", "optimizer", "scheduler", "progress", "config", "torch_rng"} - set(saved)
    if missing:
        raise DataError(f"{path}: not a training state of this version (no {', '.join(sorted(missing))}); start the "
                        f"run again with --overwrite")
    return saved


class MetricsLog:
    """Rows of JSON appended as training goes; a resumed run first drops the rows logged after its saved state.

    With a tracker (start_tracker) every row's numbers also go to TensorBoard / Weights & Biases at its step.
    """

    def __init__(self, path, tracker=None):
        self.path, self.tracker = path, tracker

    def append(self, row):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")
        if self.tracker is not None:
            values = {k: v for k, v in row.items() if k not in ("step", "time") and isinstance(v, (int, float))
                      and not isinstance(v, bool)}
            self.tracker.log(values, step=row["step"])

    def close(self):
        if self.tracker is not None:
            self.tracker.end_training()

    def keep_until(self, step):
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            rows = [line.rstrip("\n") for line in f if line.strip()]
        fileio.write_lines(self.path, [row for row in rows if json.loads(row).get("step", 0) <= step])


def check_tracker(report_to):
    """--report_to names a tracker whose package is installed (checked before anything expensive)."""
    if report_to == "none":
        return
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    if not {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}[report_to]():
        raise DataError(f"--report_to {report_to}: the {report_to} package is not installed; `pip install "
                        f"{report_to}`, or --report_to none (the metrics JSONL is written either way)")


def start_tracker(report_to, log_dir, run_name, config):
    """accelerate's experiment tracking for the metrics rows (--report_to); None for `none`, the offline default.
    Call it on the main process only: it alone logs."""
    if report_to == "none":
        return None
    from accelerate import Accelerator

    check_tracker(report_to)
    accelerator = Accelerator(log_with=report_to, project_dir=log_dir)
    accelerator.init_trackers(run_name, config={k: v for k, v in config.items()
                                                if isinstance(v, (int, float, str, bool))})
    return accelerator


def checkpoint_config(checkpoint):
    """The config JSON main.py writes beside a checkpoint, or {} when there is none (GEMEL's released checkpoints)."""
    config_file = os.path.splitext(checkpoint)[0] + ".json"
    if not os.path.exists(config_file):
        return {}
    try:
        with open(config_file, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise DataError(f"{config_file}: cannot read the checkpoint's config ({error}); delete it to load the "
                        f"checkpoint without it") from None


def check_checkpoint_config(checkpoint, args):
    """A checkpoint with its config JSON beside it (ours) must match the LM, prefix length and feature size asked
    for: another LM's projector can have the very same shape (4 x 32 = 2 x 64) and would load silently."""
    saved = checkpoint_config(checkpoint)

    def same(key):  # an LM may be named by short name, hub id or folder: compare what names the checkpoint
        if key == "model_name":
            return params.model_tag(saved[key]) == params.model_tag(args.model_name)
        return saved[key] == getattr(args, key)

    differ = [f"--{key} {saved[key]} (checkpoint) vs {getattr(args, key)} (now)"
              for key in ("model_name", "visual_prefix_length", "dim_clip") if key in saved and not same(key)]
    if differ:
        raise DataError(f"{checkpoint}: trained with other settings than asked for: {'; '.join(differ)}. Pass the "
                        f"checkpoint's settings")


def stored_nil_threshold(checkpoint):
    """The NIL threshold main.py --nil_threshold dev chose and stored in the checkpoint's config."""
    config = checkpoint_config(checkpoint)
    if "chosen_nil_threshold" not in config:
        raise DataError(f"{os.path.splitext(checkpoint)[0]}.json: no NIL threshold stored; train with `python main.py "
                        f"--keep_nil --nil_threshold dev`, or pass --nil_threshold dev / a number")
    return config["chosen_nil_threshold"]

"""The files of a run, for every method, and the rules that keep runs apart.

A run is named by the flags that shape it: GEMEL's checkpoint name (`opt-6.7b_wikidiverse_linear_4token_16examples`),
DRIN's `drin_<dataset>_<edges>_<edge type>[_vector][_goldslot][_last]`. Its files sit in --ckpt_dir (checkpoint,
config JSON, training state, test predictions) and --log_dir (metrics log). A run never replaces another run's
files: main.py refuses to start where they exist unless told --resume (continue that run, with the same flags that
shape it) or --overwrite (replace it). Evaluations (infe.py) and linked outputs (link.py) never replace an existing
output file unless told --overwrite. While a run (or an evaluation, or a linking) lives, its process holds the lock
of its files (mel/runs/lock.py): a second process is refused, --overwrite of a live run too.
"""
import json
import os
from dataclasses import dataclass

import torch

from mel.errors import DataError
from mel.io.atomic import check_writable, remove_stale_temps, torch_save
from mel.io.datasets import is_finite_number
from mel.io.safeload import torch_load
from mel.models.registry import model_tag
from mel.runs.lock import RunLock

# Flags that may differ between a run and its resumption: where files are, how fast or on what it runs, what is
# done after training. Every other flag shapes the run (its data, model, schedule or model selection).
MAY_CHANGE_ON_RESUME = {"resume", "overwrite", "device", "cache_dir", "data_dir", "log_dir", "ckpt_dir", "eval_bs",
                        "share_prompt", "do_test", "save_steps", "dataset_dir", "data_file", "report_to", "method",
                        "device_map", "max_memory", "offload_folder"}
PATH_FLAGS = {"img_feat", "ment_embed_file", "trie_file"}  # compared by file name: the folder may move
# what the settings read back from a checkpoint's config must be
CONFIG_TYPES = {"model_name": str, "visual_prefix_length": int, "dim_clip": int, "ICL_examples_num": int}
CONFIG_KIND = {str: "a string", int: "an integer"}
CHECKPOINT_EXTENSION = {"gemel": ".pkl", "drin": ".pt", "ghmfc": ".pt", "melhi": ".pt"}  # .pkl: GEMEL's released
STATE_KEYS = {"weights", "optimizer", "scheduler", "progress", "config", "torch_rng"}


def run_name(args):
    """The name of the run these flags describe (its files' common stem)."""
    if args.method != "gemel":  # a candidate ranker
        shape = (f"_{args.edges.replace(',', '-')}_{args.edge_type}{'_vector' if args.vector_edges else ''}"
                 if args.method == "drin" else "")
        return (f"{args.method}_{args.dataset}{shape}{'_original' if args.protocol == 'original' else ''}"
                f"{'_per_mention' if args.loss == 'per_mention' else ''}")
    return (f"{model_tag(args.model_name)}_{args.dataset}_linear_{args.visual_prefix_length}token_"
            f"{args.ICL_examples_num}examples")


@dataclass(frozen=True)
class RunFiles:
    checkpoint: str        # the trained weights: GEMEL's projector (its released format) or DRIN's model
    config: str            # the run's flags and its best dev figure, JSON
    state: str             # training state for --resume: weights, optimizer, schedule, progress, RNG
    test_predictions: str  # the best checkpoint's test predictions, JSONL
    fused_test_predictions: str  # its fused ranking of the test candidates (GEMEL --fusion), JSONL
    metrics: str           # training loss and dev figures over steps, JSONL

    @classmethod
    def of(cls, args):
        stem = run_name(args)
        base = os.path.join(args.ckpt_dir, stem)
        return cls(checkpoint=base + CHECKPOINT_EXTENSION[args.method], config=base + ".json",
                   state=base + ".train_state.pt", test_predictions=base + ".test.predictions.jsonl",
                   fused_test_predictions=base + ".test.fused.predictions.jsonl",
                   metrics=os.path.join(args.log_dir, f"{stem}.metrics.jsonl"))

    def existing(self):
        return [path for path in vars(self).values() if os.path.exists(path)]


# ----------------------------------------------------------------------------- training: claiming and resuming

def run_config(args):
    """The flags as JSON-able values (the config written beside the checkpoint and into the training state)."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None), dict))}


def claim(files, args):
    """Take this run's files for the life of the process: its lock (a second process is refused), then refuse to
    replace another run's files unless --resume or --overwrite. Returns the held RunLock (a context manager)."""
    for path, flag in ((args.ckpt_dir, "--ckpt_dir"), (args.log_dir, "--log_dir")):
        check_writable(path, flag, is_folder=True)
    name = run_name(args)
    lock = RunLock(os.path.join(args.ckpt_dir, name), f"the run {name}", "choose another --ckpt_dir").acquire()
    try:
        for path in vars(files).values():
            remove_stale_temps(path)  # of a writer of this run that died; we hold the run, so none is alive
        _check_claim(files, args, name)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_claim(files, args, name):
    found = files.existing()
    if args.resume:
        if not found:
            raise DataError(f"--resume: no run {name} in --ckpt_dir {args.ckpt_dir} (no checkpoint, config or training "
                            f"state); check --ckpt_dir and the flags that name the run, or start without --resume")
        if not os.path.exists(files.state):
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
    """`trained`: the module whose parameters are trained (GEMEL's projector, or all of DRIN)."""
    torch_save({"weights": trained.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "progress": dict(progress), "config": config, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, path)


def load_state(path):
    """The saved training state, read without running code (weights_only)."""
    saved = torch_load(path, "training state",
                       remedy="Start the run again with --overwrite, or train into another --ckpt_dir.")
    missing = STATE_KEYS - set(saved) if isinstance(saved, dict) else STATE_KEYS
    if missing:
        raise DataError(f"{path}: not a training state of this version (no {', '.join(sorted(missing))}); start the "
                        f"run again with --overwrite")
    return saved


def resume(files, args, trained, optimizer, scheduler=None):
    """With --resume and a saved state: weights, optimizer, schedule and RNG restored, the progress dict returned.
    None when there is nothing to resume (a new run)."""
    if not args.resume or not os.path.exists(files.state):
        return None
    saved = load_state(files.state)
    check_resume(saved["config"], args, files.state)
    trained.load_state_dict(saved["weights"])
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])  # dropout and data order continue exactly where they stopped
    if torch.cuda.is_available() and saved.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return saved["progress"]


# ----------------------------------------------------------------------------- evaluation and linking: outputs

def find_checkpoint(args):
    """--best_ckpt (a path, or a file name in --ckpt_dir), else the checkpoint main.py writes for these flags;
    a DataError when it does not exist."""
    default = RunFiles.of(args).checkpoint
    ckpt = default
    if args.best_ckpt is not None:
        as_path = os.path.exists(args.best_ckpt) or os.path.isabs(args.best_ckpt)
        ckpt = args.best_ckpt if as_path else os.path.join(args.ckpt_dir, args.best_ckpt)
    if not os.path.exists(ckpt):
        method = "" if args.method == "gemel" else f" --method {args.method}"
        raise DataError(f"{ckpt}: checkpoint not found; train one with `python main.py{method}` (same flags) or pass "
                        f"--best_ckpt")
    return ckpt


def summary_path(predictions):
    """An evaluation's summary (accuracy or Hits@k, MRR, throughput) as JSON, beside its predictions."""
    return os.path.splitext(predictions)[0] + ".summary.json"


def fusion_requested(args):
    """Whether GEMEL's flags ask for fused candidate scores (--fusion dev|checkpoint or --fusion_weights)."""
    return args.fusion != "none" or args.fusion_weights is not None


def evaluation_outputs(args, ckpt):
    """(predictions JSONL, summary JSON, held RunLock) of `infe.py` for this checkpoint and split (claim_output)."""
    tag = f".{args.protocol}" if args.method != "gemel" else ""
    if args.method == "gemel" and fusion_requested(args):
        tag = ".fused"
    predictions = args.predictions_file or os.path.splitext(ckpt)[0] + f".infe.{args.split}{tag}.predictions.jsonl"
    lock = claim_output(predictions, args.overwrite, "--predictions_file", "the results of an earlier evaluation",
                        also=[summary_path(predictions)])
    return predictions, summary_path(predictions), lock


def claim_output(path, overwrite, flag, what, also=()):
    """Take an output file (and its companions `also`) for the life of the process: its lock, then refuse to replace
    an earlier one unless told --overwrite. Returns the held RunLock (a context manager)."""
    check_writable(path, flag)
    lock = RunLock(path, f"the output {os.path.basename(path)}", f"pass {flag} <another file>").acquire()
    try:
        existing = [p for p in (path, *also) if os.path.exists(p)]
        if existing and not overwrite:
            raise DataError(f"{existing[0]}: holds {what}; pass --overwrite to replace it, or {flag} <another file>")
        for target in (path, *also):
            remove_stale_temps(target)
    except BaseException:
        lock.release()
        raise
    return lock


# ----------------------------------------------------------------------------- the config beside a checkpoint

def checkpoint_config(checkpoint):
    """The config JSON main.py writes beside a checkpoint, or {} when there is none (GEMEL's released checkpoints)."""
    config_file = os.path.splitext(checkpoint)[0] + ".json"
    if not os.path.exists(config_file):
        return {}
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError, RecursionError) as error:
        raise DataError(f"{config_file}: cannot read the checkpoint's config ({error}); delete it to load the "
                        f"checkpoint without it") from None
    if not isinstance(config, dict):
        raise DataError(f"{config_file}: the checkpoint's config is a JSON {type(config).__name__}, not an object of "
                        f"flags; delete it to load the checkpoint without it")
    for key, kind in CONFIG_TYPES.items():
        value = config.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool):
            raise DataError(f"{config_file}: key {key!r} is {json.dumps(value)}, not {CONFIG_KIND[kind]}; write the "
                            f"value main.py wrote, or delete the file to load the checkpoint without it")
    return config


def check_checkpoint_config(checkpoint, args):
    """A checkpoint with its config JSON beside it (ours) must match the LM, prefix length and feature size asked
    for: another LM's projector can have the very same shape (4 x 32 = 2 x 64) and would load silently."""
    saved = checkpoint_config(checkpoint)

    def same(key):  # an LM may be named by short name, hub id or folder: compare what names the checkpoint
        if key == "model_name":
            return model_tag(saved[key]) == model_tag(args.model_name)
        return saved[key] == getattr(args, key)

    differ = [f"--{key} {saved[key]} (checkpoint) vs {getattr(args, key)} (now)"
              for key in ("model_name", "visual_prefix_length", "dim_clip") if key in saved and not same(key)]
    if differ:
        raise DataError(f"{checkpoint}: trained with other settings than asked for: {'; '.join(differ)}. Pass the "
                        f"checkpoint's settings")


def stored_nil_threshold(checkpoint):
    """The NIL threshold main.py --nil_threshold dev chose and stored in the checkpoint's config (None: NIL never
    helped on dev)."""
    config = checkpoint_config(checkpoint)
    config_file = f"{os.path.splitext(checkpoint)[0]}.json"
    if "chosen_nil_threshold" not in config:
        raise DataError(f"{config_file}: no NIL threshold stored; train with `python main.py --keep_nil "
                        f"--nil_threshold dev`, or pass --nil_threshold dev / a number")
    value = config["chosen_nil_threshold"]
    if value is not None and not is_finite_number(value):
        raise DataError(f"{config_file}: key 'chosen_nil_threshold' is {json.dumps(value)}, not a finite number or "
                        f"null; pass --nil_threshold dev / a number, or choose it again with main.py")
    return value

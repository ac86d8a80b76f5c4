"""Evaluate a GEMEL checkpoint: constrained generation of entity names, accuracy, per-example predictions.

    python infe.py                                   # the demo checkpoint written by `python main.py`
    python infe.py --dataset wikidiverse --model_name opt-6.7b \
        --best_ckpt opt-6.7b_wikidiverse_linear_4token_16examples_82_77.pkl
    python infe.py --method drin                     # a DRIN checkpoint (drin/run.py)
    torchrun --nproc_per_node 2 infe.py              # data parallel: see distributed.py and README "Scaling out"
"""
import dataclasses
import os

from transformers import set_seed

import distributed
import fileio
import params
import runs
from evaluation import EvalSettings, evaluate, nil_threshold_on_dev
from experiment import checkpoint_path, load_experiment, run_script
from model import load_checkpoint, read_checkpoint
from utils import DataError


def add_infe_flags(parser):
    parser.add_argument("--split", default="test", choices=("train", "dev", "test"), help="split to evaluate")


def predictions_path(args, ckpt):
    """--predictions_file, or one beside the checkpoint that main.py's own test predictions never use."""
    return args.predictions_file or os.path.splitext(ckpt)[0] + f".infe.{args.split}.predictions.jsonl"


def run(args):
    distributed.setup(args.device)  # N processes under accelerate launch / torchrun; nothing in one process
    set_seed(args.random_seed)
    ckpt = checkpoint_path(args)
    if not os.path.exists(ckpt):
        raise DataError(f"{ckpt}: checkpoint not found; train one with `python main.py` (same flags) or pass "
                        f"--best_ckpt")
    runs.check_checkpoint_config(ckpt, args)
    state = read_checkpoint(ckpt)
    out = predictions_path(args, ckpt)
    # the process that writes checks; a failure stops all
    distributed.on_main(lambda: runs.check_predictions_output(out, args.overwrite))
    settings = EvalSettings.from_args(args)
    if args.nil_threshold == "checkpoint":  # read now: a missing one fails before the LM loads
        settings = dataclasses.replace(settings, nil_threshold=runs.stored_nil_threshold(ckpt))
    exp = load_experiment(args, list(dict.fromkeys(["dev", args.split] if args.nil_threshold == "dev" else
                                                   [args.split])))
    load_checkpoint(exp.model, ckpt, state)
    print(f"Loaded {ckpt}")
    if args.nil_threshold == "dev":
        settings = nil_threshold_on_dev(exp, settings)
    result = evaluate(exp, exp.splits[args.split], settings)  # every process gets all records, in order
    if distributed.is_main():
        fileio.write_jsonl(out, result.records)
        fileio.write_json(runs.summary_path(out), {"checkpoint": ckpt, "split": args.split,
                                              "nil_threshold": settings.nil_threshold, **result.summary})
        print(f"Wrote {len(result.records)} predictions to {out} and the summary to {runs.summary_path(out)}")
    return result.accuracy


def main(argv=None):
    if params.method_of(argv) == "drin":
        from drin.run import evaluate_main
        return evaluate_main(argv)
    args = params.parse_args(argv, description="Evaluate a GEMEL checkpoint", extra=add_infe_flags)
    return run_script(run, args)


if __name__ == "__main__":
    main()

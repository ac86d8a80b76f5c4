"""Evaluate a GEMEL checkpoint: constrained generation of entity names, accuracy, per-example predictions.

    python infe.py                                   # the demo checkpoint written by `python main.py`
    python infe.py --dataset wikidiverse --model_name opt-6.7b \
        --best_ckpt opt-6.7b_wikidiverse_linear_4token_16examples_82_77.pkl
"""
import os

from transformers import set_seed

import fileio
import params
from evaluation import EvalSettings, evaluate
from experiment import checkpoint_path, load_experiment
from model import load_checkpoint


def add_infe_flags(parser):
    parser.add_argument("--split", default="test", choices=("train", "dev", "test"), help="split to evaluate")


def main(argv=None):
    args = params.parse_args(argv, description="Evaluate a GEMEL checkpoint", extra=add_infe_flags)
    set_seed(args.random_seed)
    ckpt = checkpoint_path(args)
    if not os.path.exists(ckpt):
        raise SystemExit(f"checkpoint {ckpt} not found: train one with `python main.py` (same flags) or pass "
                         f"--best_ckpt")
    exp = load_experiment(args, [args.split])
    load_checkpoint(exp.model, ckpt)
    print(f"Loaded {ckpt}")
    acc, records = evaluate(exp, exp.splits[args.split], EvalSettings.from_args(args))
    out = args.predictions_file or os.path.splitext(ckpt)[0] + f".{args.split}.predictions.jsonl"
    fileio.write_jsonl(out, records)
    print(f"Wrote {len(records)} predictions to {out}")
    return acc


if __name__ == "__main__":
    main()

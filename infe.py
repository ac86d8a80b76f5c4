"""Evaluate a checkpoint on a split: per-example predictions (JSONL) and a summary (JSON) beside it.

    python infe.py                                   # the demo checkpoint written by `python main.py`
    python infe.py --dataset wikidiverse --model_name opt-6.7b \
        --best_ckpt opt-6.7b_wikidiverse_linear_4token_16examples_82_77.pkl
    python infe.py --method drin                     # a DRIN checkpoint (mel/drin/run.py)
    python infe.py --method retriever                # the candidate lists' first names (mel/retrieval/linker.py)
    torchrun --nproc_per_node 2 infe.py              # data parallel: docs/scaling-out.md
"""
import contextlib
import dataclasses

from transformers import set_seed

import params
from mel.drin.run import evaluate_ranker
from mel.fusion import run as fusion
from mel.gemel.evaluation import EvalSettings, evaluate, nil_threshold_on_dev
from mel.gemel.experiment import load_experiment
from mel.io.atomic import write_json, write_jsonl
from mel.retrieval.linker import evaluate_retriever
from mel.runs import files as runs
from mel.runs.checkpoints import load_projector_checkpoint, read_projector_checkpoint
from mel.runs.logs import project_logger
from mel.runs.processes import Processes

logger = project_logger("infe")


def run(args):
    with Processes.start(args.device) as processes:  # N processes under accelerate launch / torchrun
        return evaluate_checkpoint(args, processes)


def evaluate_checkpoint(args, processes):
    set_seed(args.random_seed)
    ckpt = runs.find_checkpoint(args)
    runs.check_checkpoint_config(ckpt, args)
    state = read_projector_checkpoint(ckpt)
    # the process that writes checks; a failure stops all
    out, summary_file, lock = processes.on_main(lambda: runs.evaluation_outputs(args, ckpt)) or (None, None, None)
    with lock or contextlib.nullcontext():  # the main process holds the output files until they are written
        return evaluate_into(args, processes, ckpt, state, out, summary_file)


def evaluate_into(args, processes, ckpt, state, out, summary_file):
    settings = EvalSettings.from_args(args)
    if args.nil_threshold == "checkpoint":  # read now: a missing one fails before the LM loads
        settings = dataclasses.replace(settings, nil_threshold=runs.stored_nil_threshold(ckpt))
    needs_dev = args.nil_threshold == "dev" or fusion.dev_split_needed(args)
    exp = load_experiment(args, list(dict.fromkeys(["dev", args.split] if needs_dev else [args.split])), processes)
    load_projector_checkpoint(exp.model.linear, ckpt, state)
    logger.info(f"Loaded {ckpt}")
    if runs.fusion_requested(args):
        return evaluate_fused_into(args, exp, settings, ckpt, out, summary_file)
    if args.nil_threshold == "dev":
        settings = nil_threshold_on_dev(exp, settings)
    result = evaluate(exp, exp.splits[args.split], settings)  # every process gets all records, in order
    if processes.is_main:
        write_jsonl(out, result.records)
        write_json(summary_file, {"checkpoint": ckpt, "split": args.split, "nil_threshold": settings.nil_threshold,
                                  **result.summary})
        logger.info(f"Wrote {len(result.records)} predictions to {out} and the summary to {summary_file}")
    return result.accuracy


def evaluate_fused_into(args, exp, settings, ckpt, out, summary_file):
    """--fusion / --fusion_weights: the split's candidates ranked by fused scores (mel/fusion/)."""
    device = next(exp.model.linear.parameters()).device
    chosen, ranker, dev = fusion.fusion_for(args, exp, settings, ckpt, device)
    records, summary = fusion.evaluate_fused(exp, args.split, chosen, ranker, settings, device)
    if exp.processes.is_main:
        write_jsonl(out, records)
        write_json(summary_file, {"checkpoint": ckpt, "split": args.split, "fusion_dev": dev, **summary})
        logger.info(f"Wrote {len(records)} fused rankings to {out} and the summary to {summary_file}")
    return summary["accuracy"]


def main(argv=None):
    return params.run_script("evaluate", {"gemel": run, "retriever": evaluate_retriever,
                                          **{m: evaluate_ranker for m in params.RANKERS}}, argv)


if __name__ == "__main__":
    main()

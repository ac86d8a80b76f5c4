"""What constrained decoding adds to evaluation on the demo (target: under 5 % of evaluation time).

Evaluates the demo's dev split with the real SmolLM2-135M twice in one process: with the prefix tree, timing every
call of the constrained candidate selection (beam_search._top_candidates: the tree's allowed (row, token) pairs, their
scores and the top-2K ranking, which beam search needs with or without a tree, so the share is an upper bound; and
beam_search.mask_to_tree, used by greedy decoding) and of tree.advance, and without the tree. Reports the share of
evaluation time spent in the constraint, and seconds per generated token both ways (without the tree the LM writes
names of other lengths, so per-token cost is the fair comparison).

    python bench/constraint.py [--examples 80] [--ICL_examples_num 4]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from transformers import set_seed  # noqa: E402

import params  # noqa: E402
from mel.decoding import beam_search  # noqa: E402
from mel.decoding.beam_search import Unconstrained  # noqa: E402
from mel.gemel.evaluation import EvalSettings, evaluate  # noqa: E402
from mel.gemel.experiment import Experiment, load_experiment  # noqa: E402


def timed(fn, bucket):
    def wrapper(*a, **k):
        start = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            bucket[0] += time.perf_counter() - start
            bucket[1] += 1
    return wrapper


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=80, help="dev examples to evaluate")
    p.add_argument("--ICL_examples_num", type=int, default=4, help="demonstrations per example")
    p.add_argument("--eval_bs", type=int, default=8, help="examples per generation batch")
    p.add_argument("--output", default="bench/results/constraint.json", help="JSON results")
    a = p.parse_args(argv)

    args = params.parse_args(["--ICL_examples_num", str(a.ICL_examples_num), "--device", "cpu"])
    set_seed(args.random_seed)  # the projector is freshly initialised: seeded, so that accuracy repeats
    exp = load_experiment(args, ["dev"])
    split = exp.splits["dev"]
    split.examples, split.demos, split.images = (split.examples[:a.examples], split.demos[:a.examples],
                                                 split.images[:a.examples])
    results = {}
    for name, tree in (("with tree", exp.tree), ("without tree", Unconstrained(exp.tokenizer.eos_token_id))):
        bucket = [0.0, 0]
        originals = {fn_name: getattr(beam_search, fn_name) for fn_name in ("_top_candidates", "mask_to_tree")}
        for fn_name, fn in originals.items():
            setattr(beam_search, fn_name, timed(fn, bucket))
        tree.advance = timed(tree.advance, bucket)  # instance attribute: shadows the method for this run only
        try:
            start = time.perf_counter()
            settings = EvalSettings.from_args(args, batch_size=a.eval_bs, show_examples=0)
            result = evaluate(Experiment(exp.model, exp.tokenizer, exp.builder, tree, exp.splits), split, settings)
            acc, records = result.accuracy, result.records
            total = time.perf_counter() - start
        finally:
            for fn_name, fn in originals.items():
                setattr(beam_search, fn_name, fn)
            del tree.advance
        tokens = sum(len(exp.tokenizer(r["prediction"], add_special_tokens=False)["input_ids"]) + 1
                     for r in records)
        results[name] = {"seconds": total, "mask_seconds": bucket[0], "mask_calls": bucket[1],
                         "mask_share": bucket[0] / total, "answer_tokens": tokens,
                         "seconds_per_answer_token": total / tokens, "accuracy": acc}

    print(f"\n{'':14}{'eval s':>9}{'mask s':>9}{'mask share':>12}{'answer tok':>12}{'s/token':>10}{'acc %':>8}")
    for name, r in results.items():
        print(f"{name:14}{r['seconds']:9.2f}{r['mask_seconds']:9.3f}{100 * r['mask_share']:11.2f}%"
              f"{r['answer_tokens']:12d}{r['seconds_per_answer_token']:10.3f}{r['accuracy']:8.1f}")
    os.makedirs(os.path.dirname(a.output), exist_ok=True)
    with open(a.output, "w") as f:
        json.dump({"examples": len(split.examples), "ICL_examples_num": a.ICL_examples_num,
                   "threads": torch.get_num_threads(), "results": results}, f, indent=2)
    print(f"wrote {a.output}")
    return results


if __name__ == "__main__":
    main()

"""`python infe.py --method retriever`: the candidate retriever evaluated as a linker. Its answer is the first name of
a mention's candidate list (`prepare.py candidates`, best first), its ranking the list's order: the floor any linker
that reads those lists must beat. Nothing is trained and no model is loaded."""
import logging
import os

import torch

from mel.errors import DataError
from mel.io.atomic import write_json, write_jsonl
from mel.io.datasets import read_split
from mel.retrieval.candidates import candidates_path, read_candidate_scores, read_candidates
from mel.runs import files as runs
from mel.runs.metrics import log_summary, ranking_summary

logger = logging.getLogger(__name__)


def evaluate_retriever(args):
    """Hits@k and MRR of the candidate lists of `args.split`, with per-mention records; written beside --ckpt_dir's
    runs (or to --predictions_file) and never over an earlier evaluation."""
    split_file = os.path.join(args.dataset_dir, f"{args.split}.json")
    examples = read_split(split_file)
    if not examples:
        raise DataError(f"{split_file}: no non-NIL examples to evaluate")
    path = candidates_path(args.dataset_dir, args.split)
    lists = read_candidates(path, examples, alternative="then evaluate the retriever")
    scores = {line: values for line, (_, values) in read_candidate_scores(path).items() if values is not None}
    out = args.predictions_file or os.path.join(args.ckpt_dir, f"retriever_{args.dataset}.infe.{args.split}"
                                                               f".predictions.jsonl")
    with runs.claim_output(out, args.overwrite, "--predictions_file", "the results of an earlier evaluation",
                           also=[runs.summary_path(out)]):
        summary, records = retriever_ranking(examples, lists, scores, args.hits)
        summary = {"split": args.split, "candidates_file": path, **summary}
        write_jsonl(out, records)
        write_json(runs.summary_path(out), summary)
    log_summary(summary)
    logger.info(f"Wrote {len(records)} predictions to {out} and the summary to {runs.summary_path(out)}")
    return summary


def retriever_ranking(examples, lists, scores, ks):
    """(summary, records) of the lists as rankings: a gold's rank is its first place in its list, 0 when missing."""
    ranks = torch.tensor([lists[ex["line"]].index(ex["target"]) + 1 if ex["target"] in lists[ex["line"]] else 0
                          for ex in examples], dtype=torch.long)
    records = []
    for ex, rank in zip(examples, ranks.tolist()):
        names, values = lists[ex["line"]], scores.get(ex["line"])
        records.append({"line": ex["line"], "mention": ex["mention"], "target": ex["target"], "prediction": names[0],
                        "gold_rank": rank or None,
                        "candidates": [{"name": name, "score": values[i] if values else None}
                                       for i, name in enumerate(names)]})
    summary = {"examples": len(examples), "candidates": max(len(names) for names in lists.values()),
               "protocol": "leak_free", **ranking_summary(ranks, ks)}
    return summary, records


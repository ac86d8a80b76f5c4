"""Evaluation: decode a split with the prefix tree, score it (GEMEL's exact-match accuracy), one record per example."""
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from mel.decoding import beam_search
from mel.decoding.beam_search import DecodingOptions
from mel.errors import DataError
from mel.io.datasets import NIL
from mel.tree.candidate_trees import CandidateTrees
from utils import length_bucketed_batches

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    num_beams: int = 5
    max_new_tokens: int = 32
    batch_size: int = 8
    decoding: str = "fast"     # "fast" (constrained_beam_search) or "reference" (transformers' generate)
    options: DecodingOptions = field(default_factory=DecodingOptions)  # how the fast path runs
    show_examples: int = 2     # predictions printed after the run
    nil_threshold: float | None = None  # predict NIL when the best score is below it (None: never, as GEMEL)

    @classmethod
    def from_args(cls, args, **overrides):
        settings = dict(num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, batch_size=args.eval_bs,
                        decoding=args.decoding, options=DecodingOptions(share_prompt=args.share_prompt),
                        nil_threshold=args.nil_threshold if isinstance(args.nil_threshold, float) else None)
        return cls(**{**settings, **overrides})


@dataclass
class Evaluation:
    accuracy: float   # GEMEL's metric: % of examples whose best name equals the gold name
    records: list     # one dict per example, in the split's order
    summary: dict     # accuracy, Hits@k for k = 1..num_beams, MRR, examples, seconds, examples/s


@torch.no_grad()
def decode(exp, split, settings):
    """Yield (example indices, per example [(name, score), ...] best first) batch by batch, with progress.

    Batches are length-bucketed (longest first) so that little compute goes to padding. With N processes
    (exp.processes) this process decodes every N-th batch: each batch is the one a single process decodes.
    """
    model, builder = exp.model, exp.builder
    model.eval()
    lengths = [builder.prompt_length(ex, d) for ex, d in zip(split.examples, split.demos)]
    batches = exp.processes.shard(length_bucketed_batches(lengths, settings.batch_size, shuffle=False))
    for batch_idx in tqdm(batches, desc=f"decode {split.name}", unit="batch", disable=not exp.processes.is_main):
        exs = [split.examples[i] for i in batch_idx]
        batch = builder.collate(exs, [split.demos[i] for i in batch_idx], split.images[batch_idx], training=False)
        out = generate(model, batch, _tree_for(exp, split, exs), settings.num_beams, settings.max_new_tokens,
                       settings.decoding, settings.options)
        ranked = _decode_ranked(exp.tokenizer, out.ranked)
        for ex, hypotheses in zip(exs, ranked):
            _check_finite(ex, hypotheses, split.name)
        yield batch_idx, ranked


@torch.no_grad()
def generate(model, batch, tree, num_beams, max_new_tokens, method="fast", options=None):
    """The ranked names of each example of a left-padded PromptBatch (token ids without EOS, and scores).

    method: "fast" (beam_search.constrained_beam_search, run as `options` says) or "reference" (transformers'
    generate()); both score a name as GEMEL's original did: its log-probabilities, EOS included, summed and
    divided by that length.
    """
    inputs_embeds = model.embed(batch)
    mask = batch.attention_mask.to(inputs_embeds.device)
    if method == "reference":
        return beam_search.generate_reference(model.lm, inputs_embeds, mask, tree, num_beams=num_beams,
                                              max_new_tokens=max_new_tokens)
    return beam_search.constrained_beam_search(model.lm, inputs_embeds, mask, tree, num_beams=num_beams,
                                               max_new_tokens=max_new_tokens, options=options)


def evaluate(exp, split, settings):
    """Decode experiment.Split `split`, one record per example (ranked names with scores), and summarise it.

    With N processes each decodes its share of the batches and every process gets all records, in order."""
    start = time.perf_counter()

    def records_here():  # (index, record) of the batches this process decodes: all of them in one process
        for batch_idx, ranked in decode(exp, split, settings):
            for i, hypotheses in zip(batch_idx, ranked):
                yield i, _record(split.examples[i], hypotheses, split.demos[i], settings.nil_threshold)

    records = exp.processes.gather_in_order(len(split.examples), records_here)
    summary = summarize(records, settings.num_beams, time.perf_counter() - start)
    for r in records[:settings.show_examples]:
        logger.info(f"  {'OK ' if r['correct'] else 'ERR'} mention={r['mention']!r} target={r['target']!r} "
                    f"prediction={r['prediction']!r}")
    hits_at = ", ".join(f"@{k} {summary[f'hits@{k}']:.2f}" for k in range(1, settings.num_beams + 1))
    logger.info(f"acc: {summary['accuracy']:.4f} %   (Hits {hits_at}, MRR {summary['mrr']:.4f}; "
                f"{summary['examples']} examples in {summary['seconds']:.1f} s, {summary['examples_per_s']:.2f}/s)")
    return Evaluation(summary["accuracy"], records, summary)


def _tree_for(exp, split, examples):
    """The whole knowledge base's tree, or with candidates one tree per example of the batch."""
    if split.candidates is None:
        return exp.tree
    cache = exp.builder.cache
    return CandidateTrees([[cache[name] for name in split.candidates[ex["line"]]] for ex in examples],
                          exp.tokenizer.eos_token_id)


def _decode_ranked(tokenizer, ranked):
    """Per example [(name, score), ...] best first; names decoded as GEMEL decodes answers (stripped of spaces)."""
    names = tokenizer.batch_decode([tokens for hypotheses in ranked for tokens, _ in hypotheses],
                                   skip_special_tokens=True)
    names = iter(name.strip(" ") for name in names)
    return [[(next(names), score) for _, score in hypotheses] for hypotheses in ranked]


def _check_finite(ex, ranked, split_name):
    for _, score in ranked:
        if not math.isfinite(score):
            raise DataError(f"line {ex['line']} of the {split_name} split: the LM's log-probabilities are "
                            f"{score} (a float16 overflow?); rerun with --dtype float32 or bfloat16")


def ranked_record(ex, ranked):
    """GEMEL's record of an example from its ranked entries ({"name", "score", ...}, best first)."""
    names = [entry["name"] for entry in ranked]
    return {"line": ex["line"], "text": ex["text"], "mention": ex["mention"], "target": ex["target"],
            "prediction": names[0], "correct": names[0] == ex["target"], "score": ranked[0]["score"],
            "rank": names.index(ex["target"]) + 1 if ex["target"] in names else None, "ranked": ranked}


def _record(ex, ranked, demos, nil_threshold=None):
    record = {**ranked_record(ex, [{"name": name, "score": float(s)} for name, s in ranked]),
              "demonstrations": [int(d) for d in demos]}
    return _with_nil(record, nil_threshold)


def summarize(records, num_beams, seconds):
    """Accuracy and Hits@k in %, MRR in [0, 1] (a gold name outside the ranked list counts 0), throughput.

    Hits@k and MRR are over the linked examples (a NIL line has no name to rank); with NIL lines or NIL
    predictions, accuracy counts both, and NIL precision/recall and the linked examples' accuracy are added.
    """
    linked = [r for r in records if r["target"] != NIL]
    n, m = max(len(records), 1), max(len(linked), 1)
    ranks = [r["rank"] for r in linked]
    summary = {"accuracy": 100.0 * sum(r["correct"] for r in records) / n}
    for k in range(1, num_beams + 1):
        summary[f"hits@{k}"] = 100.0 * sum(rank is not None and rank <= k for rank in ranks) / m
    summary["mrr"] = sum(1.0 / rank for rank in ranks if rank is not None) / m
    predicted_nil = sum(r["prediction"] == NIL for r in records)
    if predicted_nil or len(linked) < len(records):
        true_nil = sum(r["prediction"] == NIL and r["target"] == NIL for r in records)
        summary.update(linked_accuracy=100.0 * sum(r["correct"] for r in linked) / m,
                       nil_precision=100.0 * true_nil / max(predicted_nil, 1),
                       nil_recall=100.0 * true_nil / max(len(records) - len(linked), 1),
                       nil_examples=len(records) - len(linked), nil_predicted=predicted_nil)
    summary.update(examples=len(records), seconds=seconds, examples_per_s=len(records) / max(seconds, 1e-9))
    return summary


def choose_nil_threshold(records):
    """The score threshold (predict NIL below it) that maximises accuracy on these records (a split evaluated
    with its NIL lines and no threshold); among equal accuracies the lowest, i.e. the fewest NIL predictions."""
    order = sorted(range(len(records)), key=lambda i: records[i]["score"])
    scores = [records[i]["score"] for i in order]
    is_nil = np.array([records[i]["target"] == NIL for i in order], dtype=np.int64)
    linked_ok = np.array([records[i]["prediction"] == records[i]["target"] for i in order], dtype=np.int64)
    # threshold before position j: the first j records (lowest scores) become NIL
    correct = np.concatenate([[0], np.cumsum(is_nil)]) + np.concatenate([np.cumsum(linked_ok[::-1])[::-1], [0]])
    cut = int(np.argmax(correct))  # first maximum: the fewest NIL predictions
    if cut == 0:
        return None  # predicting NIL never helps
    if cut == len(scores):
        return scores[-1] + 1.0
    return (scores[cut - 1] + scores[cut]) / 2


def nil_threshold_on_dev(exp, settings):
    """Evaluate dev (with its NIL lines) without a threshold and choose one there; None when NIL never helps."""
    dev = evaluate(exp, exp.splits["dev"], dataclasses.replace(settings, nil_threshold=None, show_examples=0))
    threshold = choose_nil_threshold(dev.records)
    chosen = dataclasses.replace(settings, nil_threshold=threshold)
    accuracy = summarize([_with_nil(r, threshold) for r in dev.records], settings.num_beams, 0)["accuracy"]
    logger.info(f"NIL threshold chosen on dev: {threshold} "
                f"(dev accuracy with NIL {dev.accuracy:.2f} % -> {accuracy:.2f} %)")
    return chosen


def predicts_nil(score, threshold):
    """The NIL decision: the best name's score is below the threshold (None: never, GEMEL's protocol)."""
    return threshold is not None and score < threshold


def _with_nil(record, threshold):
    prediction = NIL if predicts_nil(record["score"], threshold) else record["prediction"]
    return {**record, "prediction": prediction, "correct": prediction == record["target"]}

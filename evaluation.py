"""Evaluation: decode a split with the prefix tree, score it (GEMEL's exact-match accuracy), one record per example."""
import math
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from decoding import DecodingOptions
from utils import DataError, length_bucketed_batches


@dataclass(frozen=True)
class EvalSettings:
    num_beams: int = 5
    max_new_tokens: int = 32
    batch_size: int = 8
    decoding: str = "fast"     # "fast" (decoding.constrained_beam_search) or "reference" (transformers' generate)
    options: DecodingOptions = field(default_factory=DecodingOptions)  # how the fast path runs
    show_examples: int = 2     # predictions printed after the run

    @classmethod
    def from_args(cls, args, **overrides):
        settings = dict(num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, batch_size=args.eval_bs,
                        decoding=args.decoding, options=DecodingOptions(share_prompt=args.share_prompt))
        return cls(**{**settings, **overrides})


@torch.no_grad()
def evaluate(exp, split, settings):
    """Accuracy (%) and one record per example, in the split's order, for experiment.Split `split`."""
    model, builder = exp.model, exp.builder
    model.eval()
    lengths = [builder.prompt_length(ex, d) for ex, d in zip(split.examples, split.demos)]
    batches = length_bucketed_batches(lengths, settings.batch_size, shuffle=False)
    records = [None] * len(split.examples)
    hits = done = 0
    bar = tqdm(batches, desc=f"eval {split.name}", unit="batch")
    for batch_idx in bar:
        exs = [split.examples[i] for i in batch_idx]
        batch = builder.collate(exs, [split.demos[i] for i in batch_idx], split.images[batch_idx], training=False)
        out = model.generate(batch, exp.tree, settings.num_beams, settings.max_new_tokens, settings.decoding,
                             settings.options)
        preds = [p.strip(" ") for p in exp.tokenizer.batch_decode(out.tokens, skip_special_tokens=True)]
        for i, ex, pred, score in zip(batch_idx, exs, preds, out.scores):
            if not math.isfinite(score):
                raise DataError(f"line {ex['line']} of the {split.name} split: the LM's log-probabilities are "
                                f"{score} (a float16 overflow?); rerun with --dtype float32 or bfloat16")
            correct = pred == ex["target"]
            hits += correct
            records[i] = {"line": ex["line"], "text": ex["text"], "mention": ex["mention"],
                          "target": ex["target"], "prediction": pred, "correct": correct,
                          "score": float(score), "demonstrations": list(split.demos[i])}
        done += len(batch_idx)
        bar.set_postfix(acc=f"{100.0 * hits / done:.2f}%")
    for r in records[:settings.show_examples]:
        print(f"  {'OK ' if r['correct'] else 'ERR'} mention={r['mention']!r} target={r['target']!r} "
              f"prediction={r['prediction']!r}")
    acc = 100.0 * hits / max(len(records), 1)
    print(f"acc: {acc:.4f} %")
    return acc, records

"""Evaluate a GEMEL checkpoint: constrained generation of entity names, accuracy, per-example predictions.

    python infe.py                                   # the demo checkpoint written by `python main.py`
    python infe.py --dataset wikidiverse --model_name opt-6.7b \
        --best_ckpt opt-6.7b_wikidiverse_linear_4token_16examples_82_77.pkl
"""
import json
import os
import random
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

import params
from decoding import Unconstrained
from model import GEMEL, keep_freed_memory_for_reuse, load_checkpoint, load_lm, pick_device, pick_dtype
from retrieval import DemonstrationRetriever, MentionEncoder
from utils import (PromptBuilder, image_key, length_bucketed_batches, load_image_features,
                   load_mention_embeddings, load_prefix_tree, load_split)


@dataclass
class Split:
    name: str
    examples: list        # NIL-filtered examples
    demos: list           # per example: training indices of its demonstrations, least similar first
    images: np.ndarray    # (N, dim_clip) each example's own image feature


@dataclass
class Experiment:
    model: GEMEL
    tokenizer: object
    builder: PromptBuilder
    tree: object          # trie.PrefixTree, or decoding.Unconstrained with --no-use_prefix_tree
    splits: dict


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_experiment(args, split_names):
    """Everything evaluation and training need: LM, projector, data, demonstrations, prefix tree."""
    device = pick_device(args.device)
    if device.type == "cpu":
        keep_freed_memory_for_reuse()
    dtype = pick_dtype(args.dtype, device)
    lm, tokenizer = load_lm(args.model_name, dtype, device, args.cache_dir)
    model = GEMEL(lm, args.dim_clip, args.visual_prefix_length)

    train = load_split(args.data_file["train"])
    if not train:
        raise ValueError(f"{args.data_file['train']}: no non-NIL examples; demonstrations come from it")
    examples = {name: train if name == "train" else load_split(args.data_file[name]) for name in split_names}

    keys = [image_key(ex) for ex in train]
    for name in split_names:
        keys += [image_key(ex) for ex in examples[name]]
    unique_keys = list(dict.fromkeys(keys))
    feats = load_image_features(args.img_feat, unique_keys, args.dim_clip)
    row_of = {k: i for i, k in enumerate(unique_keys)}
    features_of = lambda exs: feats[[row_of[image_key(ex)] for ex in exs]]  # noqa: E731

    demos = {name: [[] for _ in examples[name]] for name in split_names}
    if args.ICL_examples_num > 0:
        train_emb = load_mention_embeddings(args.ment_embed_file, len(train), args.data_file["train"])
        retriever = DemonstrationRetriever(train_emb, train)
        encoder = MentionEncoder(args.simcse_model, device=device, cache_dir=args.cache_dir)
        if encoder.model.config.hidden_size != train_emb.shape[1]:
            raise ValueError(f"{args.ment_embed_file}: rows have dimension {train_emb.shape[1]} but "
                             f"{args.simcse_model!r} embeds into {encoder.model.config.hidden_size}; build the "
                             f"file with this encoder: `python prepare.py embeddings --dataset {args.dataset} "
                             f"--simcse_model {args.simcse_model}`")
        for name in split_names:
            queries = encoder.encode([ex["mention"] for ex in examples[name]], progress=True)
            demos[name] = retriever.retrieve(queries, args.ICL_examples_num, queries=examples[name],
                                             exclude_self=(name == "train"))
        del encoder

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    builder = PromptBuilder(tokenizer, train, features_of(train), args.visual_prefix_length, pad)
    splits = {}
    for name in split_names:
        builder.prepare(examples[name])
        splits[name] = Split(name, examples[name], demos[name], features_of(examples[name]))
    if args.use_prefix_tree:
        tree = load_prefix_tree(args.dataset_dir, tokenizer, args.model_name, args.trie_file)
    else:
        tree = Unconstrained(tokenizer.eos_token_id)
    return Experiment(model, tokenizer, builder, tree, splits)


@torch.no_grad()
def evaluate(model, builder, tokenizer, split, tree, num_beams, max_new_tokens, eval_bs, decoding="fast",
             show_examples=2):
    """Accuracy (%) and one record per example, in the split's order."""
    model.eval()
    lengths = [builder.prompt_length(ex, d) for ex, d in zip(split.examples, split.demos)]
    batches = length_bucketed_batches(lengths, eval_bs, shuffle=False)
    records = [None] * len(split.examples)
    hits = done = 0
    bar = tqdm(batches, desc=f"eval {split.name}", unit="batch")
    for batch_idx in bar:
        exs = [split.examples[i] for i in batch_idx]
        batch = builder.collate(exs, [split.demos[i] for i in batch_idx], split.images[batch_idx],
                                training=False)
        out = model.generate(batch, tree, num_beams, max_new_tokens, decoding)
        preds = [p.strip(" ") for p in tokenizer.batch_decode(out.tokens, skip_special_tokens=True)]
        for i, ex, pred, score in zip(batch_idx, exs, preds, out.scores):
            correct = pred == ex["target"]
            hits += correct
            records[i] = {"line": ex["line"], "text": ex["text"], "mention": ex["mention"],
                          "target": ex["target"], "prediction": pred, "correct": correct,
                          "score": float(score), "demonstrations": list(split.demos[i])}
        done += len(batch_idx)
        bar.set_postfix(acc=f"{100.0 * hits / done:.2f}%")
    for r in records[:show_examples]:
        print(f"  {'OK ' if r['correct'] else 'ERR'} mention={r['mention']!r} target={r['target']!r} "
              f"prediction={r['prediction']!r}")
    acc = 100.0 * hits / max(len(records), 1)
    print(f"acc: {acc:.4f} %")
    return acc, records


def write_jsonl_atomic(path, rows):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".jsonl")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def checkpoint_path(args):
    if args.best_ckpt is None:
        return os.path.join(args.ckpt_dir, params.checkpoint_name(args))
    if os.path.exists(args.best_ckpt) or os.path.isabs(args.best_ckpt):
        return args.best_ckpt
    return os.path.join(args.ckpt_dir, args.best_ckpt)


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
    acc, records = evaluate(exp.model, exp.builder, exp.tokenizer, exp.splits[args.split], exp.tree,
                            args.num_beams, args.max_new_tokens, args.eval_bs, args.decoding)
    out = args.predictions_file or os.path.splitext(ckpt)[0] + f".{args.split}.predictions.jsonl"
    write_jsonl_atomic(out, records)
    print(f"Wrote {len(records)} predictions to {out}")
    return acc


if __name__ == "__main__":
    main()

"""The shared set-up of training and evaluation: the LM, the projector, the splits with their demonstrations and
image features, the prefix tree, and where a run's checkpoint lives. main.py and infe.py are thin scripts over it.
"""
import os
from dataclasses import dataclass

import numpy as np

import params
from decoding import Unconstrained
from loading import keep_freed_memory_for_reuse, load_lm, pick_device, pick_dtype
from model import GEMEL
from retrieval import DemonstrationRetriever, MentionEncoder
from trees import load_prefix_tree
from utils import PromptBuilder, image_key, load_image_features, load_mention_embeddings, load_split


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
    splits: dict          # split name -> Split


def checkpoint_path(args):
    """The checkpoint a run writes (GEMEL's file name in --ckpt_dir), or --best_ckpt: a path or a name in --ckpt_dir."""
    if args.best_ckpt is None:
        return os.path.join(args.ckpt_dir, params.checkpoint_name(args))
    if os.path.exists(args.best_ckpt) or os.path.isabs(args.best_ckpt):
        return args.best_ckpt
    return os.path.join(args.ckpt_dir, args.best_ckpt)


def load_experiment(args, split_names):
    """Everything evaluation and training need: LM, projector, data, demonstrations, prefix tree."""
    device = pick_device(args.device)
    if device.type == "cpu":
        keep_freed_memory_for_reuse()
    lm, tokenizer = load_lm(args.model_name, pick_dtype(args.dtype, device), device, args.cache_dir)
    model = GEMEL(lm, args.dim_clip, args.visual_prefix_length)

    train = load_split(args.data_file["train"])
    if not train:
        raise ValueError(f"{args.data_file['train']}: no non-NIL examples; demonstrations come from it")
    examples = {name: train if name == "train" else load_split(args.data_file[name]) for name in split_names}
    features_of = _image_features(args, train, examples)
    demos = _demonstrations(args, train, examples, device)

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


def _image_features(args, train, examples):
    """A function from examples to their (N, dim_clip) features, reading each needed key of the file once."""
    keys = [image_key(ex) for ex in train]
    for split_examples in examples.values():
        keys += [image_key(ex) for ex in split_examples]
    unique_keys = list(dict.fromkeys(keys))
    feats = load_image_features(args.img_feat, unique_keys, args.dim_clip)
    row_of = {k: i for i, k in enumerate(unique_keys)}
    return lambda exs: feats[[row_of[image_key(ex)] for ex in exs]]


def _demonstrations(args, train, examples, device):
    """Per split, per example: the training indices of its demonstrations, least similar first."""
    demos = {name: [[] for _ in split_examples] for name, split_examples in examples.items()}
    if args.ICL_examples_num == 0:
        return demos
    train_emb = load_mention_embeddings(args.ment_embed_file, len(train), args.data_file["train"])
    retriever = DemonstrationRetriever(train_emb, train)
    encoder = MentionEncoder(args.simcse_model, device=device, cache_dir=args.cache_dir)
    if encoder.model.config.hidden_size != train_emb.shape[1]:
        raise ValueError(f"{args.ment_embed_file}: rows have dimension {train_emb.shape[1]} but "
                         f"{args.simcse_model!r} embeds into {encoder.model.config.hidden_size}; build the "
                         f"file with this encoder: `python prepare.py embeddings --dataset {args.dataset} "
                         f"--simcse_model {args.simcse_model}`")
    for name, split_examples in examples.items():
        queries = encoder.encode([ex["mention"] for ex in split_examples], progress=True)
        demos[name] = retriever.retrieve(queries, args.ICL_examples_num, queries=split_examples,
                                         exclude_self=(name == "train"))
    return demos

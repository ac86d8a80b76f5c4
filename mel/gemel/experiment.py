"""The shared set-up of GEMEL's training, evaluation and linking: the LM, the projector, the splits with their
demonstrations and image features, and the prefix tree. main.py, infe.py and link.py are thin scripts over it.

Every input is read and checked before the LM is loaded, so that a bad file fails in seconds with one line that names
it and says what to do.
"""
import logging
from dataclasses import dataclass, field

import numpy as np

from mel.decoding.beam_search import Unconstrained
from mel.errors import DataError
from mel.io.datasets import NIL, image_key, load_image_features, load_mention_embeddings, read_split
from mel.models.loading import keep_freed_memory_for_reuse, load_lm, load_tokenizer, pick_device, pick_dtype
from mel.retrieval.candidates import candidates_path, read_candidates, recall_at, with_gold
from mel.retrieval.demonstrations import DemonstrationRetriever
from mel.retrieval.encoder import MentionEncoder, resolve_encoder
from mel.runs.processes import Processes
from mel.tree.store import load_prefix_tree
from model import GEMEL
from utils import PromptBuilder

logger = logging.getLogger(__name__)


@dataclass
class Split:
    name: str
    examples: list        # NIL-filtered examples
    demos: list           # per example: training indices of its demonstrations, least similar first
    images: np.ndarray    # (N, dim_clip) each example's own image feature
    candidates: dict | None = None  # split line -> candidate names (--use_candidates), else the whole tree


@dataclass
class Experiment:
    model: GEMEL
    tokenizer: object
    builder: PromptBuilder
    tree: object          # PrefixTree, or Unconstrained with --no-use_prefix_tree
    splits: dict          # split name -> Split
    demonstrations: object = None  # DemonstrationFinder: demonstrations for new queries (link.py)
    args: object = None
    processes: Processes = field(default_factory=Processes)  # one process unless launched as several

    def make_split(self, name, examples, images, candidates=None):
        """A Split of `examples` (dicts with text, mention, target, line): demonstrations retrieved and fitted to
        the LM's context, texts tokenized, candidates (split line -> names) tokenized."""
        demos = self.demonstrations(examples, name) if self.demonstrations else [[] for _ in examples]
        self.builder.prepare(examples)
        demos = _fit_context(self.builder, examples, demos, self.model.lm, self.args, name)
        split = Split(name, examples, demos, images, candidates)
        if candidates:
            self.builder.cache.add([n for names in candidates.values() for n in names])
        elif self.args.use_prefix_tree and any(ex["target"] for ex in examples):
            report_unreachable_names(self.builder, self.tree, split)
        return split


def load_experiment(args, split_names, processes=None):
    """Everything evaluation and training need: data and tree checked first, then the LM, then demonstrations."""
    processes = processes or Processes()
    device = processes.local_device(pick_device(args.device))
    if args.device_map is not None and processes.size > 1:
        raise DataError(f"--device_map with {processes.size} processes: each process would place a whole LM "
                        f"over the same devices. Run one process with --device_map (an LM too big for one GPU), or N "
                        f"processes without it (one GPU each)")
    tokenizer = load_tokenizer(args.model_name, args.cache_dir)
    train = read_split(args.data_file["train"])
    if not train:
        raise DataError(f"{args.data_file['train']}: no non-NIL examples; demonstrations and training come from it")
    examples = {name: train if name == "train" else read_split(args.data_file[name], keep_nil=args.keep_nil)
                for name in split_names}
    for name, split_examples in examples.items():
        if not split_examples:
            use = "select the best checkpoint on" if name == "dev" else "evaluate"
            raise DataError(f"{args.data_file[name]}: no non-NIL examples to {use} (NIL lines are dropped, as in "
                            f"GEMEL); give a split with linked mentions")
    if args.ICL_examples_num > len(train):
        raise DataError(f"--ICL_examples_num {args.ICL_examples_num}: {args.data_file['train']} has only {len(train)} "
                        f"non-NIL examples (a training example is never its own demonstration); ask for fewer")
    features_of = _image_features(args, train, examples)
    candidates = {name: _candidates(args, name, split_examples) for name, split_examples in examples.items()}
    train_emb = None
    if args.ICL_examples_num > 0:
        train_emb = load_mention_embeddings(args.ment_embed_file, len(train), args.data_file["train"])
        resolve_encoder(args.simcse_model)  # a misspelled encoder fails here, not after the LM has loaded
    if args.use_prefix_tree:
        tree = load_prefix_tree(args.dataset_dir, tokenizer, args.model_name, args.trie_file)
    else:
        tree = Unconstrained(tokenizer.eos_token_id)
    for name, lists in candidates.items():
        if lists is not None:
            path = candidates_path(args.dataset_dir, name)
            check_candidates_in_tree(tokenizer, tree, lists, lambda line, path=path, name=name:
                                     f"{path} (the list of {name}.json line {line})")
            candidates[name] = with_gold(lists, examples[name]) if args.candidates_with_gold else lists

    if device.type == "cpu":
        keep_freed_memory_for_reuse()
    lm = load_lm(args.model_name, pick_dtype(args.dtype, device), device, args.cache_dir, args.device_map,
                 args.max_memory, args.offload_folder)
    model = GEMEL(lm, args.dim_clip, args.visual_prefix_length)
    finder = None
    if args.ICL_examples_num > 0:
        finder = DemonstrationFinder(args, train, train_emb, device, show_progress=processes.is_main)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    builder = PromptBuilder(tokenizer, train, features_of(train), args.visual_prefix_length, pad)
    exp = Experiment(model, tokenizer, builder, tree, {}, finder, args, processes)
    for name in split_names:
        exp.splits[name] = exp.make_split(name, examples[name], features_of(examples[name]), candidates[name])
    return exp


def _candidates(args, split_name, examples):
    """The split's candidate lists (--use_candidates), with their recall printed; None without the flag."""
    if not args.use_candidates:
        return None
    path = candidates_path(args.dataset_dir, split_name)
    candidates = read_candidates(path, examples)
    recall = recall_at(candidates, examples, (1, max(len(c) for c in candidates.values())))
    shown = ", ".join(f"@{k} {v:.1f} %" for k, v in recall.items())
    oracle = " (the gold is added where missing: --candidates_with_gold)" if args.candidates_with_gold else ""
    logger.info(f"{split_name}: candidates from {path}, recall {shown}{oracle}")
    return candidates


def check_candidates_in_tree(tokenizer, tree, candidates, where):
    """Refuse a candidate that is no name of the knowledge base (the prefix tree): decoding among an example's own
    candidates would predict it. candidates: {line: names}; where(line): the origin of that list, for messages."""
    if isinstance(tree, Unconstrained):
        return
    names = list(dict.fromkeys(name for lists in candidates.values() for name in lists))
    eos = tree.eos_token_id
    tokens = tokenizer(names, add_special_tokens=False)["input_ids"]
    known = {name for name, ids in zip(names, tokens) if [eos, *ids, eos] in tree}
    for line, lists in candidates.items():
        unknown = [name for name in lists if name not in known]
        if unknown:
            raise DataError(f"{where(line)}: candidate {unknown[0]!r} is not an entity of the knowledge base (no name "
                            f"of the prefix tree); remove it, or add it to entities.txt and rebuild the tree")


def _image_features(args, train, examples):
    """A function from examples to their (N, dim_clip) features, reading each needed key of the file once."""
    keys = [image_key(ex) for ex in train]
    for split_examples in examples.values():
        keys += [image_key(ex) for ex in split_examples]
    unique_keys = list(dict.fromkeys(keys))
    feats = load_image_features(args.img_feat, unique_keys, args.dim_clip)
    row_of = {k: i for i, k in enumerate(unique_keys)}
    return lambda exs: feats[[row_of[image_key(ex)] for ex in exs]]


class DemonstrationFinder:
    """Each query's demonstrations: training indices by mention similarity, least similar first (mel/retrieval)."""

    def __init__(self, args, train, train_emb, device, show_progress=True):
        self.args, self.train, self.show_progress = args, train, show_progress
        self.retriever = DemonstrationRetriever(train_emb, train)
        self.encoder = MentionEncoder(args.simcse_model, device=device, cache_dir=args.cache_dir)
        if self.encoder.model.config.hidden_size != train_emb.shape[1]:
            raise DataError(f"{args.ment_embed_file}: rows have dimension {train_emb.shape[1]} but "
                            f"{args.simcse_model!r} embeds into {self.encoder.model.config.hidden_size}; build the "
                            f"file with this encoder: `python prepare.py embeddings --dataset {args.dataset} "
                            f"--simcse_model {args.simcse_model}`")

    def __call__(self, examples, split_name):
        """A training query (split "train") never gets itself: examples with its mention and text are skipped."""
        n = self.args.ICL_examples_num
        queries = self.encoder.encode([ex["mention"] for ex in examples], progress=self.show_progress)
        demos = self.retriever.retrieve(queries, n, queries=examples, exclude_self=(split_name == "train"))
        short = [ex["line"] for ex, d in zip(examples, demos) if len(d) < n]
        if short:
            raise DataError(f"{self.args.data_file['train']}: too few other training examples for "
                            f"--ICL_examples_num {n} demonstrations of {len(short)} {split_name} example(s) (e.g. "
                            f"line {short[0]}; a training example's own mention and text are skipped); ask for fewer")
        return demos


def _fit_context(builder, examples, demos, lm, args, split_name):
    """Drop each prompt's least similar demonstrations (they come first) until it fits the LM's positions.

    Room is kept for the answer: the target and EOS when training, --max_new_tokens when generating.
    """
    limit = getattr(lm.config, "max_position_embeddings", None)
    if not limit:
        return demos
    training = split_name == "train"
    answer_room = 0 if training else args.max_new_tokens

    def need(ex, kept):
        return builder.prompt_length(ex, kept, with_target=training) + answer_room

    fitted, shortened = [], 0
    for ex, ex_demos in zip(examples, demos):
        kept = list(ex_demos)
        while kept and need(ex, kept) > limit:
            kept = kept[1:]
        if need(ex, kept) > limit:
            where = ex.get("at") or f"{args.data_file.get(split_name, split_name)}, line {ex['line']}"
            raise DataError(f"{where}: the prompt needs {need(ex, kept)} positions even without "
                            f"demonstrations, but {args.model_name} has {limit}; shorten the text")
        shortened += len(kept) < len(ex_demos)
        fitted.append(kept)
    if shortened:
        logger.info(f"{split_name}: {shortened} of {len(examples)} prompts were longer than the LM's {limit} "
                    f"positions; their least similar demonstrations were left out")
    return fitted


def report_unreachable_names(builder, tree, split):
    """Say how many gold names the tree cannot produce: constrained decoding never predicts them."""
    eos = tree.eos_token_id
    linked = [ex for ex in split.examples if ex["target"] != NIL]
    missing = [ex for ex in linked if [eos, *builder.cache[ex["target"]].tolist(), eos] not in tree]
    if missing:
        ceiling = 100.0 * (len(split.examples) - len(missing)) / len(split.examples)
        logger.warning(f"{len(missing)} of {len(linked)} {split.name} gold names are not in the prefix tree, "
                       f"so decoding cannot produce them (accuracy ceiling {ceiling:.2f} %), e.g. "
                       f"{missing[0]['target']!r} (line {missing[0]['line']}); add them to the entity list and "
                       f"rebuild the tree")
    return len(missing)

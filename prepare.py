"""Build every derived file of a dataset folder from raw inputs, one command each.

    python prepare.py trie       --dataset mydata --model_name opt-6.7b         # prefix tree for the LM's tokenizer
    python prepare.py embeddings --dataset mydata --simcse_model minilm-l6      # training-mention embeddings
    python prepare.py clip       --dataset mydata --images path/to/images       # CLIP image features (resumable)
    python prepare.py candidates --dataset mydata --num_candidates 10          # candidate entities per mention
    python prepare.py drin       --dataset mydata                              # DRIN's features (drin/features.py)
    python prepare.py all        --dataset mydata --images path/to/images       # whatever the folder is missing

Each step writes into the dataset folder (--data_dir/--dataset) exactly the file main.py and infe.py read, with
the same defaults (params.DATASET_PRESETS), writes it atomically (temp file in the same folder + os.replace, so a
crash never leaves a truncated file in place of a good one) and prints what it wrote. The steps themselves live in
trees.py (prefix tree), retrieval.py (mention embeddings), clip_features.py (CLIP features) and candidates.py
(candidate lists); this file is their command line.
"""
import argparse
import os
import sys

from candidates import build_candidates
from clip_features import (DEFAULT_CLIP_MODEL, DEFAULT_IMG_FEAT, SPLITS, extract_clip_features, list_image_folder,
                           missing_image_keys, read_image_list, report_split_coverage)
from drin.features import CAPTIONS_FILE
from loading import pick_device
from params import DATASET_PRESETS, ENCODER_REGISTRY, MODEL_REGISTRY, PAPER_PRESET
from retrieval import build_embeddings, default_embedding_path, stale_embeddings
from trees import ENTITY_LIST, build_tree, find_matching_tree, load_tokenizer, read_entity_names
from utils import DataError


def preset(dataset):
    return DATASET_PRESETS.get(dataset, PAPER_PRESET)


def dataset_folder(data_dir, dataset):
    folder = os.path.join(data_dir, dataset)
    if not os.path.isdir(folder):
        raise DataError(f"dataset folder {folder!r} does not exist: create it with train.json/dev.json/test.json "
                        f"(JSON lines) and entities.txt (one entity name per line), or pick --dataset / --data_dir")
    return folder


# ----------------------------------------------------------------------------- command line

def add_common(p):
    p.add_argument("--dataset", default="demo", help="dataset folder name under --data_dir (wikidiverse, wikimel, "
                                                      "demo, or your own)")
    p.add_argument("--data_dir", default="./data/", help="folder holding one sub-folder per dataset")
    p.add_argument("--cache_dir", default=None, help="transformers cache for downloaded models")
    p.add_argument("--device", default=None, help="cuda, cpu, cuda:1, ...; unset: cuda if available")


# either-or flags: (name, help) each, default None
TREE_SOURCES = (
    ("--names", "entity list, one name per line (default: the dataset's entities.txt, else GEMEL's "
                "prefix_tree_opt.pkl, else another prefix_tree_*.marisa of the folder)"),
    ("--from_tree", "recover the names from a tree built with another tokenizer: GEMEL's pickle (.pkl) or a .marisa "
                    "tree; names that do not round-trip are reported"),
)
IMAGE_SOURCES = (
    ("--images", "folder of images; each image's key is its path relative to the folder (e.g. train/0.jpg), which "
                 "must equal the img_name / img_url of the splits"),
    ("--image_list", "text file of `key<TAB>path` lines (for keys that are URLs, or files without an image "
                     "extension); relative paths are relative to the list file"),
)


def add_alternatives(p, flags):
    group = p.add_mutually_exclusive_group()
    for name, help_text in flags:
        group.add_argument(name, default=None, help=help_text)


def add_trie_flags(p, standalone):
    p.add_argument("--model_name", default=None,
                   help=f"LM whose tokenizer the tree is for: a short name ({', '.join(MODEL_REGISTRY)}), a hub id or "
                        f"a local folder (default: the dataset's, as main.py: opt-6.7b, demo: smollm2-135m)")
    if standalone:
        add_alternatives(p, TREE_SOURCES)
        p.add_argument("--output", default=None,
                       help="tree file to write (default: <dataset folder>/prefix_tree_<tag>.marisa, the file "
                            "main.py looks for)")
    p.add_argument("--source_model_name", default=None,
                   help="model whose tokenizer built the source tree (default: opt-6.7b for a .pkl, the name "
                        "recorded in a .marisa's header)")


def add_embedding_flags(p):
    p.add_argument("--simcse_model", default=None,
                   help=f"sentence encoder: a short name ({', '.join(ENCODER_REGISTRY)}), a hub id or a local folder; "
                        f"SimCSE uses its pooler output, sentence-transformers folders mean pooling (default: the "
                        f"dataset's, as main.py)")
    p.add_argument("--ment_embed_file", default=None,
                   help="output file name in the dataset folder (default: the one main.py reads for this dataset)")
    p.add_argument("--embed_batch_size", type=int, default=128, help="mentions per encoder batch")


def add_clip_flags(p):
    add_alternatives(p, IMAGE_SOURCES)
    p.add_argument("--clip_model", default=DEFAULT_CLIP_MODEL,
                   help="image encoder (hub id or local folder): a CLIP (full or vision-only; the feature is the "
                        "vision tower's pooled output, 1024-d for ViT-L/14, GEMEL's) or another vision model with a "
                        "pooler, e.g. microsoft/resnet-152 (2048-d, DRIN's image features)")
    p.add_argument("--img_feat", default=DEFAULT_IMG_FEAT, help="HDF5 file of image features in the dataset folder")
    p.add_argument("--clip_batch_size", type=int, default=32, help="images per CLIP forward pass")
    p.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes decoding and resizing images")
    p.add_argument("--min_image_size", type=int, default=10,
                   help="images with a side shorter than this many pixels count as bad (placeholders, icons)")
    p.add_argument("--default_image", default=None,
                   help="image file whose features bad images get, or `black` for a black image (default: bad "
                        "images are skipped)")


def add_drin_flags(p):
    p.add_argument("--text_encoder", default=None,
                   help=f"BERT-style encoder of mention spans and entity texts: a short name "
                        f"({', '.join(ENCODER_REGISTRY)}), a hub id or a local folder (the original: bert-base-cased; "
                        f"default: the dataset's sentence encoder)")
    p.add_argument("--entity_pooling", default="encoder", choices=("encoder", "wikimel"),
                   help="entity text feature: the encoder's own pooling for the vertex and the tt edge (WikiDiverse: "
                        "BERT's pooler), or wikimel: the mean of the tokens between [CLS] and [SEP] for the vertex "
                        "and [CLS] for the edge")
    p.add_argument("--img_feat", default=DEFAULT_IMG_FEAT,
                   help="HDF5 of image features in the dataset folder (as `prepare.py clip` writes): the image "
                        "vertices' input, for mention and entity image keys")
    p.add_argument("--image_text", default=None, choices=("captions", "clip"),
                   help="image-text space of the cross-modal edges: clip (--clip_model on the images of --images / "
                        f"--image_list) or captions ({CAPTIONS_FILE} of the folder: images described in words, both "
                        f"towers the text encoder). Default: captions when the folder has {CAPTIONS_FILE}, else clip")
    p.add_argument("--clip_model", default="openai/clip-vit-base-patch32",
                   help="CLIP for --image_text clip (the original's)")
    add_alternatives(p, IMAGE_SOURCES)
    p.add_argument("--splits", default=",".join(SPLITS), help="splits to compute (those with a <split>.json)")


def build_parser():
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=fmt)
    steps = parser.add_subparsers(dest="step", required=True, metavar="{trie,embeddings,clip,candidates,drin,all}")

    p = steps.add_parser("trie", formatter_class=fmt,
                         help="prefix tree of the entity names for an LM's tokenizer")
    add_common(p)
    add_trie_flags(p, standalone=True)

    p = steps.add_parser("embeddings", formatter_class=fmt,
                         help="training-mention embeddings for demonstration retrieval")
    add_common(p)
    add_embedding_flags(p)

    p = steps.add_parser("clip", formatter_class=fmt, help="CLIP image features (HDF5), resumable")
    add_common(p)
    add_clip_flags(p)

    p = steps.add_parser("candidates", formatter_class=fmt,
                         help="candidate entities per mention (sentence encoder + string similarity), recall@k")
    add_common(p)
    add_embedding_flags(p)
    p.add_argument("--num_candidates", type=int, default=10, help="candidates kept per mention")

    p = steps.add_parser("drin", formatter_class=fmt,
                         help="DRIN's features: entity and mention text, images, the image-text space (HDF5)")
    add_common(p)
    add_drin_flags(p)

    p = steps.add_parser("all", formatter_class=fmt,
                         help="run the steps whose files the dataset folder is missing (or holds stale)")
    add_common(p)
    add_trie_flags(p, standalone=False)
    add_embedding_flags(p)
    add_clip_flags(p)
    return parser


def finalize(args, parser):
    for name in ("embed_batch_size", "clip_batch_size", "min_image_size", "num_candidates"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name} must be at least 1")
    if getattr(args, "num_workers", 0) < 0:
        parser.error("--num_workers must be >= 0")
    default = preset(args.dataset)
    if getattr(args, "model_name", "") is None:
        args.model_name = default["model_name"]
    if getattr(args, "simcse_model", "") is None:
        args.simcse_model = default["simcse_model"]
    if getattr(args, "text_encoder", "") is None:
        args.text_encoder = default["simcse_model"]
    return args


def image_items(args):
    if args.images is not None:
        return list_image_folder(args.images)
    return read_image_list(args.image_list)


def run_clip(args, folder):
    output = os.path.join(folder, args.img_feat)
    summary = extract_clip_features(image_items(args), output, args.clip_model, args.clip_batch_size,
                                    args.num_workers, args.min_image_size, args.default_image, args.device)
    if any(os.path.exists(os.path.join(folder, f"{s}.json")) for s in SPLITS):
        report_split_coverage(folder, output)
    return summary


def run_drin(args, folder):
    from drin.features import (TextEncoder, CaptionSpace, ClipSpace, build_entity_features, build_split_features,
                               read_captions)
    from utils import feature_dimension

    captions = os.path.join(folder, CAPTIONS_FILE)
    mode = args.image_text or ("captions" if os.path.exists(captions) else "clip")
    if mode == "clip" and args.images is None and args.image_list is None:
        raise DataError(f"prepare.py drin --image_text clip needs the images (--images <folder> or --image_list "
                        f"<file>) for CLIP's image tower; or describe each image in {captions} (--image_text captions)")
    img_feat = os.path.join(folder, args.img_feat)
    dim_image = feature_dimension(img_feat)
    text = TextEncoder(args.text_encoder, device=str(pick_device(args.device)), cache_dir=args.cache_dir)
    if mode == "captions":
        space = CaptionSpace(text, read_captions(captions), captions)
    else:
        space = ClipSpace(args.clip_model, dict(image_items(args)), str(pick_device(args.device)), args.cache_dir)
    print(f"DRIN features: text {args.text_encoder}, images {img_feat} ({dim_image}-d), image-text space {mode}")
    build_entity_features(folder, text, space, img_feat, dim_image, args.entity_pooling)
    for split in args.splits.split(","):
        if os.path.exists(os.path.join(folder, f"{split}.json")):
            build_split_features(folder, split, text, space, img_feat, dim_image)


def run_all(args, folder):
    """Run each step whose output is missing or stale; returns 0, or 1 when a needed step could not run."""
    steps = (trie_if_needed, embeddings_if_needed, clip_if_needed)
    failed = [message for message in (step(args, folder) for step in steps) if message]
    for message in failed:
        print(f"Could not build: {message}")
    return 1 if failed else 0


def trie_if_needed(args, folder):
    """Build the tree unless one built with the LM's tokenizer is there; returns why it could not, or None."""
    tokenizer = load_tokenizer(args.model_name, args.cache_dir)
    tree = find_matching_tree(folder, tokenizer)
    if tree:
        print(f"[trie] {tree} was built with the tokenizer of {args.model_name}: nothing to do")
        return None
    try:
        build_tree(folder, args.model_name, source_model_name=args.source_model_name, cache_dir=args.cache_dir,
                   tokenizer=tokenizer)
    except DataError as error:
        return f"[trie] {error}"
    return None


def embeddings_if_needed(args, folder):
    train_file = os.path.join(folder, "train.json")
    if not os.path.exists(train_file):
        return f"[embeddings] {train_file} is missing: the embeddings are of its mentions"
    embeddings = default_embedding_path(folder, args.dataset, args.ment_embed_file)
    reason = stale_embeddings(embeddings, train_file)
    if reason is None:
        print(f"[embeddings] {embeddings} has one row per non-NIL training example: nothing to do")
        return None
    print(f"[embeddings] {embeddings} {reason}: building it")
    build_embeddings(train_file, args.simcse_model, embeddings, args.device, args.embed_batch_size, args.cache_dir)
    return None


def clip_if_needed(args, folder):
    features = os.path.join(folder, args.img_feat)
    missing = missing_image_keys(folder, features)
    if os.path.exists(features) and not missing:
        print(f"[clip] {features} holds a feature for every image key of the splits: nothing to do")
        return None
    if args.images is None and args.image_list is None:
        what = "does not exist" if not os.path.exists(features) else f"lacks {len(missing):,} image keys of the splits"
        return (f"[clip] {features} {what}; give the images: `python prepare.py clip --data_dir "
                f"{args.data_dir} --dataset {args.dataset} --images <folder>` (or --image_list <file>)")
    run_clip(args, folder)
    return None


def main(argv=None):
    parser = build_parser()
    args = finalize(parser.parse_args(argv), parser)
    folder = dataset_folder(args.data_dir, args.dataset)
    if args.step == "trie":
        build_tree(folder, args.model_name, args.names, args.from_tree, args.source_model_name, args.output,
                   args.cache_dir)
    elif args.step == "embeddings":
        build_embeddings(os.path.join(folder, "train.json"), args.simcse_model,
                         default_embedding_path(folder, args.dataset, args.ment_embed_file), args.device,
                         args.embed_batch_size, args.cache_dir)
    elif args.step == "clip":
        if args.images is None and args.image_list is None:
            parser.error("clip needs --images <folder> or --image_list <file>")
        run_clip(args, folder)
    elif args.step == "candidates":
        names_file = os.path.join(folder, ENTITY_LIST)
        if not os.path.exists(names_file):
            raise DataError(f"{names_file}: the knowledge base's entity names are needed (one per line)")
        splits = [s for s in SPLITS if os.path.exists(os.path.join(folder, f"{s}.json"))]
        build_candidates(folder, splits, read_entity_names(names_file), args.simcse_model, args.num_candidates,
                         args.device, args.embed_batch_size, args.cache_dir)
    elif args.step == "drin":
        run_drin(args, folder)
    else:
        return run_all(args, folder)
    return 0


if __name__ == "__main__":
    from trie import TokenizerMismatchError

    try:
        sys.exit(main())
    except (DataError, TokenizerMismatchError) as error:
        sys.exit(f"error: {error}")

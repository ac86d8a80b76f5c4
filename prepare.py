"""Build every derived file of a dataset folder from raw inputs, one command each.

    python prepare.py trie       --dataset mydata --model_name opt-6.7b         # prefix tree for the LM's tokenizer
    python prepare.py embeddings --dataset mydata --simcse_model minilm-l6      # training-mention embeddings
    python prepare.py clip       --dataset mydata --images path/to/images       # CLIP image features (resumable)
    python prepare.py candidates --dataset mydata --num_candidates 10          # candidate entities per mention
    python prepare.py drin       --dataset mydata                              # DRIN's features (mel/drin/features.py)
    python prepare.py drin_release wikidiverse path/to/raw --dataset wikidiverse_drin   # DRIN's released raw data
    python prepare.py all        --dataset mydata --images path/to/images       # whatever the folder is missing

Each step writes into the dataset folder (--data_dir/--dataset) exactly the file main.py and infe.py read, with
the same defaults (mel.models.registry's presets), writes it atomically (temp file in the same folder + os.replace,
so a crash never leaves a truncated file in place of a good one) and logs what it wrote. The steps themselves live in
the package (mel/tree/store.py, mel/retrieval/, mel/images/clip.py, mel/drin/); this file is their command line.
"""
import os

import params
from mel.drin.features import CAPTIONS_FILE
from mel.errors import DataError
from mel.images.clip import (
    SPLITS,
    extract_clip_features,
    list_image_folder,
    missing_image_keys,
    read_image_list,
    report_split_coverage,
)
from mel.models.loading import load_tokenizer, pick_device
from mel.retrieval.candidates import build_candidates
from mel.retrieval.demonstrations import build_embeddings, default_embedding_path, stale_embeddings
from mel.runs.logs import project_logger
from mel.tree.store import ENTITY_LIST, build_tree, find_matching_tree, read_entity_names

logger = project_logger("prepare")


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
    from mel.drin.features import (
        CaptionSpace,
        ClipSpace,
        TextEncoder,
        build_entity_features,
        build_split_features,
        read_captions,
    )
    from mel.io.datasets import feature_dimension

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
    logger.info(f"DRIN features: text {args.text_encoder}, images {img_feat} ({dim_image}-d), image-text space {mode}")
    build_entity_features(folder, text, space, img_feat, dim_image, args.entity_pooling)
    for split in args.splits.split(","):
        if os.path.exists(os.path.join(folder, f"{split}.json")):
            build_split_features(folder, split, text, space, img_feat, dim_image, args.token_states)


def run_all(args, folder):
    """Run each step whose output is missing or stale; returns 0, or 1 when a needed step could not run."""
    steps = (trie_if_needed, embeddings_if_needed, clip_if_needed)
    failed = [message for message in (step(args, folder) for step in steps) if message]
    for message in failed:
        logger.info(f"Could not build: {message}")
    return 1 if failed else 0


def trie_if_needed(args, folder):
    """Build the tree unless one built with the LM's tokenizer is there; returns why it could not, or None."""
    tokenizer = load_tokenizer(args.model_name, args.cache_dir)
    tree = find_matching_tree(folder, tokenizer)
    if tree:
        logger.info(f"[trie] {tree} was built with the tokenizer of {args.model_name}: nothing to do")
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
        logger.info(f"[embeddings] {embeddings} has one row per non-NIL training example: nothing to do")
        return None
    logger.info(f"[embeddings] {embeddings} {reason}: building it")
    build_embeddings(train_file, args.simcse_model, embeddings, args.device, args.embed_batch_size, args.cache_dir)
    return None


def clip_if_needed(args, folder):
    features = os.path.join(folder, args.img_feat)
    missing = missing_image_keys(folder, features)
    if os.path.exists(features) and not missing:
        logger.info(f"[clip] {features} holds a feature for every image key of the splits: nothing to do")
        return None
    if args.images is None and args.image_list is None:
        what = "does not exist" if not os.path.exists(features) else f"lacks {len(missing):,} image keys of the splits"
        return (f"[clip] {features} {what}; give the images: `python prepare.py clip --data_dir "
                f"{args.data_dir} --dataset {args.dataset} --images <folder>` (or --image_list <file>)")
    run_clip(args, folder)
    return None


def run(args):
    folder = args.dataset_dir
    if args.step == "trie":
        build_tree(folder, args.model_name, args.names, args.from_tree, args.source_model_name, args.output,
                   args.cache_dir)
    elif args.step == "embeddings":
        build_embeddings(os.path.join(folder, "train.json"), args.simcse_model,
                         default_embedding_path(folder, args.dataset, args.ment_embed_file), args.device,
                         args.embed_batch_size, args.cache_dir)
    elif args.step == "clip":
        run_clip(args, folder)
    elif args.step == "candidates":
        names_file = os.path.join(folder, ENTITY_LIST)
        if not os.path.exists(names_file):
            raise DataError(f"{names_file}: the knowledge base's entity names are needed (one per line)")
        splits = [s for s in SPLITS if os.path.exists(os.path.join(folder, f"{s}.json"))]
        build_candidates(folder, splits, read_entity_names(names_file), args.simcse_model, args.num_candidates,
                         args.device, args.embed_batch_size, args.cache_dir, args.retriever)
    elif args.step == "drin":
        run_drin(args, folder)
    elif args.step == "drin_release":
        from mel.drin.released import convert

        convert(args.source, args.raw_dir, folder, args.overwrite)
    else:
        return run_all(args, folder)
    return 0


def main(argv=None):
    return params.run_script("prepare", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

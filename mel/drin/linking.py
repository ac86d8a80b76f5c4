"""`link.py --method drin|ghmfc|melhi`: a trained ranker scores the candidates of new mentions.

The mention's features are computed now, as `prepare.py drin` computed the training data's, with the encoders the
checkpoint's config records (its `features`, taken from drin.entities.h5 at training time), and compared with the
entity features of the same dataset folder. A checkpoint trained on DRIN's preprocessed release cannot be given new
text: its features come from the original's detector and encoders, which are not here.
"""
import os
from types import SimpleNamespace

from mel.drin.data import ENCODER_ATTRS, DrinSplit, EntityTable, resolve_slots
from mel.drin.features import (
    CAPTIONS_FILE,
    ENTITIES_FILE,
    CaptionSpace,
    ClipSpace,
    TextEncoder,
    entity_features_path,
    mention_arrays,
    mention_span,
    per_key,
    read_captions,
)
from mel.drin.run import ARCHITECTURE, LEAK_FREE, NAMES, make_model, ranker_config, score
from mel.errors import DataError
from mel.models.loading import pick_device
from mel.runs import files as runs
from mel.runs.checkpoints import load_model_checkpoint, read_model_checkpoint


def rank_candidates(args, rows, where, base, examples, image_features, image_path):
    """For each example, [(name, score)] of its candidates, best first. `rows`/`where`/`base`/`examples` are link.py's
    input (`where` names each row's origin for messages; `base` is the folder relative image paths start from);
    `image_features(rows, img_feat, dim, args, base, where)` and `image_path(row, base)` are link.py's readers of a
    row's image, shared with GEMEL."""
    if args.preprocess_dir:
        raise DataError("link.py computes new mentions' features with the encoders of `prepare.py drin`; DRIN's "
                        "preprocessed release (--preprocess_dir) was made by the original's detector and encoders: "
                        "link with a checkpoint trained on a dataset folder")
    ckpt = runs.find_checkpoint(args)
    saved = read_model_checkpoint(ckpt, ARCHITECTURE[args.method], NAMES[args.method])
    entities = EntityTable.load(args.dataset_dir, args.dataset)
    encoders = recorded_encoders(ckpt, entities, args.dataset_dir)
    lists = candidate_lists(examples, entities, os.path.join(args.dataset_dir, ENTITIES_FILE))
    captions = read_image_places(rows, where, encoders, args.dataset_dir)

    device = pick_device(args.device)
    text = TextEncoder(encoders["text_encoder"], device=str(device), cache_dir=args.cache_dir)
    img_feat = os.path.join(args.dataset_dir, encoders["img_feat"])
    image = image_features(rows, img_feat, entities.image.shape[-1], args, base, where)
    if encoders["image_text"] == "captions":
        space = CaptionSpace(text, captions, os.path.join(args.dataset_dir, CAPTIONS_FILE))
        keys = [row.get("image_key") for row in rows]
    else:
        files = {f"row {i}": image_path(row, base) for i, row in enumerate(rows) if row.get("image") is not None}
        space = ClipSpace(encoders["clip_model"], files, str(device), args.cache_dir)
        keys = [f"row {i}" if f"row {i}" in files else None for i in range(len(rows))]
    texts = [ex["text"] for ex in examples]
    spans = [tuple(row["mention_span"]) if "mention_span" in row else mention_span(ex["text"], ex["mention"])
             for row, ex in zip(rows, examples)]
    arrays, _ = mention_arrays(text, space, texts, spans, image, per_key(keys, space.images, space.dim),
                               token_states=args.method != "drin")
    slots, gold = resolve_slots(lists, examples, entities, False, False, "link.py's input")
    split = DrinSplit.from_arrays("input", examples, arrays, slots, gold, slots.shape[1], entities)

    model = make_model(args.method, split.dims, saved["architecture"], LEAK_FREE)
    load_model_checkpoint(model, ckpt, saved)
    scores = score(model.to(device), split, args.eval_bs, device)
    ranked = []
    for i in range(len(examples)):
        listed = sorted(((float(s), int(row)) for row, s in zip(slots[i], scores[i]) if row >= 0),
                        key=lambda pair: -pair[0])  # stable: ties keep the list's order
        ranked.append([(split.entity_name(row), round(s, 6)) for s, row in listed])
    return ranked


def args_for(checkpoint, args):
    """The flags rank_candidates reads, for a ranker checkpoint named by path (link.py's --fusion_ranker): its own
    training flags from its config JSON, the data and devices of `args`."""
    config = ranker_config(checkpoint)
    return SimpleNamespace(**{**config, "best_ckpt": checkpoint, "ckpt_dir": os.path.dirname(checkpoint),
                              "preprocess_dir": None, "dataset": args.dataset, "dataset_dir": args.dataset_dir,
                              "device": args.device, "cache_dir": args.cache_dir, "clip_model": args.clip_model,
                              "eval_bs": config.get("eval_bs") or 256})


def recorded_encoders(ckpt, entities, dataset_dir):
    """The encoders the checkpoint's training features were computed with, checked against the entity features it
    will be compared with now."""
    config_file = os.path.splitext(ckpt)[0] + ".json"
    record = runs.checkpoint_config(ckpt).get("features")
    if not isinstance(record, dict):
        raise DataError(f"{config_file}: records no `features` (the encoders of the training features), which link.py "
                        f"computes new mentions with; use the config main.py wrote beside the checkpoint")
    if "preprocess_dir" in record:
        raise DataError(f"{ckpt}: trained on DRIN's preprocessed release ({record['preprocess_dir']}), made by the "
                        f"original's detector and encoders; link.py can only compute the features `prepare.py drin` "
                        f"computes: link with a checkpoint trained on a dataset folder")
    missing = [key for key in ("text_encoder", "image_text", "img_feat") if not record.get(key)]
    if missing:
        raise DataError(f"{config_file}: its `features` name no {missing[0]}: the features it was trained on predate "
                        f"that record; rebuild them with `python prepare.py drin` and retrain")
    now = entities.encoders or {}
    changed = [key for key in ENCODER_ATTRS if record.get(key) != now.get(key)]
    if changed:
        key = changed[0]
        raise DataError(f"{entity_features_path(dataset_dir)}: built with {key} {now.get(key)!r}, the checkpoint's "
                        f"training features with {record.get(key)!r}; link with the features it was trained on")
    return record


def candidate_lists(examples, entities, source):
    """{line: names} of the input, every name an entity with features (duplicates kept, as the original keeps them)."""
    for ex in examples:
        unknown = next((name for name in ex["candidates"] if name not in entities.row), None)
        if unknown is not None:
            raise DataError(f"{ex['at']}: candidate {unknown!r} is not an entity of {source}, whose features the "
                            f"ranker compares the mention with; give names of that file")
    return {ex["line"]: ex["candidates"] for ex in examples}


def read_image_places(rows, where, encoders, dataset_dir):
    """Check that each row's image can be placed in the features' image-text space; {key: caption} for a caption
    space (None for CLIP)."""
    if encoders["image_text"] == "captions":
        path = os.path.join(dataset_dir, CAPTIONS_FILE)
        captions = read_captions(path) if os.path.exists(path) else {}
        for at, row in zip(where, rows):
            key = row.get("image_key")
            if key is None and row.get("image") is not None:
                raise DataError(f"{at}: the checkpoint's features place images by their caption ({path}), which an "
                                f"`image` file has none of: give the `image_key` of a captioned image instead")
            if key is not None and key not in captions:
                raise DataError(f"{at}: `image_key` {key!r} has no caption in {path}, which the checkpoint's "
                                f"features place images by; add one")
        return captions
    for at, row in zip(where, rows):
        if row.get("image_key") is not None and row.get("image") is None:
            raise DataError(f"{at}: the checkpoint's features place images with CLIP ({encoders['clip_model']}), "
                            f"which needs the picture: add the `image` file (`image_key` then gives its feature)")
    return None

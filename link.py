"""Link new text: ranked entity names for mentions nobody has labelled, with a trained GEMEL checkpoint, or with a
candidate ranker's (--method drin|ghmfc|melhi: see the end of this text).

    python link.py --text "Jordan scored 40 points against the Knicks." --mention Jordan
    python link.py --text "..." --mention_span 0 6 --image_key test/3.jpg        # a feature of the dataset's HDF5
    python link.py --text "..." --mention Jordan --image photo.jpg               # CLIP feature computed now
    python link.py --input mentions.jsonl --output linked.jsonl
    python link.py --method drin --input mentions.jsonl                          # every line with `candidates`

The LM, the projector, the demonstrations and the prefix tree are loaded once (the same flags as infe.py choose
them), then every mention is linked in length-bucketed batches like evaluation. Input lines are JSON objects with
`text` and either `mention` (a substring of the text) or `mention_span` ([start, end) character offsets), and
optionally `image` (an image file path, relative to the input file), `image_key` (a key of the dataset's feature
file), `candidates` (names to choose among; all lines or none) and any other fields, which are copied to the output.
An example without an image gets the all-zero image feature, so its visual prefix is the projector's bias: the
same for every image-less example, and what the projector learnt to add when it sees no visual evidence.
Output lines (in input order, written atomically) add `mention` and `entities`: [{"name", "score"}, ...], best first,
and with --nil_threshold (a number, or `checkpoint` for the one main.py chose on dev) `nil`: whether the best name's
score is below it, i.e. the mention likely names no entity of the knowledge base.

With --fusion checkpoint (the weights main.py --fusion dev stored) or --fusion_weights, each line's `candidates` are
ranked by the weighted sum of the LM's scores, the retriever's (a line's `candidate_scores`, one per candidate; minus
the list position without them) and --fusion_ranker's, and each entity lists every signal (docs/evaluation.md).

With --method drin, ghmfc or melhi every line needs `candidates`, entities of the dataset's entities.jsonl, and
`entities` holds all of them (or --top_k) with the checkpoint's scores, best first. The mention's features are
computed as `prepare.py drin` computed the training data's, with the encoders the checkpoint's config records; its
image comes from `image_key` or an `image` file, whichever the image-text space of those features can place:
captions (`image_key` of a captioned image) or CLIP (the `image` file; `image_key` then only for the image feature).
A mention without an image gets the blank image's zero features, as in training. Scoring is leak-free whatever
protocol the checkpoint was trained under: no gold exists to append.
"""
import dataclasses
import json
import os

import numpy as np
from transformers import set_seed

import params
from mel.errors import DataError
from mel.gemel.evaluation import EvalSettings, decode, predicts_nil
from mel.gemel.experiment import check_candidates_in_tree, load_experiment
from mel.io.atomic import write_jsonl
from mel.io.datasets import is_finite_number, load_image_features, read_jsonl_objects
from mel.runs import files as runs
from mel.runs.checkpoints import load_projector_checkpoint, read_projector_checkpoint
from mel.runs.logs import project_logger

logger = project_logger("link")


# ----------------------------------------------------------------------------- reading the input

def read_inputs(args):
    """(rows as given, where each row comes from for messages, folder that relative image paths start from)."""
    if args.input is None:
        if args.text is None or (args.mention is None) == (args.mention_span is None):
            raise DataError("give --text with --mention or --mention_span, or --input <JSON lines file>")
        row = {"text": args.text}
        for key in ("mention", "mention_span", "image", "image_key", "candidates"):
            if getattr(args, key) is not None:
                row[key] = getattr(args, key)
        return [row], ["the command line"], os.getcwd()
    if not os.path.exists(args.input):
        raise DataError(f"--input {args.input}: file not found")
    numbered = list(read_jsonl_objects(args.input))
    if not numbered:
        raise DataError(f"--input {args.input}: no lines to link")
    rows = [row for _, row in numbered]
    return rows, [f"{args.input}, line {number}" for number, _ in numbered], os.path.dirname(
        os.path.abspath(args.input))


def to_example(row, index, at):
    """The example dict the prompt builder reads: text, mention, an empty target, its number and where it is from."""
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{at}: `text` must be a non-empty string")
    if "mention_span" in row:
        span = row["mention_span"]
        if not (isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) for x in span)
                and 0 <= span[0] < span[1] <= len(text)):
            raise DataError(f"{at}: `mention_span` must be [start, end) with 0 <= start < end <= {len(text)} "
                            f"(the text's length), got {span!r}")
        mention = text[span[0]:span[1]]
    else:
        mention = row.get("mention")
        if not isinstance(mention, str) or not mention.strip():
            raise DataError(f"{at}: give `mention` (a substring of the text) or `mention_span`")
        if mention not in text:
            raise DataError(f"{at}: the mention {mention!r} does not occur in the text; give `mention_span` "
                            f"to point at it")
    candidates = row.get("candidates")
    if candidates is not None and not (isinstance(candidates, list) and candidates
                                       and all(isinstance(c, str) and c for c in candidates)):
        raise DataError(f"{at}: `candidates` must be a non-empty list of entity names")
    for key in ("image", "image_key"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise DataError(f"{at}: `{key}` must be a string, got {json.dumps(row[key])}")
    scores = row.get("candidate_scores")
    if scores is not None and not (isinstance(candidates, list) and isinstance(scores, list)
                                   and len(scores) == len(candidates) and all(is_finite_number(v) for v in scores)):
        raise DataError(f"{at}: `candidate_scores` must be one finite number per candidate (the retriever's scores)")
    return {"text": text, "mention": mention, "target": "", "line": index + 1, "candidates": candidates,
            "candidate_scores": scores, "at": at}


def image_path(row, base):
    """The row's `image` file, relative paths starting from the input file's folder."""
    return row["image"] if os.path.isabs(row["image"]) else os.path.join(base, row["image"])


def image_features(rows, img_feat, dim, args, base, where=None):
    """(N, dim) features: from the feature file `img_feat` by `image_key`, computed from `image` files with
    --clip_model, or zeros. `where`: each row's origin for messages ("mentions.jsonl, line 3")."""
    where = where or [f"input row {i + 1}" for i in range(len(rows))]
    features = np.zeros((len(rows), dim), dtype=np.float32)
    keyed = [i for i, row in enumerate(rows) if row.get("image_key") is not None]
    try:
        if keyed:
            features[keyed] = load_image_features(img_feat, [rows[i]["image_key"] for i in keyed], dim)
    except DataError:
        for i in keyed:  # name the first line whose key is the problem
            try:
                load_image_features(img_feat, [rows[i]["image_key"]], dim)
            except DataError as error:
                raise DataError(f"{where[i]}: `image_key` {rows[i]['image_key']!r}: {error}") from None
        raise
    files = [i for i, row in enumerate(rows) if row.get("image") is not None and row.get("image_key") is None]
    if files:
        from mel.images.clip import ClipEncoder, load_image
        from mel.models.loading import pick_device

        try:
            encoder = ClipEncoder(args.clip_model, pick_device(args.device))
        except DataError as error:
            raise DataError(f"{where[files[0]]}: `image` needs --clip_model to compute its feature: {error}") from None
        if encoder.dim != dim:
            raise DataError(f"--clip_model {args.clip_model} gives {encoder.dim}-d features, {img_feat} holds "
                            f"{dim}-d ones; use the image encoder that made it (prepare.py clip --clip_model)")
        for i in files:
            path = image_path(rows[i], base)
            image, problem = load_image(path, 1)
            if image is None:
                raise DataError(f"{where[i]}: cannot use the image {path} ({problem[0]}: {problem[1]})")
            features[i] = encoder.encode_image(image)
    return features


# ----------------------------------------------------------------------------- linking

def run(args):
    set_seed(args.random_seed)
    rows, where, base = read_inputs(args)
    examples = [to_example(row, i, at) for i, (row, at) in enumerate(zip(rows, where))]
    with_candidates = [ex["candidates"] is not None for ex in examples]
    if args.method != "gemel" and not all(with_candidates):
        raise DataError(f"{where[with_candidates.index(False)]}: --method {args.method} ranks each mention's "
                        f"candidates: give `candidates` (entity names of the dataset's entities.jsonl) on every line")
    if any(with_candidates) and not all(with_candidates):
        first = where[with_candidates.index(not with_candidates[0])]
        raise DataError(f"{first}: `candidates` given on some lines only; give them on every line or on none")
    body = link if args.method == "gemel" else link_with_ranker
    if args.input is None:
        return body(args, rows, where, base, examples, None)
    output = args.output or os.path.splitext(args.input)[0] + ".linked.jsonl"
    if os.path.exists(output) and os.path.samefile(output, args.input):
        raise DataError(f"--output {output}: is the --input file; write the linked mentions to another file")
    with runs.claim_output(output, args.overwrite, "--output", "an earlier output of link.py"):
        return body(args, rows, where, base, examples, output)


def link(args, rows, where, base, examples, output):
    fused = runs.fusion_requested(args)
    if fused and examples[0]["candidates"] is None:
        raise DataError(f"{where[0]}: --fusion ranks each mention's candidates: give `candidates` on every line")
    if args.fusion == "dev":
        raise DataError("link.py has no gold labels to choose fusion weights on: use --fusion checkpoint (the weights "
                        "main.py --fusion dev stored) or --fusion_weights")
    ckpt = runs.find_checkpoint(args)
    runs.check_checkpoint_config(ckpt, args)
    if args.nil_threshold == "dev":
        raise DataError("link.py has no gold labels to choose a NIL threshold on: give a number or checkpoint")
    settings = EvalSettings.from_args(args, show_examples=0)
    if args.nil_threshold == "checkpoint":  # read now: a missing one fails before the LM loads
        settings = dataclasses.replace(settings, nil_threshold=runs.stored_nil_threshold(ckpt))
    state = read_projector_checkpoint(ckpt)
    images = image_features(rows, args.img_feat, args.dim_clip, args, base, where)

    exp = load_experiment(args, [])
    load_projector_checkpoint(exp.model.linear, ckpt, state)
    candidates = None
    if examples[0]["candidates"] is not None:  # on every line, or on none
        candidates = {ex["line"]: ex["candidates"] for ex in examples}
        check_candidates_in_tree(exp.tokenizer, exp.tree, candidates, lambda line: where[line - 1])
    split = exp.make_split("input", examples, images, candidates)
    if fused:
        return emit(link_fused(args, exp, split, settings, ckpt, rows, where, base), output)
    top_k = args.top_k or args.num_beams
    linked = [None] * len(rows)
    for batch_idx, ranked in decode(exp, split, settings):
        for i, hypotheses in zip(batch_idx, ranked):
            entities = [{"name": name, "score": score} for name, score in hypotheses[:top_k]]
            linked[i] = {**rows[i], "mention": examples[i]["mention"], "entities": entities}
            if settings.nil_threshold is not None:  # the NIL decision: no entity of the KB fits well enough
                linked[i]["nil"] = predicts_nil(entities[0]["score"], settings.nil_threshold)
    return emit(linked, output)


def link_fused(args, exp, split, settings, ckpt, rows, where, base):
    """--fusion checkpoint / --fusion_weights: each mention's candidates ranked by the weighted sum of the LM's
    scores, the retriever's (`candidate_scores`, else minus the list position) and the ranker's."""
    from mel.drin.linking import args_for, rank_candidates
    from mel.fusion.run import fusion_for
    from mel.fusion.scores import assemble, lm_scores, retriever_row
    from mel.fusion.weights import ranked_entries

    device = next(exp.model.linear.parameters()).device
    chosen, ranker, _ = fusion_for(args, exp, settings, ckpt, device)
    lm, lengths = lm_scores(exp, split, settings)
    retrieved = {ex["line"]: retriever_row(ex["candidates"], ex["candidate_scores"]) for ex in split.examples}
    ranked = None
    if chosen.ranker:
        ranker_args = args_for(ranker, args)
        ranked = {ex["line"]: dict(pairs) for ex, pairs in
                  zip(split.examples, rank_candidates(ranker_args, rows, where, base, split.examples, image_features,
                                                      image_path))}
    scores = assemble("input", split.examples, split.candidates, lm, lengths, retrieved, ranked)
    return [{**row, "mention": ex["mention"], "entities": entities[:args.top_k or len(entities)]}
            for row, ex, entities in zip(rows, split.examples, ranked_entries(scores, chosen))]


def link_with_ranker(args, rows, where, base, examples, output):
    """--method drin|ghmfc|melhi: each mention's candidates ranked by the checkpoint's scores, best first."""
    from mel.drin.linking import rank_candidates

    ranked = rank_candidates(args, rows, where, base, examples, image_features, image_path)
    linked = [{**row, "mention": ex["mention"], "entities": [{"name": name, "score": score}
                                                            for name, score in candidates[:args.top_k]]}
              for row, ex, candidates in zip(rows, examples, ranked)]
    return emit(linked, output)


def emit(linked, output):
    """Write the linked rows to `output` (atomically), or print them when there is none."""
    if output is not None:
        write_jsonl(output, linked)
        logger.info(f"Linked {len(linked)} mentions: {output}")
    else:
        for row in linked:
            print(json.dumps(row, ensure_ascii=False))
    return linked


def main(argv=None):
    return params.run_script("link", {"gemel": run, **{method: run for method in params.RANKERS}}, argv)


if __name__ == "__main__":
    main()

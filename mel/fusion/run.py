"""The fused linker in main.py and infe.py (--fusion dev|checkpoint, --fusion_weights, --fusion_ranker): weights
chosen on dev, stored in the checkpoint's config, and every candidate of a split ranked by its fused score."""
import logging
import time

from mel.errors import DataError
from mel.fusion.scores import collect
from mel.fusion.weights import Fusion, choose_on_dev, ranked_entries
from mel.gemel.evaluation import ranked_record, summarize
from mel.gemel.experiment import check_candidates_in_tree
from mel.retrieval.candidates import candidates_path, read_candidates, with_gold
from mel.runs import files as runs

logger = logging.getLogger(__name__)


STORED = "chosen_fusion"  # the checkpoint config's key: {"weights", "ranker", "dev"}


def stored(fusion, ranker, dev):
    """What main.py stores in the checkpoint's config under STORED."""
    return {"weights": fusion.as_dict(), "ranker": ranker, "dev": dev}


def candidate_split(exp, name):
    """The experiment's split `name` with its candidate lists (read now when it was loaded without them)."""
    split = exp.splits[name]
    if split.candidates is not None:
        return split
    path = candidates_path(exp.args.dataset_dir, name)
    lists = read_candidates(path, split.examples, alternative="then fuse the scores")
    check_candidates_in_tree(exp.tokenizer, exp.tree, lists, lambda line: f"{path} (the list of {name}.json line "
                                                                          f"{line})")
    if exp.args.candidates_with_gold:
        lists = with_gold(lists, split.examples)
    exp.builder.cache.add([n for names in lists.values() for n in names])
    return type(split)(split.name, split.examples, split.demos, split.images, lists)


def fusion_for(args, exp, settings, checkpoint, device):
    """(Fusion, ranker checkpoint or None, dev figures or None): the weights of --fusion_weights, those stored with
    the checkpoint (--fusion checkpoint), or chosen now on dev (--fusion dev)."""
    ranker = args.fusion_ranker
    if args.fusion_weights is not None:
        return Fusion.parse(args.fusion_weights), ranker, None
    if args.fusion == "checkpoint":
        stored = runs.checkpoint_config(checkpoint).get(STORED)
        source = f"{checkpoint.rsplit('.', 1)[0]}.json"
        if not isinstance(stored, dict):
            raise DataError(f"{source}: no fusion weights stored ({STORED}); choose them with `--fusion dev` (main.py "
                            f"stores them) or give --fusion_weights")
        fusion = Fusion.from_dict(stored.get("weights"), source)
        ranker = ranker or stored.get("ranker")
        if fusion.ranker and not ranker:
            raise DataError(f"{source}: the stored fusion weighs a ranker but names no checkpoint; pass "
                            f"--fusion_ranker")
        return fusion, ranker, None
    scores = collect(exp, candidate_split(exp, "dev"), settings, ranker, device)
    fusion, (hits, mrr) = choose_on_dev(scores)
    logger.info(f"Fusion chosen on dev ({len(scores.lines)} mentions): {fusion.as_dict()}, dev Hits@1 {hits:.2f} "
                f"MRR {mrr:.4f}")
    return fusion, ranker, {"hits@1": hits, "mrr": mrr}


def evaluate_fused(exp, name, fusion, ranker, settings, device):
    """(records, summary) of split `name` ranked by fused scores: GEMEL's record format, each ranked entry with its
    signals, and Hits@k for every k up to the longest list."""
    start = time.perf_counter()
    split = candidate_split(exp, name)
    scores = collect(exp, split, settings, ranker, device)
    records = [ranked_record(ex, ranked) for ex, ranked in zip(split.examples, ranked_entries(scores, fusion))]
    summary = {**summarize(records, int(scores.mask.sum(1).max()), time.perf_counter() - start),
               "fusion": fusion.as_dict(), "fusion_ranker": ranker}
    logger.info(f"{name}, fused {fusion.as_dict()}: Hits@1 {summary['accuracy']:.2f}  MRR {summary['mrr']:.4f}")
    return records, summary


def dev_split_needed(args):
    return args.fusion == "dev" and args.fusion_weights is None


"""Which prefix-tree file belongs to a dataset folder and a tokenizer, and how it is built.

The one home of tree files: their name (prefix_tree_<tag>.marisa), finding the one built with a given tokenizer,
building it from the folder's entities.txt, GEMEL's prefix_tree_opt.pkl or another tree, and loading it for
main.py / infe.py (which build a missing one on the fly, as `prepare.py trie` does ahead of time).
"""
import glob
import json
import logging
import os
import time

from mel.errors import DataError
from mel.io.atomic import file_size, write_lines
from mel.io.provenance import source_record
from mel.models.loading import load_tokenizer
from mel.models.registry import MODEL_REGISTRY
from mel.tree.trie import PrefixTree, is_opt_tokenizer, tokenizer_info

logger = logging.getLogger(__name__)

ENTITY_LIST = "entities.txt"
GEMEL_TREE_PICKLE = "prefix_tree_opt.pkl"
SHOWN = 20  # non-round-tripping names printed; the full list goes to a TSV report


# ----------------------------------------------------------------------------- names and discovery

def read_entity_names(path):
    """The knowledge base's names, one per line; an empty knowledge base is an error."""
    with open(path, encoding="utf-8") as f:
        names = [line.rstrip("\r\n") for line in f if line.strip()]
    if not names:
        raise DataError(f"{path}: holds no entity name; the knowledge base needs one name per line")
    return names


def default_tree_path(dataset_dir, tokenizer):
    """prefix_tree_<tag>.marisa: "opt" for OPT's tokenizer (GEMEL's), else the vocabulary fingerprint's start."""
    tag = "opt" if is_opt_tokenizer(tokenizer) else tokenizer_info(tokenizer)["fingerprint"][:12]
    return os.path.join(dataset_dir, f"prefix_tree_{tag}.marisa")


def tree_files(dataset_dir):
    return sorted(glob.glob(os.path.join(dataset_dir, "prefix_tree_*.marisa")))


def stale_reason(tree_path, source, dataset_dir):
    """Why a tree no longer matches the dataset's file it was built from (edited since), or None."""
    if not source.get("file"):
        return None  # built before trees recorded their source, or from sequences
    current = os.path.join(dataset_dir, source["file"])
    if os.path.exists(current) and source_record(current)["sha256"] != source.get("sha256"):
        return f"{current} changed after {tree_path} was built from it"
    return None


def find_matching_tree(dataset_dir, tokenizer):
    """A prefix_tree_*.marisa of the folder built with this tokenizer (what main.py would load), or None."""
    fingerprint = tokenizer_info(tokenizer)["fingerprint"]
    for path in tree_files(dataset_dir):
        try:
            if PrefixTree.read_header(path).get("tokenizer", {}).get("fingerprint") == fingerprint:
                return path
        except ValueError:  # not a tree file, or an old format: not a match
            continue
    return None


def find_tree_source(dataset_dir):
    """(names_file, tree_file) to build from when none is given: entities.txt, GEMEL's pickle, another tree."""
    names_file = os.path.join(dataset_dir, ENTITY_LIST)
    if os.path.exists(names_file):
        return names_file, None
    pickle_file = os.path.join(dataset_dir, GEMEL_TREE_PICKLE)
    if os.path.exists(pickle_file):
        return None, pickle_file
    trees = tree_files(dataset_dir)
    if trees:
        return None, trees[0]
    raise DataError(f"{dataset_dir}: no entity list to build the prefix tree from: put the knowledge base's names "
                    f"in {names_file} (one per line), or pass --names <file> or --from_tree <tree>")


# ----------------------------------------------------------------------------- loading for main.py / infe.py

def load_prefix_tree(dataset_dir, tokenizer, model_name, trie_file=None):
    """The dataset's prefix tree for this tokenizer.

    Looks, in order, at: --trie_file; any `prefix_tree_*.marisa` in the dataset folder built with this
    tokenizer; GEMEL's `prefix_tree_opt.pkl` when the tokenizer is OPT's (converted once and cached);
    the folder's `entities.txt` (built once and cached). Otherwise a clear error names the command that builds it.
    """
    if trie_file is not None:
        return load_tree_file(trie_file, dataset_dir, tokenizer, model_name)
    found = find_matching_tree(dataset_dir, tokenizer)
    if found is not None:
        tree = PrefixTree.load(found, tokenizer=tokenizer)
        reason = stale_reason(found, tree.source, dataset_dir)
        if reason is None:
            return tree
        logger.info(f"{reason}: building the tree again")
    cached = default_tree_path(dataset_dir, tokenizer)
    tree = build_missing_tree(dataset_dir, tokenizer, model_name, cached)
    tree.save(cached)
    return tree


def load_tree_file(trie_file, dataset_dir, tokenizer, model_name):
    """A tree named by --trie_file: GEMEL's pickle (OPT ids only) or a .marisa built with this tokenizer."""
    if not os.path.exists(trie_file):
        raise DataError(f"--trie_file {trie_file}: file not found; build one with `python prepare.py trie --dataset "
                        f"{os.path.basename(os.path.normpath(dataset_dir))} --model_name {model_name}`, or leave "
                        f"--trie_file out to use the dataset folder's tree")
    if not trie_file.endswith(".pkl"):
        tree = PrefixTree.load(trie_file, tokenizer=tokenizer)
        reason = stale_reason(trie_file, tree.source, dataset_dir)
        if reason is not None:
            raise DataError(f"--trie_file: {reason}; rebuild it with `python prepare.py trie --output {trie_file}`")
        return tree
    if not is_opt_tokenizer(tokenizer):
        raise DataError(f"{trie_file}: a GEMEL pickle tree holds OPT token ids, but {model_name!r} has "
                        f"another tokenizer. Rebuild it: `python prepare.py trie --dataset "
                        f"{os.path.basename(os.path.normpath(dataset_dir))} --model_name {model_name} "
                        f"--from_tree {trie_file}`.")
    return PrefixTree.from_gemel_pickle(trie_file, tokenizer_info(tokenizer), tokenizer.eos_token_id)


def build_missing_tree(dataset_dir, tokenizer, model_name, cached):
    """The tree main.py builds itself when the folder has none for this tokenizer: from GEMEL's pickle or names."""
    gemel_pickle = os.path.join(dataset_dir, GEMEL_TREE_PICKLE)
    names_file = os.path.join(dataset_dir, ENTITY_LIST)
    if os.path.exists(gemel_pickle) and is_opt_tokenizer(tokenizer):
        logger.info(f"Converting {gemel_pickle} to {cached} (once)")
        tree = PrefixTree.from_gemel_pickle(gemel_pickle, tokenizer_info(tokenizer), tokenizer.eos_token_id)
        tree.source = source_record(gemel_pickle)
        return tree
    if os.path.exists(names_file):
        logger.info(f"Building the prefix tree of {names_file} for {model_name} into {cached} (once)")
        tree = PrefixTree.from_names(read_entity_names(names_file), tokenizer)
        tree.source = source_record(names_file)
        return tree
    dataset = os.path.basename(os.path.normpath(dataset_dir))
    source = f"--from_tree {gemel_pickle}" if os.path.exists(gemel_pickle) else "--names <entity list>"
    raise DataError(f"{dataset_dir}: no prefix tree built with the tokenizer of {model_name!r}. Build it with "
                    f"`python prepare.py trie --dataset {dataset} --model_name {model_name} {source}`.")


# ----------------------------------------------------------------------------- building (prepare.py trie)

def recover_names(tree, tokenizer, batch_size=10000):
    """Names of a tree's sequences, decoded as answers are (skip special tokens, strip spaces).

    Returns (names, not_round_trip): a name round-trips when tokenizing it again (no special tokens) gives back
    exactly the tokens stored in the tree; the others are listed as (name, stored tokens, re-tokenized tokens).
    Sequences that decode to an empty name are dropped and listed with name "".
    """
    names, not_round_trip = [], []
    for batch, decoded in tree.decode_batches(tokenizer, batch_size):
        decoded = [d.strip(" ") for d in decoded]
        again = tokenizer(decoded, add_special_tokens=False)["input_ids"]
        for name, stored, tokens in zip(decoded, batch, again):
            if name.strip():
                names.append(name)
            if not name.strip() or list(tokens) != list(stored):
                not_round_trip.append((name, list(stored), list(tokens)))
    return names, not_round_trip


def load_source_tree(path, target_tokenizer, source_model_name, cache_dir):
    """The tree in `path` (GEMEL pickle or .marisa) and the tokenizer that built it (None when it is the target's)."""
    if path.endswith(".pkl"):
        return load_source_pickle(path, target_tokenizer, source_model_name, cache_dir)
    target = tokenizer_info(target_tokenizer)
    recorded = PrefixTree.read_header(path).get("tokenizer") or {}
    if recorded.get("fingerprint") == target["fingerprint"]:
        return PrefixTree.load(path, tokenizer=target_tokenizer), None
    if source_model_name is None:
        if recorded.get("name") not in MODEL_REGISTRY:
            raise DataError(f"{path} was built with tokenizer {recorded.get('name')!r} (fingerprint "
                            f"{str(recorded.get('fingerprint'))[:12]}); to decode its names pass "
                            f"--source_model_name <that model: short name, hub id or local folder>")
        source_model_name = recorded["name"]
    source_tokenizer = load_tokenizer(source_model_name, cache_dir)
    return PrefixTree.load(path, tokenizer=source_tokenizer), source_tokenizer  # refuses a wrong source tokenizer


def load_source_pickle(path, target_tokenizer, source_model_name, cache_dir):
    """GEMEL's pickle holds OPT ids: taken as they are for an OPT target, else decoded with the source tokenizer."""
    if source_model_name is None and is_opt_tokenizer(target_tokenizer):
        return PrefixTree.from_gemel_pickle(path, tokenizer_info(target_tokenizer), target_tokenizer.eos_token_id), None
    source_tokenizer = load_tokenizer(source_model_name or "opt-6.7b", cache_dir)
    source = tokenizer_info(source_tokenizer)
    tree = PrefixTree.from_gemel_pickle(path, source, source_tokenizer.eos_token_id)
    same = source["fingerprint"] == tokenizer_info(target_tokenizer)["fingerprint"]
    return tree, (None if same else source_tokenizer)


def tree_from_names(names_file, tokenizer, model_name):
    if not os.path.exists(names_file):
        raise DataError(f"{names_file}: entity list not found (one entity name per line)")
    names = read_entity_names(names_file)
    if not names:
        raise DataError(f"{names_file}: no names in it (one entity name per line)")
    if any(name.endswith("\r") for name in names):
        logger.warning(f"{names_file} has Windows line endings; the '\\r' would become part of the names. "
                       f"Convert it (e.g. `dos2unix`) and rerun.")
    logger.info(f"Building the prefix tree of {len(names):,} names from {names_file} for {model_name}")
    tree = PrefixTree.from_names(names, tokenizer)
    tree.source = source_record(names_file)
    if len(tree) < len(names):
        logger.info(f"  {len(names) - len(tree):,} names are duplicates (same tokens); kept once")
    return tree


def tree_from_tree(from_tree, dataset_dir, tokenizer, source_model_name, output, cache_dir):
    """Same tokenizer: the token sequences copied unchanged; another: the names recovered, then re-tokenized."""
    if not os.path.exists(from_tree):
        raise DataError(f"{from_tree}: tree file not found")
    logger.info(f"Reading the prefix tree {from_tree}")
    source_tree, source_tokenizer = load_source_tree(from_tree, tokenizer, source_model_name, cache_dir)
    if source_tokenizer is None:
        tree = PrefixTree.from_sequences(list(source_tree.sequences()), tokenizer.eos_token_id,
                                         tokenizer_info(tokenizer))
        tree.source = source_record(from_tree)
        return tree
    names, bad = recover_names(source_tree, source_tokenizer)
    logger.info(f"  recovered {len(names):,} names from {len(source_tree):,} paths decoded with the tokenizer "
                f"{source_tree.tokenizer.get('name')!r}")
    report_round_trip(bad, output)
    tree = PrefixTree.from_names(names, tokenizer)
    tree.source = source_record(from_tree)
    write_recovered_names(dataset_dir, names)
    return tree


def build_tree(dataset_dir, model_name, names_file=None, from_tree=None, source_model_name=None, output=None,
               cache_dir=None, tokenizer=None):
    """Build and save the prefix tree of the dataset's entity names for `model_name`'s tokenizer; returns its path."""
    start = time.time()
    tokenizer = tokenizer or load_tokenizer(model_name, cache_dir)
    info = tokenizer_info(tokenizer)
    if names_file is None and from_tree is None:
        names_file, from_tree = find_tree_source(dataset_dir)
    output = output or default_tree_path(dataset_dir, tokenizer)
    if names_file is not None:
        tree = tree_from_names(names_file, tokenizer, model_name)
    else:
        tree = tree_from_tree(from_tree, dataset_dir, tokenizer, source_model_name, output, cache_dir)
    tree.save(output)
    logger.info(f"Wrote {output}: {len(tree):,} names, {tree.num_nodes:,} nodes, tokenizer {info['name']!r} "
                f"(fingerprint {info['fingerprint'][:12]}), {file_size(output)}, {time.time() - start:.1f} s")
    return output


def report_round_trip(bad, tree_path):
    if not bad:
        logger.info("  every name round-trips (decode, then tokenize again, gives the stored tokens)")
        return
    report = os.path.splitext(tree_path)[0] + ".not_round_trip.tsv"
    logger.info(f"  {len(bad):,} paths do not round-trip (the decoded name tokenizes differently, or is empty); "
                f"they are kept under their decoded name, empty ones dropped:")
    for name, stored, tokens in bad[:SHOWN]:
        logger.info(f"    {name!r}: stored {stored} -> tokenized {tokens}")
    write_lines(report, ["name\tstored_tokens\ttokenized_again"] +
                [f"{json.dumps(n, ensure_ascii=False)}\t{s}\t{t}" for n, s, t in bad])
    logger.info(f"  Wrote {report} (all {len(bad):,})")


def write_recovered_names(dataset_dir, names):
    """Save recovered names as the folder's entities.txt when it has none, so any LM's tree builds from names."""
    path = os.path.join(dataset_dir, ENTITY_LIST)
    if os.path.exists(path):
        return
    lines = sorted(set(n for n in names if "\n" not in n and "\r" not in n))
    if len(lines) < len(set(names)):
        logger.info(f"  {len(set(names)) - len(lines)} names contain line breaks and are left out of {path}")
    write_lines(path, lines)
    logger.info(f"Wrote {path}: {len(lines):,} recovered entity names (later trees for other LMs build from it)")

"""Build every derived file of a dataset folder from raw inputs, one command each.

    python prepare.py trie       --dataset mydata --model_name opt-6.7b         # prefix tree for the LM's tokenizer
    python prepare.py embeddings --dataset mydata --simcse_model minilm-l6      # training-mention embeddings
    python prepare.py clip       --dataset mydata --images path/to/images       # CLIP image features (resumable)
    python prepare.py all        --dataset mydata --images path/to/images       # whatever the folder is missing

Each step writes into the dataset folder (--data_dir/--dataset) exactly the file main.py and infe.py read, with
the same defaults (params.DATASET_PRESETS), writes it atomically (temp file in the same folder + os.replace, so a
crash never leaves a truncated file in place of a good one) and prints what it wrote.
"""
import argparse
import contextlib
import glob
import json
import os
import pickle
import shutil
import sys
import tempfile
import time

import numpy as np

from params import DATASET_PRESETS, ENCODER_REGISTRY, MODEL_REGISTRY, PAPER_PRESET
from utils import ENTITY_LIST, DataError, image_key, load_split, read_entity_names

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
DEFAULT_IMG_FEAT = "clip_vit_large_patch14_1024.hdf5"
GEMEL_TREE_PICKLE = "prefix_tree_opt.pkl"
SPLITS = ("train", "dev", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
SHOWN = 20  # bad images / non-round-tripping names printed; the full list goes to a TSV report


# ----------------------------------------------------------------------------- shared helpers

def preset(dataset):
    return DATASET_PRESETS.get(dataset, PAPER_PRESET)


def dataset_folder(data_dir, dataset):
    folder = os.path.join(data_dir, dataset)
    if not os.path.isdir(folder):
        raise DataError(f"dataset folder {folder!r} does not exist: create it with train.json/dev.json/test.json "
                        f"(JSON lines) and entities.txt (one entity name per line), or pick --dataset / --data_dir")
    return folder


@contextlib.contextmanager
def atomic_output(path, mode="wb"):
    """Open a temp file next to `path`; on success fsync it and os.replace it over `path`, on failure delete it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.chmod(tmp, default_file_mode())
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def default_file_mode():
    """rw for whom the umask allows, as open() would give: mkstemp's temp files are private (0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_lines(path, lines):
    with atomic_output(path, "w") as f:
        for line in lines:
            f.write(line + "\n")


def file_size(path):
    size = os.path.getsize(path)
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load reports (e.g. the text tower's weights skipped when loading only CLIP's vision)."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def pick_device(device):
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


# ----------------------------------------------------------------------------- step 1: the prefix tree

def load_tokenizer(model_name, cache_dir=None):
    """The tokenizer of an LM (short name, hub id or local folder) without loading its weights.

    GGUF models of the registry: the tokenizer is read from the GGUF (or from main.py's converted folder when it
    exists); both have the same vocabulary, hence the same fingerprint, and are named after the short name, which
    is also the name of the folder main.py loads from.
    """
    from transformers import AutoTokenizer

    spec = MODEL_REGISTRY.get(model_name, {})
    try:
        if "gguf_file" in spec:
            from model import _gguf_source, default_cache_root

            converted = os.path.join(default_cache_root(), model_name)
            if os.path.exists(os.path.join(converted, "config.json")):
                tokenizer = AutoTokenizer.from_pretrained(converted)
            else:
                folder, gguf_file = _gguf_source(model_name, spec)
                tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
            tokenizer.name_or_path = model_name
        else:
            tokenizer = AutoTokenizer.from_pretrained(spec.get("path", model_name), cache_dir=cache_dir)
    except OSError as error:
        raise DataError(f"cannot load the tokenizer of {model_name!r}: {error}\nGive a local model folder, a hub id "
                        f"reachable from here, or a short name ({', '.join(MODEL_REGISTRY)}).") from None
    if tokenizer.eos_token_id is None:
        raise DataError(f"the tokenizer of {model_name!r} has no EOS token; GEMEL's tree wraps every name in EOS")
    return tokenizer


def default_tree_path(dataset_dir, tokenizer):
    """prefix_tree_<tag>.marisa, named as utils.load_prefix_tree names its cache."""
    from trie import is_opt_tokenizer, tokenizer_info

    tag = "opt" if is_opt_tokenizer(tokenizer) else tokenizer_info(tokenizer)["fingerprint"][:12]
    return os.path.join(dataset_dir, f"prefix_tree_{tag}.marisa")


def find_matching_tree(dataset_dir, tokenizer):
    """A prefix_tree_*.marisa of the folder built with this tokenizer (what main.py would load), or None."""
    from trie import PrefixTree, tokenizer_info

    fingerprint = tokenizer_info(tokenizer)["fingerprint"]
    for path in sorted(glob.glob(os.path.join(dataset_dir, "prefix_tree_*.marisa"))):
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
    trees = sorted(glob.glob(os.path.join(dataset_dir, "prefix_tree_*.marisa")))
    if trees:
        return None, trees[0]
    raise DataError(f"{dataset_dir}: no entity list to build the prefix tree from: put the knowledge base's names "
                    f"in {names_file} (one per line), or pass --names <file> or --from_tree <tree>")


def recover_names(tree, tokenizer, batch_size=10000):
    """Names of a tree's sequences, decoded as answers are (skip special tokens, strip spaces).

    Returns (names, not_round_trip): a name round-trips when tokenizing it again (no special tokens) gives back
    exactly the tokens stored in the tree; the others are listed as (name, stored tokens, re-tokenized tokens).
    Sequences that decode to an empty name are dropped and listed with name "".
    """
    names, not_round_trip, batch = [], [], []

    def flush():
        decoded = [d.strip(" ") for d in tokenizer.batch_decode(batch, skip_special_tokens=True)]
        again = tokenizer(decoded, add_special_tokens=False)["input_ids"]
        for name, stored, tokens in zip(decoded, batch, again):
            if name.strip():
                names.append(name)
            if not name.strip() or list(tokens) != list(stored):
                not_round_trip.append((name, list(stored), list(tokens)))
        batch.clear()

    for sequence in tree.sequences():
        batch.append(sequence[1:-1])  # drop the leading and final EOS
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return names, not_round_trip


def load_source_tree(path, target_tokenizer, source_model_name, cache_dir):
    """The tree in `path` (GEMEL pickle or .marisa) and the tokenizer that built it (None when it is the target's)."""
    from trie import PrefixTree, is_opt_tokenizer, tokenizer_info

    target = tokenizer_info(target_tokenizer)
    if path.endswith(".pkl"):
        if source_model_name is None and is_opt_tokenizer(target_tokenizer):
            # GEMEL's pickle holds OPT ids and the target is OPT: take the sequences as they are
            return PrefixTree.from_gemel_pickle(path, target, target_tokenizer.eos_token_id), None
        source_tokenizer = load_tokenizer(source_model_name or "opt-6.7b", cache_dir)
        source = tokenizer_info(source_tokenizer)
        tree = PrefixTree.from_gemel_pickle(path, source, source_tokenizer.eos_token_id)
        return tree, (None if source["fingerprint"] == target["fingerprint"] else source_tokenizer)

    header = PrefixTree.read_header(path)
    recorded = header.get("tokenizer") or {}
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


def build_tree(dataset_dir, model_name, names_file=None, from_tree=None, source_model_name=None, output=None,
               cache_dir=None, tokenizer=None):
    """Build and save the prefix tree of the dataset's entity names for `model_name`'s tokenizer; returns its path."""
    from trie import PrefixTree, tokenizer_info

    start = time.time()
    tokenizer = tokenizer or load_tokenizer(model_name, cache_dir)
    info = tokenizer_info(tokenizer)
    if names_file is None and from_tree is None:
        names_file, from_tree = find_tree_source(dataset_dir)
    output = output or default_tree_path(dataset_dir, tokenizer)

    if names_file is not None:
        if not os.path.exists(names_file):
            raise DataError(f"{names_file}: entity list not found (one entity name per line)")
        names = read_entity_names(names_file)
        if not names:
            raise DataError(f"{names_file}: no names in it (one entity name per line)")
        if any(name.endswith("\r") for name in names):
            print(f"Warning: {names_file} has Windows line endings; the '\\r' would become part of the names. "
                  f"Convert it (e.g. `dos2unix`) and rerun.")
        print(f"Building the prefix tree of {len(names):,} names from {names_file} for {model_name}")
        tree = PrefixTree.from_names(names, tokenizer)
        if len(tree) < len(names):
            print(f"  {len(names) - len(tree):,} names are duplicates (same tokens); kept once")
    else:
        if not os.path.exists(from_tree):
            raise DataError(f"{from_tree}: tree file not found")
        print(f"Reading the prefix tree {from_tree}")
        source_tree, source_tokenizer = load_source_tree(from_tree, tokenizer, source_model_name, cache_dir)
        if source_tokenizer is None:  # same tokenizer: copy the token sequences unchanged
            tree = PrefixTree.from_sequences(list(source_tree.sequences()), tokenizer.eos_token_id, info)
        else:
            names, bad = recover_names(source_tree, source_tokenizer)
            print(f"  recovered {len(names):,} names from {len(source_tree):,} paths decoded with the tokenizer "
                  f"{source_tree.tokenizer.get('name')!r}")
            report_round_trip(bad, output)
            tree = PrefixTree.from_names(names, tokenizer)
            write_recovered_names(dataset_dir, names)
    tree.save(output)
    print(f"Wrote {output}: {len(tree):,} names, {tree.num_nodes:,} nodes, tokenizer {info['name']!r} "
          f"(fingerprint {info['fingerprint'][:12]}), {file_size(output)}, {time.time() - start:.1f} s")
    return output


def report_round_trip(bad, tree_path):
    if not bad:
        print("  every name round-trips (decode, then tokenize again, gives the stored tokens)")
        return
    report = os.path.splitext(tree_path)[0] + ".not_round_trip.tsv"
    print(f"  {len(bad):,} paths do not round-trip (the decoded name tokenizes differently, or is empty); "
          f"they are kept under their decoded name, empty ones dropped:")
    for name, stored, tokens in bad[:SHOWN]:
        print(f"    {name!r}: stored {stored} -> tokenized {tokens}")
    write_lines(report, ["name\tstored_tokens\ttokenized_again"] +
                [f"{json.dumps(n, ensure_ascii=False)}\t{s}\t{t}" for n, s, t in bad])
    print(f"  Wrote {report} (all {len(bad):,})")


def write_recovered_names(dataset_dir, names):
    """Save recovered names as the folder's entities.txt when it has none, so any LM's tree builds from names."""
    path = os.path.join(dataset_dir, ENTITY_LIST)
    if os.path.exists(path):
        return
    lines = sorted(set(n for n in names if "\n" not in n and "\r" not in n))
    if len(lines) < len(set(names)):
        print(f"  {len(set(names)) - len(lines)} names contain line breaks and are left out of {path}")
    write_lines(path, lines)
    print(f"Wrote {path}: {len(lines):,} recovered entity names (later trees for other LMs build from it)")


# ----------------------------------------------------------------------------- step 2: training-mention embeddings

def default_embedding_path(dataset_dir, dataset, ment_embed_file=None):
    return os.path.join(dataset_dir, ment_embed_file or preset(dataset)["ment_embed_file"])


def build_embeddings(train_file, encoder_name, output, device=None, batch_size=128, cache_dir=None):
    """GEMEL's pickled float32 matrix [n_train, dim]: one row per NIL-filtered training line, in file order.

    Each distinct mention is embedded once (sorted by length, to pad little), so rows of equal mentions are
    bit-identical and their retrieval scores tie exactly, as GEMEL's tie-breaking rule assumes.
    """
    from retrieval import MentionEncoder, resolve_encoder

    start = time.time()
    train = load_split(train_file)
    if not train:
        raise DataError(f"{train_file}: no non-NIL examples; the embeddings have one row per non-NIL example")
    mentions = [ex["mention"] for ex in train]
    distinct = sorted(dict.fromkeys(mentions), key=len)
    path, pooling = resolve_encoder(encoder_name)
    print(f"Embedding {len(distinct):,} distinct mentions of {len(train):,} training examples with "
          f"{encoder_name} ({pooling} pooling)")
    encoder = MentionEncoder(encoder_name, device=str(pick_device(device)), cache_dir=cache_dir)
    vectors = encoder.encode(distinct, batch_size=batch_size, progress=True)  # (n_distinct, dim)
    row = {m: i for i, m in enumerate(distinct)}
    matrix = np.ascontiguousarray(vectors[[row[m] for m in mentions]], dtype=np.float32)  # (n_train, dim)
    with atomic_output(output) as f:
        pickle.dump(matrix, f, protocol=4)
    print(f"Wrote {output}: float32 {list(matrix.shape)} (one row per non-NIL line of {train_file}), "
          f"{file_size(output)}, {time.time() - start:.1f} s")
    return output


# ----------------------------------------------------------------------------- step 3: CLIP image features

def list_image_folder(folder):
    """(key, path) of every image file under `folder`; the key is the path relative to it, with '/'."""
    if not os.path.isdir(folder):
        raise DataError(f"--images {folder}: not a folder")
    items, ignored = [], 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.startswith("."):
                continue
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                ignored += 1
                continue
            path = os.path.join(root, name)
            items.append((os.path.relpath(path, folder).replace(os.sep, "/"), path))
    if ignored:
        print(f"Ignored {ignored} file(s) in {folder} without an image extension ({' '.join(IMAGE_EXTENSIONS)}); "
              f"list them with --image_list to include them")
    return items


def read_image_list(list_file):
    """(key, path) from lines `key<TAB>path`; a relative path is relative to the list file's folder."""
    if not os.path.exists(list_file):
        raise DataError(f"--image_list {list_file}: file not found")
    base = os.path.dirname(os.path.abspath(list_file))
    items, seen = [], set()
    with open(list_file, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if "\t" not in line:
                raise DataError(f"{list_file}, line {line_no}: expected `image key<TAB>image path`, got {line!r}")
            key, path = line.rsplit("\t", 1)
            if key in seen:
                raise DataError(f"{list_file}, line {line_no}: image key {key!r} is listed twice")
            seen.add(key)
            items.append((key, path if os.path.isabs(path) else os.path.join(base, path)))
    return items


def load_image(path, min_size):
    """(RGB PIL image, None) or (None, (reason, detail)); reason is missing, unreadable, truncated or tiny."""
    from PIL import Image

    if not os.path.isfile(path):
        return None, ("missing", "no such file")
    try:
        with Image.open(path) as image:
            image.load()
            if min(image.size) < min_size:
                return None, ("tiny", f"{image.size[0]}x{image.size[1]} px, below --min_image_size {min_size}")
            return image.convert("RGB"), None
    except Exception as error:  # noqa: BLE001 -- PIL raises many types on bad files; each one is reported by key
        message = f"{type(error).__name__}: {error}"
        return None, ("truncated" if "truncated" in str(error).lower() else "unreadable", message)


class ImageReader:
    """Map-style dataset: index -> (index, pixel values (3, H, W) float32 or None, (reason, detail) or None)."""

    def __init__(self, items, processor, min_size):
        self.items, self.processor, self.min_size = items, processor, min_size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        image, problem = load_image(self.items[index][1], self.min_size)
        if image is None:
            return index, None, problem
        return index, self.processor(images=image, return_tensors="np")["pixel_values"][0], None


class ClipEncoder:
    """The pooled output of a CLIP vision tower (dimension 1024 for ViT-L/14), PIL preprocessing."""

    def __init__(self, name, device):
        import torch
        from transformers import AutoImageProcessor, CLIPVisionModel

        self.torch, self.device, self.name = torch, device, name
        with quiet_transformers():
            # the PIL backend matches the preprocessing GEMEL's features were made with, torchvision installed or not
            self.processor = AutoImageProcessor.from_pretrained(name, backend="pil")
            self.model = CLIPVisionModel.from_pretrained(name, dtype=torch.float32).to(device).eval()
        self.dim = self.model.config.hidden_size

    def __call__(self, pixel_values):
        """(B, 3, H, W) numpy -> (B, dim) float32 numpy."""
        with self.torch.no_grad():
            pixels = self.torch.from_numpy(np.ascontiguousarray(pixel_values)).to(self.device)
            return self.model(pixel_values=pixels).pooler_output.float().cpu().numpy()

    def encode_image(self, image):
        return self(self.processor(images=image, return_tensors="np")["pixel_values"])[0]


def first_vector_length(h5):
    """Length of the first stored vector (None when the file holds none): all features share one dimension."""
    import h5py

    found = []

    def visit(_, obj):
        if isinstance(obj, h5py.Dataset):
            found.append(int(np.prod(obj.shape)))
            return True
        return None

    h5.visititems(visit)
    return found[0] if found else None


class FeatureParts:
    """Per-batch checkpoint files of an unfinished run, kept in `<output>.parts/` next to the HDF5 file.

    Each batch's keys and features are one .npz written atomically, so a crash loses at most the batch being
    computed and never damages what is saved. meta.json records the CLIP model and dimension so that a resumed
    run cannot mix features of two models.
    """

    def __init__(self, output):
        self.folder = output + ".parts"
        self._next = len(self.chunks())

    def chunks(self):
        return sorted(glob.glob(os.path.join(self.folder, "chunk_*.npz")))

    def keys(self):
        done = set()
        for chunk in self.chunks():
            with np.load(chunk, allow_pickle=False) as data:
                done.update(data["keys"].tolist())
        return done

    def check_or_start(self, model_name, dim):
        meta_file = os.path.join(self.folder, "meta.json")
        meta = {"clip_model": model_name, "dim": dim}
        if os.path.exists(meta_file):
            with open(meta_file, encoding="utf-8") as f:
                saved = json.load(f)
            if saved != meta:
                raise DataError(f"{self.folder} holds features of an interrupted run with {saved}, not {meta}: rerun "
                                f"with --clip_model {saved['clip_model']} to finish it, or delete the folder")
            return
        os.makedirs(self.folder, exist_ok=True)
        with atomic_output(meta_file, "w") as f:
            json.dump(meta, f)

    def add(self, keys, features, reasons):
        path = os.path.join(self.folder, f"chunk_{self._next:07d}.npz")
        self._next += 1
        with atomic_output(path) as f:
            np.savez(f, keys=np.array(keys, dtype=str), features=np.asarray(features, dtype=np.float32),
                     reasons=np.array(reasons, dtype=str))

    def merge_into(self, output):
        """Copy the HDF5 file to a temp file, add every saved feature it lacks, os.replace it; then drop the parts.

        Returns the number of features added. Rerunning after a crash anywhere in here is safe: the old file is
        untouched until the replace, and keys already in the file are not written twice.
        """
        import h5py

        chunks = self.chunks()
        added = 0
        if chunks:
            folder = os.path.dirname(os.path.abspath(output))
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(output)}.", suffix=".tmp")
            os.close(fd)
            os.chmod(tmp, default_file_mode())
            try:
                if os.path.exists(output):
                    shutil.copyfile(output, tmp)
                with h5py.File(tmp, "a" if os.path.exists(output) else "w") as h5:
                    for chunk in chunks:
                        with np.load(chunk, allow_pickle=False) as data:
                            for key, vector, reason in zip(data["keys"].tolist(), data["features"], data["reasons"]):
                                if key in h5:
                                    continue
                                dataset = h5.create_dataset(key, data=vector)
                                if reason:  # a bad image given the default image's features: say so in the file
                                    dataset.attrs["default_image_for"] = str(reason)
                                added += 1
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, output)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        shutil.rmtree(self.folder, ignore_errors=True)
        return added


def extract_clip_features(items, output, clip_model=DEFAULT_CLIP_MODEL, batch_size=32, num_workers=0,
                          min_image_size=10, default_image=None, device=None):
    """Add the CLIP features of `items` [(key, image path)] that `output` lacks; returns a summary dict.

    Atomic and resumable: the HDF5 file is never written in place. Features of each batch go to a checkpoint file
    in `<output>.parts/` (see FeatureParts); when every image is done they are merged into a copy of the HDF5
    file, which then replaces it. An interrupted run (crash, Ctrl-C) leaves the old file intact and the finished
    batches in the parts folder; rerunning the same command skips the keys in the file and in the parts.
    Bad images (missing, unreadable, truncated, tiny) are reported by key; without --default_image they are not
    written (so a rerun tries them again), with it they get the default image's features.
    """
    import h5py
    import torch
    from PIL import Image
    from tqdm import tqdm

    start = time.time()
    parts = FeatureParts(output)
    in_file = set()
    if os.path.exists(output):
        with h5py.File(output, "r") as h5:
            in_file = {key for key, _ in items if key in h5}
    saved = parts.keys()
    in_parts = {key for key, _ in items if key in saved and key not in in_file}
    todo = [(key, path) for key, path in items if key not in in_file and key not in in_parts]
    summary = {"listed": len(items), "in_file": len(in_file), "resumed": len(in_parts), "computed": 0, "bad": [],
               "output": output}
    print(f"CLIP features for {len(items):,} images -> {output}: {len(in_file):,} already in the file, "
          f"{len(in_parts):,} saved by an interrupted run, {len(todo):,} to compute")

    if todo:
        device = pick_device(device)
        encoder = ClipEncoder(clip_model, device)
        if os.path.exists(output):
            with h5py.File(output, "r") as h5:
                stored = first_vector_length(h5)
            if stored is not None and stored != encoder.dim:
                raise DataError(f"{output} holds features of dimension {stored}, but {clip_model} gives "
                                f"{encoder.dim}: write to another file with --img_feat")
        parts.check_or_start(clip_model, encoder.dim)
        default_vector = None
        if default_image is not None:
            if default_image == "black":
                image = Image.new("RGB", (224, 224))
            else:
                image, problem = load_image(default_image, 1)
                if image is None:
                    raise DataError(f"--default_image {default_image}: {problem[0]} ({problem[1]})")
            default_vector = encoder.encode_image(image)

        loader = torch.utils.data.DataLoader(ImageReader(todo, encoder.processor, min_image_size),
                                             batch_size=batch_size, num_workers=num_workers, collate_fn=list)
        bar = tqdm(total=len(todo), desc="CLIP features", unit="img")
        try:
            for batch in loader:
                good = [(i, pixels) for i, pixels, problem in batch if problem is None]
                keys, vectors, reasons = [todo[i][0] for i, _ in good], [], []
                if good:
                    vectors = list(encoder(np.stack([pixels for _, pixels in good])))  # (B_good, dim)
                    reasons = [""] * len(good)
                for i, _, problem in batch:
                    if problem is not None:
                        summary["bad"].append((todo[i][0], *problem))
                        if default_vector is not None:
                            keys.append(todo[i][0])
                            vectors.append(default_vector)
                            reasons.append(problem[0])
                if keys:
                    parts.add(keys, np.stack(vectors), reasons)
                summary["computed"] += len(good)
                bar.update(len(batch))
        except KeyboardInterrupt:
            bar.close()
            print(f"\nInterrupted: {output} is unchanged; finished batches are saved in {parts.folder}. "
                  f"Rerun the same command to continue.")
            raise
        bar.close()

    added = parts.merge_into(output) if os.path.isdir(parts.folder) else 0
    summary["added"] = added
    summary["seconds"] = time.time() - start
    print_clip_summary(summary, default_image)
    return summary


def print_clip_summary(summary, default_image):
    bad = summary["bad"]
    counts = {reason: sum(1 for _, r, _ in bad if r == reason) for reason in ("unreadable", "truncated", "tiny",
                                                                                "missing")}
    action = f"given the features of --default_image {default_image}" if default_image else \
        "skipped (not written; a rerun tries them again)"
    print(f"Summary: {summary['listed']:,} images listed; {summary['in_file']:,} already in the file; "
          f"{summary['resumed']:,} resumed from an interrupted run; {summary['computed']:,} computed now; "
          f"{len(bad):,} bad ({', '.join(f'{n} {r}' for r, n in counts.items())}) {action}")
    for key, reason, detail in bad[:SHOWN]:
        print(f"  {reason:<10} {key}  ({detail})")
    if bad:
        report = os.path.splitext(summary["output"])[0] + ".bad_images.tsv"
        write_lines(report, ["key\treason\tdetail"] + [f"{k}\t{r}\t{d}" for k, r, d in bad])
        print(f"Wrote {report} (all {len(bad):,} bad images)")
    if summary["added"]:
        print(f"Wrote {summary['output']}: {summary['added']:,} new features, {file_size(summary['output'])}, "
              f"{summary['seconds']:.1f} s")
    else:
        print(f"{summary['output']}: nothing new to write")


def split_image_keys(dataset_dir):
    """Image keys of the non-NIL examples of the folder's splits (main.py reads no others)."""
    keys = []
    for split in SPLITS:
        path = os.path.join(dataset_dir, f"{split}.json")
        if os.path.exists(path):
            keys += [image_key(ex) for ex in load_split(path)]
    return list(dict.fromkeys(keys))


def missing_image_keys(dataset_dir, feature_file):
    import h5py

    keys = split_image_keys(dataset_dir)
    if not os.path.exists(feature_file):
        return keys
    with h5py.File(feature_file, "r") as h5:
        return [key for key in keys if key not in h5]


def report_split_coverage(dataset_dir, feature_file):
    missing = missing_image_keys(dataset_dir, feature_file)
    if missing:
        print(f"Warning: {len(missing):,} image keys of {dataset_dir}'s splits have no feature in {feature_file} "
              f"(e.g. {missing[:3]}); main.py stops on them. Add those images, or a --default_image.")
    return missing


# ----------------------------------------------------------------------------- command line

def add_common(p):
    p.add_argument("--dataset", default="demo", help="dataset folder name under --data_dir (wikidiverse, wikimel, "
                                                      "demo, or your own)")
    p.add_argument("--data_dir", default="./data/", help="folder holding one sub-folder per dataset")
    p.add_argument("--cache_dir", default=None, help="transformers cache for downloaded models")
    p.add_argument("--device", default=None, help="cuda, cpu, cuda:1, ...; unset: cuda if available")


def add_trie_flags(p, standalone):
    p.add_argument("--model_name", default=None,
                   help=f"LM whose tokenizer the tree is for: a short name ({', '.join(MODEL_REGISTRY)}), a hub id or "
                        f"a local folder (default: the dataset's, as main.py: opt-6.7b, demo: smollm2-135m)")
    if standalone:
        source = p.add_mutually_exclusive_group()
        source.add_argument("--names", default=None,
                            help="entity list, one name per line (default: the dataset's entities.txt, else "
                                 "GEMEL's prefix_tree_opt.pkl, else another prefix_tree_*.marisa of the folder)")
        source.add_argument("--from_tree", default=None,
                            help="recover the names from a tree built with another tokenizer: GEMEL's pickle (.pkl) "
                                 "or a .marisa tree; names that do not round-trip are reported")
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
    images = p.add_mutually_exclusive_group()
    images.add_argument("--images", default=None,
                        help="folder of images; each image's key is its path relative to the folder (e.g. "
                             "train/0.jpg), which must equal the img_name / img_url of the splits")
    images.add_argument("--image_list", default=None,
                        help="text file of `key<TAB>path` lines (for keys that are URLs, or files without an image "
                             "extension); relative paths are relative to the list file")
    p.add_argument("--clip_model", default=DEFAULT_CLIP_MODEL,
                   help="CLIP checkpoint (hub id or local folder; a full CLIP or a vision-only model); the feature "
                        "is the vision tower's pooled output (1024 for ViT-L/14)")
    p.add_argument("--img_feat", default=DEFAULT_IMG_FEAT, help="HDF5 file of image features in the dataset folder")
    p.add_argument("--clip_batch_size", type=int, default=32, help="images per CLIP forward pass")
    p.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes decoding and resizing images")
    p.add_argument("--min_image_size", type=int, default=10,
                   help="images with a side shorter than this many pixels count as bad (placeholders, icons)")
    p.add_argument("--default_image", default=None,
                   help="image file whose features bad images get, or `black` for a black image (default: bad "
                        "images are skipped)")


def build_parser():
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=fmt)
    steps = parser.add_subparsers(dest="step", required=True, metavar="{trie,embeddings,clip,all}")

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

    p = steps.add_parser("all", formatter_class=fmt,
                         help="run the steps whose files the dataset folder is missing (or holds stale)")
    add_common(p)
    add_trie_flags(p, standalone=False)
    add_embedding_flags(p)
    add_clip_flags(p)
    return parser


def finalize(args, parser):
    for name in ("embed_batch_size", "clip_batch_size", "min_image_size"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name} must be at least 1")
    if getattr(args, "num_workers", 0) < 0:
        parser.error("--num_workers must be >= 0")
    default = preset(args.dataset)
    if getattr(args, "model_name", "") is None:
        args.model_name = default["model_name"]
    if getattr(args, "simcse_model", "") is None:
        args.simcse_model = default["simcse_model"]
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


def run_all(args, folder):
    """Run each step whose output is missing or stale; returns 0, or 1 when a needed step could not run."""
    failed = []
    train_file = os.path.join(folder, "train.json")

    tokenizer = load_tokenizer(args.model_name, args.cache_dir)
    tree = find_matching_tree(folder, tokenizer)
    if tree:
        print(f"[trie] {tree} was built with the tokenizer of {args.model_name}: nothing to do")
    else:
        try:
            build_tree(folder, args.model_name, source_model_name=args.source_model_name, cache_dir=args.cache_dir,
                       tokenizer=tokenizer)
        except DataError as error:
            failed.append(f"[trie] {error}")

    embeddings = default_embedding_path(folder, args.dataset, args.ment_embed_file)
    if not os.path.exists(train_file):
        failed.append(f"[embeddings] {train_file} is missing: the embeddings are of its mentions")
    else:
        reason = stale_embeddings(embeddings, train_file)
        if reason is None:
            print(f"[embeddings] {embeddings} has one row per non-NIL training example: nothing to do")
        else:
            print(f"[embeddings] {embeddings} {reason}: building it")
            build_embeddings(train_file, args.simcse_model, embeddings, args.device, args.embed_batch_size,
                             args.cache_dir)

    features = os.path.join(folder, args.img_feat)
    missing = missing_image_keys(folder, features)
    if os.path.exists(features) and not missing:
        print(f"[clip] {features} holds a feature for every image key of the splits: nothing to do")
    elif args.images is None and args.image_list is None:
        what = "does not exist" if not os.path.exists(features) else f"lacks {len(missing):,} image keys of the splits"
        failed.append(f"[clip] {features} {what}; give the images: `python prepare.py clip --data_dir "
                      f"{args.data_dir} --dataset {args.dataset} --images <folder>` (or --image_list <file>)")
    else:
        run_clip(args, folder)

    for message in failed:
        print(f"Could not build: {message}")
    return 1 if failed else 0


def stale_embeddings(path, train_file):
    """Why the embedding file cannot serve main.py (missing, unreadable, wrong row count), or None if it can."""
    if not os.path.exists(path):
        return "does not exist"
    try:
        with open(path, "rb") as f:
            matrix = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        return f"cannot be read ({error})"
    rows = len(load_split(train_file))
    shape = tuple(getattr(matrix, "shape", ()))
    if len(shape) != 2 or shape[0] != rows:
        return f"has shape {shape}, not one row per non-NIL training example ({rows})"
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
    else:
        return run_all(args, folder)
    return 0


if __name__ == "__main__":
    from trie import TokenizerMismatchError

    try:
        sys.exit(main())
    except (DataError, TokenizerMismatchError) as error:
        sys.exit(f"error: {error}")

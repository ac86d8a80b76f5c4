"""CLIP image features of a dataset: images in, the HDF5 file main.py reads out (`prepare.py clip`).

Owns listing the images, reading them (bad ones reported by key), encoding them with a CLIP vision tower, and the
resumable, atomic update of the feature file; also which image keys of the splits the file still lacks.
"""
import contextlib
import glob
import json
import logging
import os
import shutil
import time

import numpy as np

from mel.errors import DataError
from mel.io.atomic import atomic_path, atomic_write, ensure_free_space, file_size, write_lines
from mel.io.datasets import image_key, read_split
from mel.models.loading import pick_device

logger = logging.getLogger(__name__)

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
DEFAULT_IMG_FEAT = "clip_vit_large_patch14_1024.hdf5"
SPLITS = ("train", "dev", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
SHOWN = 20  # bad images printed; the full list goes to a TSV report


# ----------------------------------------------------------------------------- which images

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
        logger.info(f"Ignored {ignored} file(s) in {folder} without an image extension ({' '.join(IMAGE_EXTENSIONS)}); "
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


def split_image_keys(dataset_dir):
    """Image keys of the non-NIL examples of the folder's splits (main.py reads no others)."""
    keys = []
    for split in SPLITS:
        path = os.path.join(dataset_dir, f"{split}.json")
        if os.path.exists(path):
            keys += [image_key(ex) for ex in read_split(path)]
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
        logger.warning(f"{len(missing):,} image keys of {dataset_dir}'s splits have no feature in {feature_file} "
                       f"(e.g. {missing[:3]}); main.py stops on them. Add those images, or a --default_image.")
    return missing


# ----------------------------------------------------------------------------- reading and encoding images

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


class ClipEncoder:
    """The pooled output of an image encoder: a CLIP vision tower (1024-d for ViT-L/14, GEMEL's), or any vision
    AutoModel with a pooler, e.g. microsoft/resnet-152 (2048-d, DRIN's: its pooler is the mean of the 7x7 regions
    DRIN averages). PIL preprocessing."""

    def __init__(self, name, device):
        import torch

        self.torch, self.device, self.name = torch, device, name
        try:
            self._load(name, device)
        except (OSError, ValueError) as error:  # no local folder, and the hub cannot be reached or has no such model
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DataError(f"--clip_model {name!r}: cannot load it ({first}); give a local model folder or a hub id "
                            f"reachable from here") from None

    def _load(self, name, device):
        torch = self.torch
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, CLIPVisionModel

        with quiet_transformers():
            # the PIL backend matches the preprocessing GEMEL's features were made with, torchvision installed or not
            self.processor = AutoImageProcessor.from_pretrained(name, backend="pil")
            if "clip" in AutoConfig.from_pretrained(name).model_type:
                self.model = CLIPVisionModel.from_pretrained(name, dtype=torch.float32)
                self.dim = self.model.config.hidden_size
            else:
                self.model = AutoModel.from_pretrained(name, dtype=torch.float32)
                sizes = getattr(self.model.config, "hidden_sizes", None)  # ResNet-style: the last stage's width
                self.dim = sizes[-1] if sizes else self.model.config.hidden_size
            self.model.to(device).eval()

    def __call__(self, pixel_values):
        """(B, 3, H, W) numpy -> (B, dim) float32 numpy."""
        with self.torch.no_grad():
            pixels = self.torch.from_numpy(np.ascontiguousarray(pixel_values)).to(self.device)
            return self.model(pixel_values=pixels).pooler_output.flatten(1).float().cpu().numpy()

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


# ----------------------------------------------------------------------------- the resumable, atomic feature file

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
                done.update(data["keys"].tolist())  # the keys only: the features stay on disk
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
        with atomic_write(meta_file) as f:
            json.dump(meta, f)

    def add(self, keys, features, reasons):
        path = os.path.join(self.folder, f"chunk_{self._next:07d}.npz")
        self._next += 1
        with atomic_write(path, "wb") as f:
            np.savez(f, keys=np.array(keys, dtype=str), features=np.asarray(features, dtype=np.float32),
                     reasons=np.array(reasons, dtype=str))

    def merge_into(self, output):
        """Add every saved feature `output` lacks (see add_missing_features), then drop the parts.

        Returns the number of features added. Rerunning after a crash anywhere in here is safe: the old file is
        untouched until the replace, and keys already in the file are not written twice.
        """
        chunks = self.chunks()
        if chunks:  # the file is copied, then grows by the new features (HDF5 stores each with its own header)
            existing = os.path.getsize(output) if os.path.exists(output) else 0
            ensure_free_space(output, existing + 2 * sum(os.path.getsize(c) for c in chunks), "the image features")
        added = add_missing_features(output, read_chunks(chunks)) if chunks else 0
        shutil.rmtree(self.folder, ignore_errors=True)
        return added


def read_chunks(chunks):
    """(key, feature, reason) of every feature saved in the chunk files, in order."""
    for chunk in chunks:
        with np.load(chunk, allow_pickle=False) as data:
            yield from zip(data["keys"].tolist(), data["features"], data["reasons"])


def add_missing_features(output, features):
    """Copy the HDF5 file (if any) to a temp file, add the (key, feature, reason) it lacks, replace it; -> count."""
    import h5py

    exists = os.path.exists(output)
    with atomic_path(output) as tmp:
        if exists:
            shutil.copyfile(output, tmp)
        with h5py.File(tmp, "a" if exists else "w") as h5:
            added = sum(write_feature(h5, *feature) for feature in features)
    return added


def write_feature(h5, key, vector, reason):
    """Store one feature unless its key is there already; returns whether it was written."""
    if key in h5:
        return False
    dataset = h5.create_dataset(key, data=vector)
    if reason:  # a bad image given the default image's features: say so in the file
        dataset.attrs["default_image_for"] = str(reason)
    return True


# ----------------------------------------------------------------------------- the step

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
    start = time.time()
    parts = FeatureParts(output)
    in_file = keys_in_file(output, items)
    saved = parts.keys()
    in_parts = {key for key, _ in items if key in saved and key not in in_file}
    todo = [(key, path) for key, path in items if key not in in_file and key not in in_parts]
    summary = {"listed": len(items), "in_file": len(in_file), "resumed": len(in_parts), "computed": 0, "bad": [],
               "output": output}
    logger.info(f"CLIP features for {len(items):,} images -> {output}: {len(in_file):,} already in the file, "
                f"{len(in_parts):,} saved by an interrupted run, {len(todo):,} to compute")

    if todo:
        encoder = ClipEncoder(clip_model, pick_device(device))
        check_dimension(output, clip_model, encoder.dim)
        parts.check_or_start(clip_model, encoder.dim)
        default_vector = None if default_image is None else default_image_vector(encoder, default_image)
        encode_all(todo, encoder, parts, summary, batch_size, num_workers, min_image_size, default_vector)

    summary["added"] = parts.merge_into(output) if os.path.isdir(parts.folder) else 0
    summary["seconds"] = time.time() - start
    print_clip_summary(summary, default_image)
    return summary


def keys_in_file(output, items):
    import h5py

    if not os.path.exists(output):
        return set()
    with h5py.File(output, "r") as h5:
        return {key for key, _ in items if key in h5}


def check_dimension(output, clip_model, dim):
    import h5py

    if not os.path.exists(output):
        return
    with h5py.File(output, "r") as h5:
        stored = first_vector_length(h5)
    if stored is not None and stored != dim:
        raise DataError(f"{output} holds features of dimension {stored}, but {clip_model} gives "
                        f"{dim}: write to another file with --img_feat")


def default_image_vector(encoder, default_image):
    """The features bad images get: of a black 224x224 image, or of the given image file."""
    from PIL import Image

    if default_image == "black":
        return encoder.encode_image(Image.new("RGB", (224, 224)))
    image, problem = load_image(default_image, 1)
    if image is None:
        raise DataError(f"--default_image {default_image}: {problem[0]} ({problem[1]})")
    return encoder.encode_image(image)


def encode_all(todo, encoder, parts, summary, batch_size, num_workers, min_image_size, default_vector):
    """Encode `todo` in batches, each saved as one part; a Ctrl-C leaves the finished batches for a rerun."""
    import torch
    from tqdm import tqdm

    loader = torch.utils.data.DataLoader(ImageReader(todo, encoder.processor, min_image_size),
                                         batch_size=batch_size, num_workers=num_workers, collate_fn=list)
    bar = tqdm(total=len(todo), desc="CLIP features", unit="img")
    try:
        for batch in loader:
            encode_batch(batch, todo, encoder, parts, summary, default_vector)
            bar.update(len(batch))
    except KeyboardInterrupt:
        bar.close()
        logger.info(f"\nInterrupted: {summary['output']} is unchanged; finished batches are saved in {parts.folder}. "
                    f"Rerun the same command to continue.")
        raise
    bar.close()


def encode_batch(batch, todo, encoder, parts, summary, default_vector):
    """Encode the good images of one batch, record the bad ones, save the batch's features as one part."""
    good = [(i, pixels) for i, pixels, problem in batch if problem is None]
    keys, vectors, reasons = [todo[i][0] for i, _ in good], [], []
    if good:
        vectors = list(encoder(np.stack([pixels for _, pixels in good])))  # (B_good, dim)
        reasons = [""] * len(good)
    for i, _, problem in batch:
        if problem is None:
            continue
        summary["bad"].append((todo[i][0], *problem))
        if default_vector is not None:
            keys.append(todo[i][0])
            vectors.append(default_vector)
            reasons.append(problem[0])
    if keys:
        parts.add(keys, np.stack(vectors), reasons)
    summary["computed"] += len(good)


def print_clip_summary(summary, default_image):
    bad = summary["bad"]
    counts = {reason: sum(1 for _, r, _ in bad if r == reason) for reason in ("unreadable", "truncated", "tiny",
                                                                                "missing")}
    action = f"given the features of --default_image {default_image}" if default_image else \
        "skipped (not written; a rerun tries them again)"
    logger.info(f"Summary: {summary['listed']:,} images listed; {summary['in_file']:,} already in the file; "
                f"{summary['resumed']:,} resumed from an interrupted run; {summary['computed']:,} computed now; "
                f"{len(bad):,} bad ({', '.join(f'{n} {r}' for r, n in counts.items())}) {action}")
    for key, reason, detail in bad[:SHOWN]:
        logger.info(f"  {reason:<10} {key}  ({detail})")
    if bad:
        report = os.path.splitext(summary["output"])[0] + ".bad_images.tsv"
        write_lines(report, ["key\treason\tdetail"] + [f"{k}\t{r}\t{d}" for k, r, d in bad])
        logger.info(f"Wrote {report} (all {len(bad):,} bad images)")
    if summary["added"]:
        logger.info(f"Wrote {summary['output']}: {summary['added']:,} new features, {file_size(summary['output'])}, "
                    f"{summary['seconds']:.1f} s")
    else:
        logger.info(f"{summary['output']}: nothing new to write")

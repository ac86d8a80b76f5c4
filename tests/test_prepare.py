"""prepare.py: every derived file rebuilt from raw inputs (tree, mention embeddings, CLIP features, `all`)."""
import glob
import hashlib
import io
import json
import os
import pickle
import shutil

import h5py
import numpy as np
import pytest
import torch

import prepare
from mel.errors import DataError
from mel.io import atomic as fileio
from mel.io.datasets import load_image_features, load_mention_embeddings, read_split
from mel.retrieval import demonstrations as retrieval
from mel.retrieval.encoder import MentionEncoder
from mel.tree import store as trees
from mel.tree.store import load_prefix_tree, read_entity_names
from mel.tree.trie import PrefixTree, genre_nested_dict, tokenizer_info
from tiny import ENTITIES, TRAIN, write_split

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture
def dataset(tmp_path, tiny_dataset):
    """A private copy of the tiny dataset's raw files (splits, entity list, image features), no derived files."""
    folder = tmp_path / "mini"
    folder.mkdir()
    for name in ("train.json", "dev.json", "test.json", "entities.txt", "clip_vit_large_patch14_1024.hdf5"):
        shutil.copy(os.path.join(tiny_dataset["folder"], name), folder / name)
    return {"data_dir": str(tmp_path), "dataset": "mini", "folder": str(folder)}


@pytest.fixture(scope="module")
def other_tokenizer_dir(tmp_path_factory):
    """A second, unrelated tokenizer (byte-level BPE trained here on a few sentences), saved as a folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(ENTITIES + [text for text, _, _ in TRAIN], trainer)
    folder = tmp_path_factory.mktemp("other-tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(folder)
    return str(folder)


def random_image(rng, size, mode="RGB"):
    from PIL import Image

    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


GOOD = ["a.jpg", "b.png", "sub/c.jpg", "sub/gray.png", "sub/rgba.png"]
BAD = {"corrupt.jpg": "unreadable", "truncated.jpg": "truncated", "tiny.png": "tiny"}


@pytest.fixture
def image_folder(tmp_path):
    """Five good images (RGB, grayscale, RGBA, nested), a corrupt file, a truncated JPEG, a 1x1 image, a .txt."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    random_image(rng, (48, 40)).save(folder / "a.jpg")
    random_image(rng, (40, 64)).save(folder / "b.png")
    random_image(rng, (36, 36)).save(folder / "sub" / "c.jpg")
    random_image(rng, (50, 30), "L").save(folder / "sub" / "gray.png")
    random_image(rng, (40, 40), "RGBA").save(folder / "sub" / "rgba.png")
    (folder / "corrupt.jpg").write_bytes(rng.bytes(600))
    jpeg = io.BytesIO()
    random_image(rng, (64, 64)).save(jpeg, "JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[:len(jpeg.getvalue()) // 2])
    random_image(rng, (1, 1)).save(folder / "tiny.png")
    (folder / "notes.txt").write_text("not an image")
    return str(folder)


def direct_features(clip_dir, paths):
    """Pooled vision output computed without prepare.py, for comparison."""
    from PIL import Image
    from transformers import AutoImageProcessor, CLIPVisionModel

    processor = AutoImageProcessor.from_pretrained(clip_dir, backend="pil")
    model = CLIPVisionModel.from_pretrained(clip_dir).eval()
    images = [Image.open(p).convert("RGB") for p in paths]
    with torch.no_grad():
        return model(**processor(images=images, return_tensors="pt")).pooler_output.numpy()


def stored(path):
    """{key: vector} of every dataset in an HDF5 file."""
    out = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def no_temp_files(folder):
    return not glob.glob(os.path.join(folder, ".*.tmp")) and not glob.glob(os.path.join(folder, "*.parts"))


# ----------------------------------------------------------------------------- trie

def test_trie_from_entity_list_is_found_by_main(dataset, tokenizer_dir, tokenizer, capsys):
    prepare.main(["trie", "--data_dir", dataset["data_dir"], "--dataset", "mini", "--model_name", tokenizer_dir])
    fingerprint = tokenizer_info(tokenizer)["fingerprint"]
    path = os.path.join(dataset["folder"], f"prefix_tree_{fingerprint[:12]}.marisa")
    assert f"Wrote {path}: {len(ENTITIES)} names" in capsys.readouterr().out
    tree = PrefixTree.load(path, tokenizer=tokenizer)
    assert sorted(tree.decode_names(tokenizer)) == sorted(ENTITIES)
    for name in ENTITIES:  # [EOS] + tokens(name) + [EOS], tokenized without special tokens or a leading space
        assert [2, *tokenizer(name, add_special_tokens=False).input_ids, 2] in tree
    # main.py's loader finds this file by fingerprint and builds nothing new
    before = sorted(os.listdir(dataset["folder"]))
    assert len(load_prefix_tree(dataset["folder"], tokenizer, tokenizer_dir)) == len(ENTITIES)
    assert sorted(os.listdir(dataset["folder"])) == before and no_temp_files(dataset["folder"])


def test_trie_from_gemel_pickle_for_another_tokenizer(dataset, tokenizer_dir, tokenizer, other_tokenizer_dir,
                                                      capsys):
    from transformers import AutoTokenizer

    os.remove(os.path.join(dataset["folder"], "entities.txt"))  # GEMEL ships the tree only, not the names
    eos = tokenizer.eos_token_id
    sequences = [[eos, *tokenizer(n, add_special_tokens=False).input_ids, eos] for n in ENTITIES]
    spelled = [eos, *tokenizer.convert_tokens_to_ids(list("Paris")), eos]  # decodes to "Paris", not its tokens
    assert spelled not in sequences
    pickle_file = os.path.join(dataset["folder"], "prefix_tree_opt.pkl")
    with open(pickle_file, "wb") as f:
        pickle.dump(genre_nested_dict(sequences + [spelled, [eos, eos]]), f)

    prepare.main(["trie", "--data_dir", dataset["data_dir"], "--dataset", "mini", "--model_name",
                  other_tokenizer_dir, "--source_model_name", tokenizer_dir])
    out = capsys.readouterr().out
    assert "2 paths do not round-trip" in out and "'Paris': stored" in out
    other = AutoTokenizer.from_pretrained(other_tokenizer_dir)
    tree = PrefixTree.load(trees.default_tree_path(dataset["folder"], other), tokenizer=other)
    assert len(tree) == len(ENTITIES)  # the spelled-out Paris collapses into Paris, the empty name is dropped
    for name in ENTITIES:
        assert [other.eos_token_id, *other(name, add_special_tokens=False).input_ids, other.eos_token_id] in tree
    report = glob.glob(os.path.join(dataset["folder"], "*.not_round_trip.tsv"))
    assert len(report) == 1 and len(open(report[0]).read().splitlines()) == 3
    # the recovered names become the folder's entity list, so trees for further LMs build from names
    names = open(os.path.join(dataset["folder"], "entities.txt"), encoding="utf-8").read().splitlines()
    assert names == sorted(ENTITIES)


def test_trie_from_marisa_tree_needs_the_right_source_tokenizer(dataset, tokenizer_dir, tokenizer,
                                                                other_tokenizer_dir, capsys):
    from transformers import AutoTokenizer

    argv = ["trie", "--data_dir", dataset["data_dir"], "--dataset", "mini"]
    prepare.main(argv + ["--model_name", tokenizer_dir])
    source = trees.default_tree_path(dataset["folder"], tokenizer)
    os.remove(os.path.join(dataset["folder"], "entities.txt"))
    # the header names a local folder, not a registry model: the user must say which tokenizer built it
    with pytest.raises(SystemExit, match="--source_model_name"):
        prepare.main(argv + ["--model_name", other_tokenizer_dir])
    with pytest.raises(SystemExit, match="error: .*prepare.py trie"):
        prepare.main(argv + ["--model_name", other_tokenizer_dir, "--from_tree", source, "--source_model_name",
                             other_tokenizer_dir])
    capsys.readouterr()
    prepare.main(argv + ["--model_name", other_tokenizer_dir, "--source_model_name", tokenizer_dir])
    assert "every name round-trips" in capsys.readouterr().out
    other = AutoTokenizer.from_pretrained(other_tokenizer_dir)
    tree = load_prefix_tree(dataset["folder"], other, other_tokenizer_dir)
    assert sorted(tree.decode_names(other)) == sorted(ENTITIES)


def test_loader_names_the_prepare_command_when_no_tree_fits(dataset, other_tokenizer_dir):
    from transformers import AutoTokenizer

    os.remove(os.path.join(dataset["folder"], "entities.txt"))
    with pytest.raises(DataError, match=r"python prepare.py trie --dataset mini --model_name"):
        load_prefix_tree(dataset["folder"], AutoTokenizer.from_pretrained(other_tokenizer_dir), other_tokenizer_dir)


# ----------------------------------------------------------------------------- embeddings

def test_embeddings_one_row_per_non_nil_training_line(dataset, minilm_dir, capsys):
    import params

    prepare.main(["embeddings", "--data_dir", dataset["data_dir"], "--dataset", "mini", "--simcse_model", minilm_dir,
                  "--embed_batch_size", "4"])
    # written exactly where main.py reads it for this dataset (the paper preset's file name)
    path = params.parse_args(["--data_dir", dataset["data_dir"], "--dataset", "mini"]).ment_embed_file
    assert f"Wrote {path}" in capsys.readouterr().out and no_temp_files(dataset["folder"])
    assert os.stat(path).st_mode & 0o777 == fileio.default_file_mode()  # not the temp file's private 0600
    train = read_split(os.path.join(dataset["folder"], "train.json"))
    emb = load_mention_embeddings(path, len(train), "train.json")
    assert emb.shape == (len(TRAIN), 384) and emb.dtype == np.float32
    expected = MentionEncoder(minilm_dir).encode([m for _, m, _ in TRAIN])  # mean pooling, file order
    np.testing.assert_allclose(emb, expected, atol=1e-5)
    paris = [i for i, ex in enumerate(train) if ex["mention"] == "Paris"]
    assert len(paris) == 3 and all(np.array_equal(emb[paris[0]], emb[i]) for i in paris)  # exact ties


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "emb.pkl"
    path.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with fileio.atomic_write(str(path), "wb") as f:
            f.write(b"half")
            raise RuntimeError("crash while writing")
    assert path.read_bytes() == b"good" and os.listdir(tmp_path) == ["emb.pkl"]


# ----------------------------------------------------------------------------- CLIP features

def run_clip(dataset, source, clip_dir, *extra):
    flag = "--images" if os.path.isdir(source) else "--image_list"
    return prepare.main(["clip", "--data_dir", dataset["data_dir"], "--dataset", dataset["dataset"], flag, source,
                         "--clip_model", clip_dir, "--img_feat", "feat.hdf5", "--clip_batch_size", "2",
                         "--num_workers", "0", *extra])


def test_clip_features_and_bad_images(dataset, image_folder, tiny_clip_dir, capsys):
    run_clip(dataset, image_folder, tiny_clip_dir)
    out = capsys.readouterr().out
    path = os.path.join(dataset["folder"], "feat.hdf5")
    features = stored(path)
    assert sorted(features) == sorted(GOOD)  # nested keys become HDF5 groups; bad images are not written
    direct = direct_features(tiny_clip_dir, [os.path.join(image_folder, k) for k in GOOD])
    np.testing.assert_allclose(np.stack([features[k] for k in GOOD]), direct, atol=1e-5)
    assert load_image_features(path, ["sub/c.jpg"], 32).shape == (1, 32)
    assert "8 images listed" in out and "5 computed now" in out
    assert "3 bad (1 unreadable, 1 truncated, 1 tiny, 0 missing) skipped" in out
    for key, reason in BAD.items():
        assert f"{reason:<10} {key}" in out
    report = open(os.path.join(dataset["folder"], "feat.bad_images.tsv")).read().splitlines()
    assert sorted(line.split("\t")[:2] for line in report[1:]) == sorted([k, r] for k, r in BAD.items())
    assert "Ignored 1 file(s)" in out and no_temp_files(dataset["folder"])
    # the splits' keys (train/0.jpg, ...) are not among these images: the user is told main.py would stop
    assert "image keys of" in out and "have no feature" in out
    # a rerun computes nothing and leaves the file as it is
    before = sha(path)
    run_clip(dataset, image_folder, tiny_clip_dir)
    assert "5 already in the file" in capsys.readouterr().out and sha(path) == before


def test_clip_default_image_and_image_list(dataset, image_folder, tiny_clip_dir, capsys):
    from PIL import Image

    list_file = os.path.join(image_folder, "list.tsv")
    with open(list_file, "w") as f:
        f.write("https://upload.wikimedia.org/x/A.jpg\ta.jpg\n")  # URL keys (WikiDiverse) hold '//' and ':'
        f.write(f"broken\t{os.path.join(image_folder, 'corrupt.jpg')}\n")
        f.write("gone\tno/such/file.jpg\n")
    run_clip(dataset, list_file, tiny_clip_dir, "--default_image", "black")
    out = capsys.readouterr().out
    assert "2 bad (1 unreadable, 0 truncated, 0 tiny, 1 missing) given the features of --default_image black" in out
    path = os.path.join(dataset["folder"], "feat.hdf5")
    feats = load_image_features(path, ["https://upload.wikimedia.org/x/A.jpg", "broken", "gone"], 32)
    np.testing.assert_allclose(feats[0], direct_features(tiny_clip_dir, [os.path.join(image_folder, "a.jpg")])[0],
                               atol=1e-5)
    black = os.path.join(image_folder, "black.png")
    Image.new("RGB", (224, 224)).save(black)
    np.testing.assert_allclose(feats[1:], np.repeat(direct_features(tiny_clip_dir, [black]), 2, 0), atol=1e-5)
    with h5py.File(path, "r") as h5:
        assert h5["broken"].attrs["default_image_for"] == "unreadable"
        assert "default_image_for" not in h5["https://upload.wikimedia.org/x/A.jpg"].attrs


def test_clip_interrupted_run_resumes_without_touching_the_file(dataset, image_folder, tiny_clip_dir, monkeypatch,
                                                                 tmp_path, capsys):
    from transformers import CLIPVisionModel

    # a file holding one feature already: an interrupted run must leave it byte-identical
    list_file = tmp_path / "first.tsv"
    list_file.write_text(f"a.jpg\t{os.path.join(image_folder, 'a.jpg')}\n")
    run_clip(dataset, str(list_file), tiny_clip_dir)
    path = os.path.join(dataset["folder"], "feat.hdf5")
    before = sha(path)

    original = CLIPVisionModel.forward
    seen = []

    def forward(self, pixel_values=None, **kwargs):
        if stop_after is not None and len(seen) == stop_after:
            raise KeyboardInterrupt
        seen.append(pixel_values.shape[0])
        return original(self, pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(CLIPVisionModel, "forward", forward)
    stop_after = 1  # killed during the second batch
    with pytest.raises(KeyboardInterrupt):
        run_clip(dataset, image_folder, tiny_clip_dir)
    assert "Rerun the same command to continue" in capsys.readouterr().out
    assert sha(path) == before and len(glob.glob(path + ".parts/chunk_*.npz")) == 1
    done_first = sum(seen)

    stop_after, seen[:] = None, []
    run_clip(dataset, image_folder, tiny_clip_dir)
    out = capsys.readouterr().out
    assert f"{done_first} saved by an interrupted run" in out
    assert sum(seen) == len(GOOD) - 1 - done_first  # only what was missing is computed
    assert sorted(stored(path)) == sorted(GOOD) and no_temp_files(dataset["folder"])

    monkeypatch.setattr(CLIPVisionModel, "forward", original)
    clean = dict(dataset, dataset="clean")
    os.makedirs(os.path.join(dataset["data_dir"], "clean"))
    run_clip(clean, image_folder, tiny_clip_dir)
    resumed, fresh = stored(path), stored(os.path.join(dataset["data_dir"], "clean", "feat.hdf5"))
    for key in GOOD:
        np.testing.assert_allclose(resumed[key], fresh[key], atol=1e-5)


def test_clip_refuses_to_mix_dimensions(dataset, image_folder, tiny_clip_dir):
    with pytest.raises(SystemExit, match="dimension 1024, but .* gives 32"):
        prepare.main(["clip", "--data_dir", dataset["data_dir"], "--dataset", "mini", "--images", image_folder,
                      "--clip_model", tiny_clip_dir, "--num_workers", "0"])


# ----------------------------------------------------------------------------- all

def test_all_builds_only_what_is_missing(tmp_path, tokenizer_dir, minilm_dir, tiny_clip_dir, capsys):
    from PIL import Image

    from tiny import DEV, TEST

    folder = tmp_path / "fresh"  # raw inputs only: splits, entity list, images
    folder.mkdir()
    for split, rows in (("train", TRAIN), ("dev", DEV), ("test", TEST)):
        write_split(folder / f"{split}.json", rows, split, nil_every=4)
    (folder / "entities.txt").write_text("\n".join(ENTITIES) + "\n")
    images = tmp_path / "images"
    rng = np.random.default_rng(1)
    for split, rows in (("train", TRAIN), ("dev", DEV), ("test", TEST)):
        (images / split).mkdir(parents=True)
        for i in range(len(rows)):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / split / f"{i}.jpg")
    argv = ["all", "--data_dir", str(tmp_path), "--dataset", "fresh", "--model_name", tokenizer_dir,
            "--simcse_model", minilm_dir, "--clip_model", tiny_clip_dir, "--img_feat", "feat.hdf5",
            "--num_workers", "0"]

    assert prepare.main(argv) == 1  # no images given: the other steps run, the missing one is named
    out = capsys.readouterr().out
    assert "Could not build: [clip]" in out and "prepare.py clip --data_dir" in out
    assert prepare.main(argv + ["--images", str(images)]) == 0
    out = capsys.readouterr().out
    assert "[trie]" in out and "nothing to do" in out and "19 computed now" in out
    made = sorted(os.listdir(folder))
    assert len(glob.glob(str(folder / "prefix_tree_*.marisa"))) == 1
    assert "SimCSE_train_mention_embeddings.pkl" in made and "feat.hdf5" in made
    keys = [json.loads(line)["img_url"] for s in ("train", "dev", "test") for line in open(folder / f"{s}.json")
            if json.loads(line)["golden"] != "NIL"]
    assert load_image_features(str(folder / "feat.hdf5"), keys, 32).shape == (19, 32)

    stamps = {name: os.path.getmtime(folder / name) for name in made}
    assert prepare.main(argv) == 0
    assert capsys.readouterr().out.count("nothing to do") == 3
    assert {name: os.path.getmtime(folder / name) for name in sorted(os.listdir(folder))} == stamps


# ----------------------------------------------------------------------------- the bundled demo

def test_demo_tree_rebuilds_to_the_same_tree(tmp_path):
    """The bundled tree is what prepare.py builds from entities.txt now: the same names (token sequences), the same
    tokenizer identity in its header, and the same answers to every decoding query. Not its bytes: the marisa-trie
    section's bytes depend on the marisa-trie version."""
    demo = os.path.join(REPO, "data", "demo")
    bundled = glob.glob(os.path.join(demo, "prefix_tree_*.marisa"))
    if not bundled:
        pytest.skip("data/demo has no prefix tree yet; build it with "
                    "`python prepare.py trie --dataset demo` and this test compares against it")
    rebuilt_path = str(tmp_path / "tree.marisa")
    prepare.main(["trie", "--data_dir", os.path.join(REPO, "data"), "--dataset", "demo", "--model_name",
                  "smollm2-135m", "--output", rebuilt_path])
    tokenizer = trees.load_tokenizer("smollm2-135m")
    expected_path = trees.default_tree_path(demo, tokenizer)
    assert expected_path in bundled  # named by the current tokenizer's fingerprint, so main.py finds it
    regenerate = (f"{expected_path} differs from a rebuild from data/demo/entities.txt with the current code; if "
                  f"entities.txt or the tree's layout changed, regenerate it: `python prepare.py trie --dataset demo`")

    got, want = PrefixTree.read_header(rebuilt_path), PrefixTree.read_header(expected_path)
    for key in ("tokenizer", "eos_token_id", "num_names", "num_nodes", "num_edges", "max_token_id"):
        assert got[key] == want[key], (key, regenerate)
    assert want["tokenizer"] == tokenizer_info(tokenizer)  # the bundled tree loads with the demo's tokenizer
    rebuilt = PrefixTree.load(rebuilt_path, tokenizer=tokenizer)
    expected = PrefixTree.load(expected_path, tokenizer=tokenizer)
    sequences = list(expected.sequences())
    assert list(rebuilt.sequences()) == sequences, regenerate  # the same names, token for token
    names = read_entity_names(os.path.join(demo, "entities.txt"))
    assert len(expected) == len(sequences) == len(set(names))

    # every node's allowed tokens (nodes are numbered in level order from the set of sequences, so the numbering is
    # the same in both), plus off-tree states: the one call decoding masks logits with
    states = np.concatenate([np.arange(expected.num_nodes), [-1, expected.num_nodes, expected.num_nodes + 5]])
    for a, b in zip(rebuilt.allowed_indices(states), expected.allowed_indices(states)):
        np.testing.assert_array_equal(a, b)
    assert expected.start_state() == rebuilt.start_state()
    # GENRE-style lookups from the root along every prefix of a sample of names, and off the tree
    eos = expected.eos_token_id
    prefixes = [seq[:i] for seq in sequences[::7] for i in range(len(seq) + 1)]
    prefixes += [[eos, 0], [eos, eos], [1, 2, 3], sequences[0] + [eos], sequences[-1][:-1] + [49151]]
    for prefix in prefixes:
        assert rebuilt.get(prefix) == expected.get(prefix), prefix
    assert any(len(expected.get(p)) > 1 for p in prefixes)  # the sample does reach branching nodes


def test_demo_embeddings_rebuild_to_the_same_demonstrations(tmp_path):
    """The bundled MiniLM embeddings are what prepare.py computes now, up to float32 noise across CPUs and library
    versions (measured 1.8e-6 apart on another machine), and they retrieve the same demonstrations."""
    import params

    demo = os.path.join(REPO, "data", "demo")
    bundled = os.path.join(demo, params.DATASET_PRESETS["demo"]["ment_embed_file"])
    if not os.path.exists(bundled):
        pytest.skip(f"{bundled} does not exist yet; build it with `python prepare.py embeddings --dataset demo` "
                    f"and this test compares against it")
    rebuilt = retrieval.build_embeddings(os.path.join(demo, "train.json"), "minilm-l6", str(tmp_path / "e.pkl"),
                                         device="cpu")
    with open(bundled, "rb") as f:
        expected = np.asarray(pickle.load(f))
    with open(rebuilt, "rb") as f:
        got = pickle.load(f)
    train = read_split(os.path.join(demo, "train.json"))
    dev = read_split(os.path.join(demo, "dev.json"))
    assert got.shape == expected.shape == (len(train), 384) and got.dtype == expected.dtype == np.float32

    # rows of equal mentions are bit-identical within each file, so their retrieval scores tie exactly and GEMEL's
    # tie-break (the later training line ranks higher) decides, the same way on every machine
    rows = {}
    for i, ex in enumerate(train):
        rows.setdefault(ex["mention"], []).append(i)
    repeated = [r for r in rows.values() if len(r) > 1]
    assert repeated
    for matrix in (got, expected):
        assert all(np.array_equal(matrix[r[0]], matrix[i]) for r in repeated for i in r[1:])

    # float32 across CPUs and library versions: the vectors agree far beyond what retrieval can tell apart
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.9999, cosine.min()

    # the same demonstrations for every dev and training query, 16 of them (the most the project retrieves; the
    # top k < 16 are the last k of these). The demo holds near-ties between different mentions (2.4e-7 apart, e.g.
    # "Washington" and "Lincoln" for the query "Obama"), which float32 noise may order either way: there, and only
    # there, the lists may differ, by candidates of different mentions whose bundled scores are within 2 * score_tol.
    # Rows of one mention tie exactly in both files, so a swap between two of them would be a broken tie-break.
    score_tol = 5e-5
    encoder = MentionEncoder("minilm-l6")
    old = retrieval.DemonstrationRetriever(expected, train)
    new = retrieval.DemonstrationRetriever(got, train)
    for queries, own in ((dev, False), (train, True)):
        vectors = encoder.encode([ex["mention"] for ex in queries])
        old_scores = old.scores(vectors)
        assert np.abs(new.scores(vectors) - old_scores).max() < score_tol
        kwargs = dict(queries=queries, exclude_self=True) if own else {}
        for i, (a, b) in enumerate(zip(new.retrieve(vectors, 16, **kwargs), old.retrieve(vectors, 16, **kwargs))):
            assert len(a) == len(b) == 16
            for x, y in zip(a, b):
                assert x == y or (train[x]["mention"] != train[y]["mention"]
                                  and abs(old_scores[i, x] - old_scores[i, y]) <= 2 * score_tol), (
                    f"query {queries[i]['mention']!r}: rebuilt {a} != bundled {b}")


def test_resnet_features_are_the_mean_of_drins_regions(dataset, image_folder, tmp_path_factory):
    """prepare.py clip with a ResNet (DRIN's microsoft/resnet-152 encoder): the stored feature is the pooler output,
    which is the mean of the 7x7 region states DRIN averages into its mention image vertex."""
    from PIL import Image
    from transformers import ResNetConfig, ResNetModel
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-resnet")
    model = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])).eval()
    model.save_pretrained(folder)
    processor = ConvNextImageProcessorPil(size={"shortest_edge": 64}, crop_pct=0.875)  # as resnet-152
    processor.save_pretrained(folder)
    prepare.main(["clip", "--data_dir", dataset["data_dir"], "--dataset", dataset["dataset"], "--images",
                  image_folder, "--clip_model", str(folder), "--img_feat", "resnet.hdf5", "--num_workers", "0"])
    stored_feature = load_image_features(os.path.join(dataset["folder"], "resnet.hdf5"), ["a.jpg"], 16)[0]
    with Image.open(os.path.join(image_folder, "a.jpg")) as image:
        pixels = processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        regions = model(pixel_values=pixels).last_hidden_state.flatten(2).transpose(1, 2)  # (1, H*W, 16)
    np.testing.assert_allclose(stored_feature, regions.mean(1)[0].numpy(), atol=1e-5)

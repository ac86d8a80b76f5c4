"""Untrusted files never run code, and bad data fails with one line naming the file, the place and the remedy."""
import io
import json
import os
import pickle
import re
import sys
import types

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from mel.errors import DataError
from mel.io.datasets import load_image_features, load_mention_embeddings, read_split
from mel.io.safeload import load_pickle, torch_load
from mel.retrieval.demonstrations import stale_embeddings
from mel.runs.checkpoints import load_projector_checkpoint
from mel.tree.trie import PrefixTree, genre_nested_dict
from tiny import TRAIN, write_split


@pytest.fixture
def folder(tmp_path):
    """A tiny dataset folder: train.json with NIL lines in between, so rows and line numbers differ."""
    folder = tmp_path / "mini"
    folder.mkdir()
    write_split(folder / "train.json", TRAIN, "train", nil_every=3)
    return folder


class RunsCommand:
    """What a malicious pickle does: call os.system while it is read."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class ExecsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


class NotATensor:
    """A pickled object of this test module: a checkpoint never holds one."""


@pytest.fixture(params=[RunsCommand, ExecsCode])
def malicious(request, tmp_path):
    marker = tmp_path / "MARKER"
    yield request.param(marker), marker
    assert not marker.exists(), "the pickle's code ran"


def dump(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


# ----------------------------------------------------------------------------------------------- pickles

def test_malicious_mention_embeddings_are_refused(folder, malicious):
    payload, _ = malicious
    path = dump(folder / "SimCSE_train_mention_embeddings.pkl", payload)
    with pytest.raises(DataError) as error:
        load_mention_embeddings(str(path), len(TRAIN), str(folder / "train.json"))
    message = str(error.value)
    assert str(path) in message and "it may carry code" in message
    assert re.search(r"refers to (posix\.system|builtins\.exec),", message)
    assert "python prepare.py embeddings --dataset mini" in message
    assert stale_embeddings(str(path), str(folder / "train.json")).startswith("cannot be used")  # prepare rebuilds


def test_malicious_gemel_tree_pickle_is_refused(folder, malicious):
    payload, _ = malicious
    path = dump(folder / "prefix_tree_opt.pkl", {2: {10: payload}})
    with pytest.raises(DataError, match="it may carry code") as error:
        PrefixTree.from_gemel_pickle(path)
    assert str(path) in str(error.value) and "python prepare.py trie --dataset mini" in str(error.value)


def test_tensor_pickle_whose_storage_bytes_carry_code_is_refused(tmp_path, malicious):
    payload, _ = malicious
    inner = io.BytesIO()
    torch.save(payload, inner, _use_new_zipfile_serialization=False)

    class FakeTensor:  # pickles as a tensor's storage does: torch.storage._load_from_bytes(torch.save'd bytes)
        def __reduce__(self):
            return torch.storage._load_from_bytes, (inner.getvalue(),)

    path = dump(tmp_path / "emb.pkl", FakeTensor())
    with pytest.raises(DataError, match="it may carry code"):
        load_pickle(path, "mention-embedding file", "python prepare.py embeddings")


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty"])
def test_damaged_embeddings_pickle(folder, damage):
    path = folder / "emb.pkl"
    good = pickle.dumps(np.zeros((len(TRAIN), 4), np.float32), protocol=4)
    path.write_bytes({"truncated": good[:len(good) // 2], "random bytes": np.random.default_rng(0).bytes(500),
                      "empty": b""}[damage])
    with pytest.raises(DataError) as error:
        load_mention_embeddings(str(path), len(TRAIN), str(folder / "train.json"))
    message = str(error.value)
    assert message.startswith(f"{path}: cannot read mention-embedding file")
    assert "truncated or not a pickle" in message and "python prepare.py embeddings" in message
    assert "\n" not in message


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_real_embedding_pickles_still_load(folder, protocol):
    matrix = np.random.default_rng(1).standard_normal((len(TRAIN), 6)).astype(np.float32)
    path = dump(folder / "emb.pkl", matrix, protocol)
    np.testing.assert_array_equal(load_mention_embeddings(str(path), len(TRAIN), "train.json"), matrix)
    tensor = torch.from_numpy(matrix).half()[:, ::2]  # a non-contiguous half-precision view
    path = dump(folder / "emb_tensor.pkl", tensor, protocol)
    loaded = load_mention_embeddings(str(path), len(TRAIN), "train.json")
    assert loaded.dtype == np.float32 and loaded.shape == (len(TRAIN), 3)
    np.testing.assert_array_equal(loaded, tensor.float().numpy())
    assert stale_embeddings(str(path), str(folder / "train.json")) is None


def test_gemel_tree_pickles_still_load(tmp_path):
    sequences = [[2, 10, 11, 2], [2, 10, 2], [2, 12, 2]]
    for protocol in (2, 4, 5):
        path = dump(tmp_path / "prefix_tree_opt.pkl", genre_nested_dict(sequences), protocol)
        assert list(PrefixTree.from_gemel_pickle(path).sequences()) == sorted(sequences)


def test_pickled_genre_trie_object_still_loads(tmp_path, monkeypatch):
    class Trie:  # GENRE's class: the dict lives in trie_dict
        def __init__(self, sequences):
            self.trie_dict, self.len = genre_nested_dict(sequences), len(sequences)

    genre_trie = types.ModuleType("genre.trie")
    genre_trie.Trie, Trie.__module__, Trie.__qualname__ = Trie, "genre.trie", "Trie"
    monkeypatch.setitem(sys.modules, "genre", types.ModuleType("genre"))
    monkeypatch.setitem(sys.modules, "genre.trie", genre_trie)
    path = dump(tmp_path / "prefix_tree_opt.pkl", Trie([[2, 5, 2], [2, 6, 7, 2]]))
    monkeypatch.undo()  # reading it must not need GENRE
    assert list(PrefixTree.from_gemel_pickle(path).sequences()) == [[2, 5, 2], [2, 6, 7, 2]]


def test_embeddings_of_wrong_kind(folder):
    path = dump(folder / "emb.pkl", {"not": "a matrix"})
    with pytest.raises(DataError, match=r"holds a dict, not a float matrix.*prepare.py embeddings"):
        load_mention_embeddings(str(path), len(TRAIN), "train.json")


def test_nan_row_in_mention_embeddings_names_row_and_line(folder):
    train_file = str(folder / "train.json")
    matrix = np.ones((len(TRAIN), 4), np.float32)
    matrix[4, 1] = np.nan
    matrix[7, 0] = np.inf
    path = dump(folder / "emb.pkl", matrix)
    line = read_split(train_file)[4]["line"]
    assert line != 5  # NIL lines sit in between: row 4 is not line 5
    with pytest.raises(DataError) as error:
        load_mention_embeddings(str(path), len(TRAIN), train_file)
    message = str(error.value)
    assert message.startswith(f"{path}: row 4 (the mention of {train_file}, line {line}) holds NaN or inf")
    assert "2 such row(s)" in message and "python prepare.py embeddings --dataset mini" in message


# ----------------------------------------------------------------------------------------------- checkpoints

def projector():
    return nn.Linear(4, 6)


def assert_clear(error, path):
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    return message


def test_checkpoint_loads(tmp_path):
    path = tmp_path / "ok.pkl"
    torch.save(nn.Linear(4, 6, dtype=torch.float16).state_dict(), path)
    model = projector()
    load_projector_checkpoint(model, path)
    assert model.weight.dtype == torch.float32


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_damaged_checkpoint(tmp_path, damage):
    path = tmp_path / "ckpt.pkl"
    torch.save(nn.Linear(4, 6).state_dict(), path)
    good = path.read_bytes()
    path.write_bytes(good[:len(good) // 2] if damage == "truncated" else np.random.default_rng(2).bytes(2000))
    with pytest.raises(DataError) as error:
        load_projector_checkpoint(projector(), path)
    message = assert_clear(error, path)
    assert "cannot read checkpoint" in message and "python main.py" in message


def test_missing_checkpoint(tmp_path):
    path = tmp_path / "gone.pkl"
    with pytest.raises(DataError) as error:
        load_projector_checkpoint(projector(), path)
    assert "checkpoint not found" in assert_clear(error, path)


def test_checkpoint_carrying_code_is_refused(tmp_path, malicious):
    path = tmp_path / "ckpt.pkl"
    torch.save({"weight": malicious[0], "bias": torch.zeros(6)}, path)
    with pytest.raises(DataError) as error:
        load_projector_checkpoint(projector(), path)
    message = assert_clear(error, path)
    assert "this checkpoint refers to" in message and "it may carry code" in message and "python main.py" in message
    assert re.search(r"refers to (posix\.system|(builtins\.)?exec),", message)  # torch drops "builtins."


@pytest.mark.parametrize("value, name", [(NotATensor(), "test_bad_input.NotATensor"),
                                         (np.zeros(3), "numpy._core.multiarray._reconstruct")])
def test_checkpoint_holding_other_objects_is_refused(tmp_path, value, name):
    path = tmp_path / "ckpt.pkl"
    torch.save({"weight": value, "bias": torch.zeros(6)}, path)
    with pytest.raises(DataError) as error:
        load_projector_checkpoint(projector(), path)
    assert f"this checkpoint refers to {name}," in assert_clear(error, path)


def test_checkpoint_of_plain_values_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pkl"
    torch.save({"weight": [1.0, 2.0], "bias": torch.zeros(6)}, path)  # weights-only admits it; it is no projector
    with pytest.raises(DataError, match="not all tensors") as error:
        load_projector_checkpoint(projector(), path)
    assert_clear(error, path)


def test_torch_load_keeps_its_signature_for_the_training_state(tmp_path):
    path = tmp_path / "run.train_state.pt"
    torch.save({"weights": {"weight": torch.ones(2)}, "progress": {"step": 3}}, path)
    assert torch_load(path, "training state")["progress"] == {"step": 3}
    path.write_bytes(b"not a torch.save file")
    with pytest.raises(DataError, match="cannot read training state"):
        torch_load(path, "training state")


# ----------------------------------------------------------------------------------------------- image features

def features(tmp_path, **stored):
    path = tmp_path / "clip.hdf5"
    with h5py.File(path, "w") as h5:
        for key, value in stored.items():
            h5[key] = value
    return str(path)


def test_image_feature_must_be_one_vector(tmp_path):
    path = features(tmp_path, two=np.ones((2, 512), np.float32), row=np.ones((1, 1024), np.float32),
                    flat=np.ones(1024, np.float16))
    with pytest.raises(DataError) as error:
        load_image_features(path, ["flat", "two"], 1024)
    message = str(error.value)
    assert message.startswith(f"{path}: feature of 'two' has shape (2, 512)") and "--dim_clip 1024" in message
    assert load_image_features(path, ["row", "flat"], 1024).shape == (2, 1024)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_image_feature_names_the_key(tmp_path, bad):
    vectors = {f"k{i}": np.ones(8, np.float32) for i in range(9)}
    for key in ("k2", "k3", "k4", "k5", "k6", "k7"):
        vectors[key][3] = bad
    path = features(tmp_path, **vectors)
    with pytest.raises(DataError) as error:
        load_image_features(path, list(vectors), 8)
    message = str(error.value)
    assert message.startswith(f"{path}: feature of image key 'k2' holds NaN or inf (6 such key(s)")
    assert "'k6', ..." in message and "'k7'" not in message and "python prepare.py clip" in message
    assert load_image_features(path, ["k0", "k8"], 8).shape == (2, 8)


# ----------------------------------------------------------------------------------------------- splits

@pytest.mark.parametrize("field, value", [("mention", 7), ("text", None), ("target", ["A"]), ("img_url", 3)])
def test_split_field_must_be_a_string(tmp_path, field, value):
    path = tmp_path / "dev.json"
    write_split(path, TRAIN[:3], "dev")
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1])
    bad[field] = value
    lines[1] = json.dumps(bad)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as error:
        read_split(str(path))
    assert str(error.value).startswith(f"{path}, line 2: field {field!r} is {json.dumps(value)}, not a string")


# ----------------------------------------------------------------------------------------------- writing outputs

def test_a_full_disk_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    import errno

    from mel.io import atomic as fileio

    target = tmp_path / "predictions.jsonl"
    target.write_text("old\n")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", full)
    with pytest.raises(DataError, match="disk is full") as raised:
        fileio.write_jsonl(str(target), [{"a": 1}])
    assert str(target) in str(raised.value) and "unchanged" in str(raised.value)
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["predictions.jsonl"]


def test_written_files_get_the_umask_mode(tmp_path):
    from mel.io import atomic as fileio

    old = os.umask(0o022)
    try:
        fileio.write_jsonl(str(tmp_path / "p.jsonl"), [{"a": 1}])
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "p.jsonl").st_mode & 0o777 == 0o644  # mkstemp alone would give 0600


def test_nan_never_reaches_a_predictions_file(tmp_path):
    from mel.io import atomic as fileio

    with pytest.raises(ValueError):
        fileio.write_jsonl(str(tmp_path / "p.jsonl"), [{"score": float("nan")}])
    assert not os.listdir(tmp_path)


def test_an_unwritable_output_is_named_before_any_work(tmp_path):
    from mel.io import atomic as fileio

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(DataError, match="--predictions_file") as raised:
        fileio.check_writable(str(blocker / "out.jsonl"), "--predictions_file")
    assert str(blocker) in str(raised.value)

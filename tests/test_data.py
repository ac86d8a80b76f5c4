"""Reading GEMEL's files: NIL filtering and clear errors."""
import json
import pickle

import h5py
import numpy as np
import pytest

from mel.errors import DataError
from mel.io.datasets import image_key, load_image_features, load_mention_embeddings, read_split


def test_nil_lines_are_dropped_first(tiny_dataset):
    examples = read_split(f"{tiny_dataset['folder']}/train.json")
    raw = [json.loads(line) for line in open(f"{tiny_dataset['folder']}/train.json", encoding="utf-8")]
    assert len(raw) > len(examples) == 12
    assert all(ex["golden"] != "NIL" for ex in examples)
    # file order is kept and every example remembers its line
    assert [ex["text"] for ex in examples] == [r["text"] for r in raw if r["golden"] != "NIL"]
    assert [ex["line"] for ex in examples][:3] == [1, 3, 4]


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text('{"text": "a", "mention": "a", "target": "A", "golden": "A", "img_url": "k"}\n{oops\n')
    with pytest.raises(DataError, match=r"dev.json, line 2: not valid JSON"):
        read_split(str(path))


def test_missing_field_and_missing_file(tmp_path):
    path = tmp_path / "test.json"
    path.write_text('{"text": "a", "mention": "a", "golden": "A", "img_url": "k"}\n')
    with pytest.raises(DataError, match=r"line 1: missing field\(s\) target"):
        read_split(str(path))
    with pytest.raises(DataError, match="train.json: file not found"):
        read_split(str(tmp_path / "train.json"))


def test_image_keys_and_missing_key(tmp_path):
    path = tmp_path / "f.hdf5"
    with h5py.File(path, "w") as h5:
        h5["wikinews/a.jpg"] = np.arange(4, dtype=np.float32)
        h5["b.png"] = np.ones(4, dtype=np.float16)
    feats = load_image_features(str(path), ["b.png", "wikinews/a.jpg"], 4)
    assert feats.dtype == np.float32 and feats.tolist() == [[1, 1, 1, 1], [0, 1, 2, 3]]
    with pytest.raises(DataError, match=r"no feature for image key 'c.jpg'.*prepare.py clip"):
        load_image_features(str(path), ["c.jpg"], 4)
    with pytest.raises(DataError, match="dimension 4, expected --dim_clip 8"):
        load_image_features(str(path), ["b.png"], 8)
    assert image_key({"img_name": "x.jpg"}) == "x.jpg" and image_key({"img_url": "u"}) == "u"


def test_embedding_rows_must_match_nil_filtered_train(tmp_path):
    path = tmp_path / "emb.pkl"
    with open(path, "wb") as f:
        pickle.dump(np.zeros((5, 3), dtype=np.float32), f)
    assert load_mention_embeddings(str(path), 5, "train.json").shape == (5, 3)
    with pytest.raises(DataError, match=r"shape \(5, 3\).*6 non-NIL examples.*prepare.py embeddings"):
        load_mention_embeddings(str(path), 6, "train.json")

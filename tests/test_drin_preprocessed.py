"""--preprocess_dir: DRIN's preprocessed release read as downloaded (synthetic files with the exact names, shapes and
dtypes of both layouts, tests/released.py), every model input checked against the files by hand."""
import json
import os

import numpy as np
import pytest

import infe
import main
from mel.drin.preprocessed import ReleasedSplit, load_wikimel_entities
from mel.errors import DataError
from released import write_wikidiverse, write_wikimel


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    return str(root), write_wikidiverse(str(root)), write_wikimel(str(root))


def test_the_layouts_have_the_released_file_counts(release):
    _, wikidiverse, wikimel = release
    assert len([f for f in os.listdir(wikidiverse) if f.endswith(".npy")]) == 54
    assert len(os.listdir(wikimel)) == 45 and "qid2idx.json" in os.listdir(wikimel)


def test_a_wikidiverse_batch_is_computed_from_the_files(release):
    _, folder, _ = release
    split = ReleasedSplit(folder, "wikidiverse", "dev", gold_slot=True, training=False)
    answer = np.load(os.path.join(folder, "answer_valid.npy"))
    assert split.scored == 10 and split.slots.shape == (6, 11)
    assert split.gold.tolist() == [a if a < 10 else -1 for a in answer]  # answer 10: the gold is not listed
    batch = split.batch([4, 1])
    text = np.load(os.path.join(folder, "mention-text-feature_valid.npy"))
    start, end = (np.load(os.path.join(folder, f"{k}-pos_valid.npy")) for k in ("start", "end"))
    for row, i in enumerate([4, 1]):  # the span's token states, shifted by one for [CLS]
        np.testing.assert_allclose(batch.mention_text[row].numpy(), text[i, start[i] + 1:end[i] + 1].mean(0),
                                   rtol=1e-5, atol=1e-6)
    entity = np.load(os.path.join(folder, "entity-attr-feature_valid.npy"))
    np.testing.assert_allclose(batch.entity_text[0, 3].numpy(), entity[4 * 11 + 3])
    np.testing.assert_allclose(batch.entity_text_edge[0, 3].numpy(), entity[4 * 11 + 3])  # the pooler, both uses
    eimt, miet = (np.load(os.path.join(folder, f"similarity-{k}_valid.npy")) for k in ("eimt", "miet"))
    np.testing.assert_allclose(batch.edge_ti[1].numpy(), eimt[1] / 100, rtol=1e-6)
    np.testing.assert_allclose(batch.edge_it[1].numpy(), miet[1] / 100, rtol=1e-6)
    assert batch.mention_image.shape == (2, 49, 2048) and batch.mention_objects.shape == (2, 3, 2048)
    assert batch.entity_objects.shape == (2, 11, 1, 2048) and batch.entity_image.shape == (2, 11, 2048)


def test_leak_free_drops_the_gold_slot_but_trains_on_it(release):
    _, folder, _ = release
    answer = np.load(os.path.join(folder, "answer_train.npy"))
    missed = int(np.flatnonzero(answer == 10)[0])
    evaluation = ReleasedSplit(folder, "wikidiverse", "train", gold_slot=False, training=False)
    training = ReleasedSplit(folder, "wikidiverse", "train", gold_slot=False, training=True)
    assert evaluation.slots.shape == (12, 10) and evaluation.gold[missed] == -1
    assert training.slots[missed, -1] == missed * 11 + 10 and training.gold[missed] == 9  # the gold as positive
    eimt = np.load(os.path.join(folder, "similarity-eimt_train.npy"))
    assert training.batch([missed]).edge_ti[0, -1].item() == pytest.approx(eimt[missed, 10] / 100)


def test_a_wikimel_batch_looks_entities_up_through_qid2idx(release):
    _, _, folder = release
    entities = load_wikimel_entities(folder)
    split = ReleasedSplit(folder, "wikimel", "test", gold_slot=True, training=False, entities=entities)
    qids = np.load(os.path.join(folder, "entity-name-raw_test.npy")).reshape(6, 101)
    row = json.load(open(os.path.join(folder, "qid2idx.json")))[qids[2, 7]]
    assert split.slots[2, 7] == row and split.entity_name(row) == qids[2, 7]
    tokens = np.load(os.path.join(folder, "entity-attr-feature.npy"))[row]
    n = int(np.load(os.path.join(folder, "entity-attr-mask.npy"))[row].sum())
    batch = split.batch([2])
    np.testing.assert_allclose(batch.entity_text[0, 7].numpy(), tokens[1:n - 1].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch.entity_text_edge[0, 7].numpy(), tokens[0])  # [CLS] for the tt edge


@pytest.mark.parametrize("dataset", ["wikidiverse", "wikimel"])
def test_train_and_evaluate_on_the_release(release, tmp_path, dataset):
    root = release[0]
    flags = ["--method", "drin", "--preprocess_dir", root, "--dataset", dataset, "--ckpt_dir", str(tmp_path / "c"),
             "--log_dir", str(tmp_path / "l"), "--hidden", "16", "--train_epoch", "2", "--batch_size", "4"]
    test = main.main(flags)
    assert test["examples"] == 6 and test["candidates"] == (100 if dataset == "wikimel" else 10)
    again = infe.main(flags)
    assert again["hits@1"] == pytest.approx(test["hits@1"]) and again["mrr"] == pytest.approx(test["mrr"], abs=1e-6)
    original = main.main(flags + ["--protocol", "original", "--ckpt_dir", str(tmp_path / "o")])
    assert original["protocol"] == "original"


def test_a_damaged_release_is_named(release, tmp_path, capsys):
    folder = write_wikidiverse(str(tmp_path))
    np.save(os.path.join(folder, "similarity-miet_valid.npy"), np.zeros((6, 12), np.float32))
    with pytest.raises(DataError, match=r"similarity-miet_valid\.npy: has shape 6 x 12, expected 6 x 11 \(N x C\)"):
        ReleasedSplit(folder, "wikidiverse", "dev", True, False)
    np.save(os.path.join(folder, "answer_test.npy"), np.zeros(6, np.float32))
    with pytest.raises(DataError, match=r"answer_test\.npy: holds float32 values, expected integers"):
        ReleasedSplit(folder, "wikidiverse", "test", True, False)
    np.save(os.path.join(folder, "answer_test.npy"), np.full(6, 11, np.int64))
    with pytest.raises(DataError, match=r"answer_test\.npy: holds 11\.\.11, expected 0\.\.10"):
        ReleasedSplit(folder, "wikidiverse", "test", True, False)
    np.save(os.path.join(folder, "answer_test.npy"), np.zeros(6, np.int64))
    os.remove(os.path.join(folder, "entity-object-score_train.npy"))
    with pytest.raises(SystemExit, match=r"entity-object-score_train\.npy: not found"):
        main.main(["--method", "drin", "--preprocess_dir", str(tmp_path), "--dataset", "wikidiverse", "--ckpt_dir",
                   str(tmp_path / "c"), "--log_dir", str(tmp_path / "l")])
    np.save(os.path.join(folder, "mention-text-raw_test.npy"), np.array([{"x": 1}] * 6, dtype=object))
    assert ReleasedSplit(folder, "wikidiverse", "test", True, False).examples[0]["mention"] == ""  # names: optional
    with pytest.raises(SystemExit):
        main.main(["--method", "drin", "--preprocess_dir", str(tmp_path), "--dataset", "demo"])
    assert "give --dataset one of them" in capsys.readouterr().err

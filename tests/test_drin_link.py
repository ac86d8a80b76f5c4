"""link.py --method drin|ghmfc|melhi: a trained ranker scores the candidates of new mentions, whose features are
computed now with the encoders its config records."""
import json
import os

import pytest

import link
import main
from mel.drin.features import mention_span
from mel.drin.linking import read_image_places
from mel.errors import DataError
from mel.io.datasets import read_split

METHODS = ("drin", "ghmfc", "melhi")


def ranker_flags(data, out, method):
    extra = ["--hidden", "16"] if method == "drin" else []
    return ["--method", method, "--data_dir", data["data_dir"], "--dataset", "tiny", "--ckpt_dir", str(out / "ckpt"),
            "--log_dir", str(out / "log"), "--train_epoch", "2", "--batch_size", "4", *extra]


@pytest.fixture(scope="module")
def trained(drin_dataset, tiny_dataset, tmp_path_factory):
    """A checkpoint of each ranker on the tiny dataset, with the test split's lines as link.py input."""
    out = tmp_path_factory.mktemp("ranker-link")
    for method in METHODS:
        main.main(ranker_flags(drin_dataset, out, method))
    folder = drin_dataset["folder"]
    lists = {row["line"]: row["candidates"] for row in map(json.loads, open(os.path.join(folder,
                                                                                         "candidates.test.jsonl")))}
    rows = []
    for ex in read_split(os.path.join(folder, "test.json")):
        span = list(mention_span(ex["text"], ex["mention"]))
        rows.append({"id": ex["line"], "text": ex["text"], "mention_span": span, "image_key": ex["img_url"],
                     "candidates": lists[ex["line"]]})
    return {"out": out, "data": drin_dataset, "rows": rows, "text_encoder": tiny_dataset["simcse_model"]}


def write_input(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


def link_flags(trained, method, *extra):
    return [*ranker_flags(trained["data"], trained["out"], method), *extra]


@pytest.mark.parametrize("method", METHODS)
def test_new_text_gets_the_scores_evaluation_gives_the_same_mentions(trained, tmp_path, method):
    source = write_input(tmp_path / "mentions.jsonl", trained["rows"])
    linked = link.main(link_flags(trained, method, "--input", source))
    prefix = f"{method}_tiny_tt-ti-it-ii_dynamic" if method == "drin" else f"{method}_tiny"
    evaluated = [json.loads(line) for line in open(trained["out"] / "ckpt" / f"{prefix}.test.predictions.jsonl")]
    assert [row["id"] for row in linked] == [row["line"] for row in evaluated]
    for row, expected in zip(linked, evaluated):
        assert [e["name"] for e in row["entities"]] == [c["name"] for c in expected["candidates"]]
        assert [e["score"] for e in row["entities"]] == pytest.approx([c["score"] for c in expected["candidates"]],
                                                                        abs=1e-4)
        assert row["mention"] == expected["mention"]
    written = [json.loads(line) for line in open(tmp_path / "mentions.linked.jsonl")]
    assert written == linked


def test_one_mention_from_the_command_line_with_its_top_candidates(trained, capsys):
    row = trained["rows"][0]
    linked = link.main(link_flags(trained, "drin", "--text", row["text"], "--mention_span", *map(str,
                                  row["mention_span"]), "--candidates", *row["candidates"], "--top_k", "2"))
    assert len(linked[0]["entities"]) == 2 and linked[0]["entities"][0]["name"] in row["candidates"]
    assert linked[0]["entities"][0]["score"] >= linked[0]["entities"][1]["score"]
    assert json.loads(capsys.readouterr().out.strip()) == linked[0]


def test_the_checkpoint_records_its_feature_encoders(trained):
    config = json.load(open(trained["out"] / "ckpt" / "ghmfc_tiny.json"))
    assert config["features"]["text_encoder"] == trained["text_encoder"]
    assert config["features"]["image_text"] == "captions" and config["features"]["img_feat"].endswith(".hdf5")


@pytest.mark.parametrize("change, expected", [
    (lambda row: row.pop("candidates"), r"line 1: --method drin ranks each mention's candidates: give `candidates`"),
    (lambda row: row.update(candidates=["Nowhere"]), r"line 1: candidate 'Nowhere' is not an entity of .*entities"),
    (lambda row: (row.pop("image_key"), row.update(image="photo.jpg")), r"line 1: .*give the `image_key` of a "
                                                                        r"captioned image"),
    (lambda row: row.update(image_key="unknown.jpg"), r"line 1: `image_key` 'unknown.jpg' has no caption"),
])
def test_bad_lines_are_named_before_any_encoder_loads(trained, tmp_path, change, expected):
    row = dict(trained["rows"][0])
    change(row)
    source = write_input(tmp_path / "bad.jsonl", [row])
    with pytest.raises(SystemExit, match=expected):
        link.main(link_flags(trained, "drin", "--input", source))
    assert not (tmp_path / "bad.linked.jsonl").exists()


def test_a_checkpoint_without_its_feature_record_is_refused(trained, tmp_path):
    import shutil

    ckpt = tmp_path / "melhi.pt"
    shutil.copy(trained["out"] / "ckpt" / "melhi_tiny.pt", ckpt)
    config = json.load(open(trained["out"] / "ckpt" / "melhi_tiny.json"))
    del config["features"]
    (tmp_path / "melhi.json").write_text(json.dumps(config))
    source = write_input(tmp_path / "in.jsonl", trained["rows"])
    with pytest.raises(SystemExit, match=r"melhi\.json: records no `features`"):
        link.main(link_flags(trained, "melhi", "--input", source, "--best_ckpt", str(ckpt)))


def test_features_from_another_encoder_are_refused(trained, tmp_path):
    import shutil

    ckpt = tmp_path / "drin.pt"
    shutil.copy(trained["out"] / "ckpt" / "drin_tiny_tt-ti-it-ii_dynamic.pt", ckpt)
    config = json.load(open(trained["out"] / "ckpt" / "drin_tiny_tt-ti-it-ii_dynamic.json"))
    config["features"]["text_encoder"] = "bert-base-uncased"
    (tmp_path / "drin.json").write_text(json.dumps(config))
    source = write_input(tmp_path / "in.jsonl", trained["rows"])
    with pytest.raises(SystemExit, match=r"drin\.entities\.h5: built with text_encoder .*'bert-base-uncased'"):
        link.main(link_flags(trained, "drin", "--input", source, "--best_ckpt", str(ckpt)))


def test_a_clip_space_needs_the_picture_itself():
    encoders = {"image_text": "clip", "clip_model": "openai/clip-vit-base-patch32"}
    assert read_image_places([{"image": "a.jpg"}, {}], ["a", "b"], encoders, ".") is None
    with pytest.raises(DataError, match=r"^b: .*CLIP .*add the `image` file"):
        read_image_places([{"image": "a.jpg"}, {"image_key": "k"}], ["a", "b"], encoders, ".")


def test_the_preprocessed_release_cannot_link_new_text(trained, tmp_path):
    (tmp_path / "wikidiverse").mkdir()
    with pytest.raises(SystemExit, match="DRIN's preprocessed release"):
        link.main(["--method", "drin", "--preprocess_dir", str(tmp_path), "--dataset", "wikidiverse", "--text",
                   "Jordan scored.", "--mention", "Jordan", "--candidates", "Michael Jordan"])

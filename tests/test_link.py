"""link.py: ranked entities for unlabeled text, from the command line or a JSON-lines file."""
import json

import pytest

import infe
import link
import main as train_script
from tiny import tiny_run_flags


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset, tiny_opt_dir):
    out = tmp_path_factory.mktemp("link")
    common = tiny_run_flags(tiny_dataset, tiny_opt_dir, out, "--num_beams", "3")
    train_script.main(common + ["--train_epoch", "0", "--no-do_test"])
    return out, common, tiny_dataset


def test_links_the_dev_split_as_infe_evaluates_it(trained, tmp_path):
    """The same mentions, texts and image features give the same ranked names and scores as evaluation."""
    out, common, data = trained
    predictions = tmp_path / "dev.jsonl"
    infe.main(common + ["--split", "dev", "--predictions_file", str(predictions)])
    evaluated = [json.loads(line) for line in open(predictions)]
    dev = [json.loads(line) for line in open(f"{data['folder']}/dev.json")]
    dev = [row for row in dev if row["golden"] != "NIL"]
    source = tmp_path / "mentions.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": row["text"], "mention": row["mention"],
                                          "image_key": row["img_url"]}) + "\n" for i, row in enumerate(dev)))
    linked = link.main(common + ["--input", str(source)])
    assert [row["id"] for row in linked] == list(range(len(dev)))  # input order, extra fields kept
    written = [json.loads(line) for line in open(tmp_path / "mentions.linked.jsonl")]
    assert written == linked
    for got, want in zip(linked, evaluated):
        assert [e["name"] for e in got["entities"]] == [r["name"] for r in want["ranked"]]
        assert [e["score"] for e in got["entities"]] == pytest.approx([r["score"] for r in want["ranked"]],
                                                                      abs=1e-5)
    message = pytest.raises(SystemExit, link.main, common + ["--input", str(source)]).value
    assert "mentions.linked.jsonl" in str(message) and "--overwrite" in str(message)


def test_one_mention_from_the_command_line(trained, capsys):
    out, common, data = trained
    names = set(open(f"{data['folder']}/entities.txt", encoding="utf-8").read().split("\n"))
    text = "Jordan scored 40 points against the Knicks."
    by_string = link.main(common + ["--text", text, "--mention", "Jordan", "--top_k", "2"])
    by_span = link.main(common + ["--text", text, "--mention_span", "0", "6", "--top_k", "2"])
    assert by_string[0]["entities"] == by_span[0]["entities"] and len(by_span[0]["entities"]) == 2
    assert all(e["name"] in names for e in by_span[0]["entities"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert printed[-1]["mention"] == "Jordan" and printed[-1]["entities"] == by_span[0]["entities"]


def test_candidates_on_every_line_constrain_the_answer(trained, tmp_path):
    out, common, data = trained
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": "Mercury orbits the Sun.", "mention": "Mercury",
                                  "candidates": ["Freddie Mercury", "Queen (band)"]}) + "\n")
    linked = link.main(common + ["--input", str(source)])
    assert {e["name"] for e in linked[0]["entities"]} <= {"Freddie Mercury", "Queen (band)"}


@pytest.mark.parametrize("line, expected", [
    ({"text": "Paris is nice.", "mention": "Rome"}, "does not occur in the text"),
    ({"text": "Paris is nice.", "mention_span": [3, 99]}, "mention_span"),
    ({"mention": "Paris"}, "`text`"),
    ({"text": "Paris is nice.", "mention": "Paris", "candidates": []}, "`candidates`"),
])
def test_bad_lines_are_named(trained, tmp_path, line, expected):
    out, common, data = trained
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps({"text": "Jordan won.", "mention": "Jordan"}) + "\n" + json.dumps(line) + "\n")
    message = str(pytest.raises(SystemExit, link.main, common + ["--input", str(source)]).value)
    assert "bad.jsonl, line 2" in message and expected in message


def test_an_image_file_gets_the_feature_prepare_clip_stores(tmp_path, tiny_clip_dir):
    """link.py's on-the-fly CLIP feature of an image equals the one `prepare.py clip` writes for it."""
    import h5py
    import numpy as np
    from PIL import Image

    from mel.images.clip import extract_clip_features

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    extract_clip_features([("photo.jpg", str(tmp_path / "photo.jpg"))], str(tmp_path / "f.hdf5"), tiny_clip_dir)
    with h5py.File(tmp_path / "f.hdf5", "r") as h5:
        stored = h5["photo.jpg"][()]
    args = link.params.parse_args(["--data_dir", str(tmp_path.parent), "--dataset", tmp_path.name,
                                   "--clip_model", tiny_clip_dir, "--dim_clip", str(stored.shape[-1])], script="link")
    rows = [{"text": "t", "mention": "t", "image": "photo.jpg"}, {"text": "t", "mention": "t"}]
    features = link.image_features(rows, args.img_feat, args.dim_clip, args, str(tmp_path))
    np.testing.assert_allclose(features[0], stored.reshape(-1), rtol=0, atol=1e-5)
    assert not features[1].any()  # no image: the all-zero feature


def test_a_text_too_long_for_the_lm_is_named(trained, tmp_path):
    out, common, data = trained
    source = tmp_path / "long.jsonl"
    source.write_text(json.dumps({"text": "Jordan " * 1200 + "won.", "mention": "Jordan"}) + "\n")
    message = str(pytest.raises(SystemExit, link.main, common + ["--input", str(source)]).value)
    assert f"{source}, line 1" in message and "positions" in message and "shorten the text" in message


def test_user_fields_are_copied_whatever_their_names(trained, tmp_path):
    out, common, data = trained
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": "Jordan won.", "mention": "Jordan", "_line": "mine", "line": 7}) + "\n")
    linked = link.main(common + ["--input", str(source)])
    assert linked[0]["_line"] == "mine" and linked[0]["line"] == 7


def test_output_equal_to_input_is_refused_even_with_overwrite(trained, tmp_path):
    out, common, data = trained
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": "Jordan won.", "mention": "Jordan"}) + "\n")
    before = source.read_text()
    message = str(pytest.raises(SystemExit, link.main,
                                common + ["--input", str(source), "--output", str(source), "--overwrite"]).value)
    assert "is the --input file" in message and source.read_text() == before


def test_a_bad_image_key_names_its_line(trained, tmp_path):
    out, common, data = trained
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": "Jordan won.", "mention": "Jordan", "image_key": "dev/0.jpg"}) + "\n"
                      + json.dumps({"text": "Jordan won.", "mention": "Jordan", "image_key": "no/such.jpg"}) + "\n")
    message = str(pytest.raises(SystemExit, link.main, common + ["--input", str(source)]).value)
    assert f"{source}, line 2: `image_key` 'no/such.jpg'" in message and "no feature for image key" in message


def test_a_candidate_outside_the_knowledge_base_is_refused(trained, tmp_path):
    out, common, data = trained
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": "Mercury orbits the Sun.", "mention": "Mercury",
                                  "candidates": ["Mercury (planet)", "Mercury Marine"]}) + "\n")
    message = str(pytest.raises(SystemExit, link.main, common + ["--input", str(source)]).value)
    assert f"{source}, line 1: candidate 'Mercury Marine' is not an entity of the knowledge base" in message


def test_an_image_whose_encoder_cannot_load_names_the_line_and_the_flag(trained, tmp_path):
    out, common, data = trained
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": "Jordan won.", "mention": "Jordan", "image": "photo.jpg"}) + "\n")
    message = str(pytest.raises(SystemExit, link.main,
                                common + ["--input", str(source), "--clip_model", "no/such/clip/model"]).value)
    assert f"{source}, line 1: `image` needs --clip_model" in message and "'no/such/clip/model'" in message
    assert "\n" not in message

"""mel/drin/released.py (`prepare.py drin_release`): DRIN's raw WikiDiverse / WikiMEL layouts, built tiny in
tmp_path, converted line by line."""
import hashlib
import json
import os
import re

import pytest

from mel.drin.features import read_entities
from mel.drin.released import convert_wikidiverse, convert_wikimel, wikidiverse_image_key, wikipedia_title
from mel.errors import DataError
from mel.images.clip import read_image_list
from mel.io.datasets import read_split
from mel.retrieval.candidates import read_candidates

WIKI = "https://en.wikipedia.org/wiki/"
UPLOAD = "https://upload.wikimedia.org/wikipedia/commons/a/ab/"
PAD = "__nil__"


def md5_name(file_name, ext):
    return hashlib.md5(file_name.encode()).hexdigest() + ext


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"not really an image")


# ----------------------------------------------------------------------------- WikiDiverse

def wd_record(text, image_url, gold_url, cand_urls, start, end):
    """A record of {split}_w_10cands.json: only fields 0, 1, 6, 7, 9 and 10 are read."""
    cands = cand_urls + [PAD] * (10 - len(cand_urls))
    return [text, image_url, "sports", text[start:end], "PER", "unused", gold_url, cands, "unused", start, end]


WD_SPLITS = {
    "train": [
        wd_record("Zürich hosted the final on Sunday.", UPLOAD + "Zurich_skyline.jpg", WIKI + "Z%C3%BCrich",
                  [WIKI + "Zurich_(band)", WIKI + "Z%C3%BCrich"], 0, 6),
        wd_record("Jordan scored 40 points against the Knicks.", UPLOAD + "Jordan%20dunk.JPEG",
                  WIKI + "Michael_Jordan", [WIKI + "Jordan", WIKI + "Air_Jordan"], 0, 6),  # gold missing
        wd_record("Nobody knows this one.", UPLOAD + "nothing.jpg", WIKI + "Jordan", [], 0, 6),  # only padding
    ],
    "valid": [
        wd_record("Paris met Paris Hilton in Paris.", UPLOAD + "Hilton.png", WIKI + "Paris_Hilton",
                  [WIKI + "Paris", WIKI + "Paris_Hilton"], 10, 22),
        wd_record("The band AC/DC played Zürich.", UPLOAD + "acdc.jpg", WIKI + "AC/DC",
                  [WIKI + "AC/DC", WIKI + "Z%C3%BCrich"], 9, 14),
    ],
    "test": [
        wd_record("Jordan borders Israel.", UPLOAD + "Map_of_Jordan.svg", WIKI + "Jordan",
                  [WIKI + "Jordan", WIKI + "Michael_Jordan"], 0, 6),
        wd_record("Michael Jordan retired.", UPLOAD + "missing_photo.jpg", WIKI + "Michael_Jordan",
                  [WIKI + "Michael_Jordan"], 0, 14),  # image not on disk
    ],
}
WD_BRIEFS = {
    "train": {"Zürich": "Largest city of Switzerland.", "Michael_Jordan": "American basketball player."},
    "valid": {"Paris": "Capital of France.", "Paris_Hilton": "American media personality.", "AC/DC": "Rock band."},
    "test": {"Jordan": "Country in West Asia.", "Zürich": "A later brief is not used."},
}  # no brief for Zurich (band) or Air Jordan
WD_ENTITY_IMAGES = [
    "entity@@@@images",  # header
    f"Zürich@@@@{UPLOAD}Gone.jpg[AND]{UPLOAD}Zurich_flag.png",  # first URL missing on disk, second found
    f"Michael_Jordan@@@@{UPLOAD}Jordan%20dunk.JPEG",
    f"Paris@@@@{UPLOAD}Never_downloaded.jpg",  # none on disk -> null
]
WD_ON_DISK = [("Zurich_skyline.jpg", ".jpg"), ("Jordan%20dunk.JPEG", ".JPEG"), ("Hilton.png", ".png"),
              ("acdc.jpg", ".jpg"), ("Map_of_Jordan.svg", ".png"), ("Zurich_flag.png", ".png")]


def make_wikidiverse(raw):
    for split, records in WD_SPLITS.items():
        write_json(str(raw / "candidates" / f"{split}_w_10cands.json"), records)
        write_json(str(raw / "entities" / f"entity2brief_{split}.json"), WD_BRIEFS[split])
    (raw / "entities" / "wikipedia_entity2imgs.tsv").write_text("\n".join(WD_ENTITY_IMAGES) + "\n", encoding="utf-8")
    for file_name, ext in WD_ON_DISK:
        touch(str(raw / "images" / md5_name(file_name, ext)))
    return raw


def test_names_and_image_keys_follow_the_original():
    assert wikipedia_title(WIKI + "Z%C3%BCrich") == "Zürich"
    assert wikipedia_title(WIKI + "AC/DC") == "AC/DC"
    assert wikidiverse_image_key(UPLOAD + "Zurich_skyline.jpg") == md5_name("Zurich_skyline.jpg", ".jpg")
    assert wikidiverse_image_key(UPLOAD + "a.jpeg") == md5_name("a.jpeg", ".jpeg")
    assert wikidiverse_image_key(UPLOAD + "Map.svg") == md5_name("Map.svg", ".png")  # stored as png
    assert wikidiverse_image_key(UPLOAD + "x.gif") == md5_name("x.gif", "x.gif")  # unknown extension: the whole name


def test_wikidiverse_converts_line_by_line(tmp_path, capsys):
    raw, out = make_wikidiverse(tmp_path / "raw"), tmp_path / "out"
    summary = convert_wikidiverse(str(raw), str(out))
    key = md5_name
    assert read_jsonl(out / "train.json") == [
        {"text": "Zürich hosted the final on Sunday.", "mention": "Zürich", "target": "Zürich", "golden": "Zürich",
         "img_url": key("Zurich_skyline.jpg", ".jpg"), "mention_span": [0, 6]},
        {"text": "Jordan scored 40 points against the Knicks.", "mention": "Jordan", "target": "Michael Jordan",
         "golden": "Michael_Jordan", "img_url": key("Jordan%20dunk.JPEG", ".JPEG"), "mention_span": [0, 6]},
    ]  # the third record (only __nil__ candidates) is left out
    assert read_jsonl(out / "dev.json") == [
        {"text": "Paris met Paris Hilton in Paris.", "mention": "Paris Hilton", "target": "Paris Hilton",
         "golden": "Paris_Hilton", "img_url": key("Hilton.png", ".png"), "mention_span": [10, 22]},
        {"text": "The band AC/DC played Zürich.", "mention": "AC/DC", "target": "AC/DC", "golden": "AC/DC",
         "img_url": key("acdc.jpg", ".jpg"), "mention_span": [9, 14]},
    ]
    assert [ex["img_url"] for ex in read_jsonl(out / "test.json")] == [key("Map_of_Jordan.svg", ".png"),
                                                                       key("missing_photo.jpg", ".jpg")]
    assert read_jsonl(out / "candidates.train.jsonl") == [
        {"line": 1, "mention": "Zürich", "candidates": ["Zurich (band)", "Zürich"], "scores": [1.0, 0.5]},
        {"line": 2, "mention": "Jordan", "candidates": ["Jordan", "Air Jordan"], "scores": [1.0, 0.5]},
    ]
    assert [r["candidates"] for r in read_jsonl(out / "candidates.test.jsonl")] == [["Jordan", "Michael Jordan"],
                                                                                   ["Michael Jordan"]]
    names = ["AC/DC", "Air Jordan", "Jordan", "Michael Jordan", "Paris", "Paris Hilton", "Zurich (band)", "Zürich"]
    assert (out / "entities.txt").read_text(encoding="utf-8").splitlines() == names
    blank = "default.jpg"  # the original's blank default image, for an entity without one
    assert read_jsonl(out / "entities.jsonl") == [  # text: the raw title (underscores kept) + ": " + brief
        {"name": "AC/DC", "description": "Rock band.", "image": blank, "text": "AC/DC: Rock band."},
        {"name": "Air Jordan", "description": "", "image": blank, "text": "Air_Jordan"},
        {"name": "Jordan", "description": "Country in West Asia.", "image": blank,
         "text": "Jordan: Country in West Asia."},
        {"name": "Michael Jordan", "description": "American basketball player.",
         "image": key("Jordan%20dunk.JPEG", ".JPEG"), "text": "Michael_Jordan: American basketball player."},
        {"name": "Paris", "description": "Capital of France.", "image": blank, "text": "Paris: Capital of France."},
        {"name": "Paris Hilton", "description": "American media personality.", "image": blank,
         "text": "Paris_Hilton: American media personality."},
        {"name": "Zurich (band)", "description": "", "image": blank, "text": "Zurich_(band)"},
        {"name": "Zürich", "description": "Largest city of Switzerland.", "image": key("Zurich_flag.png", ".png"),
         "text": "Zürich: Largest city of Switzerland."},
    ]
    listed = dict(read_image_list(str(out / "image_list.tsv")))
    # every referenced image found (the missing mention photo is not), and the blank default image written
    assert set(listed) == {key(f, e) for f, e in WD_ON_DISK} | {blank} and (out / blank).exists()
    assert all(os.path.isfile(p) and os.path.isabs(p) for p in listed.values())
    assert summary["splits"]["train"] == {"raw": 3, "mentions": 2, "dropped_no_candidates": 1,
                                          "gold_in_candidates": round(1 / 3, 4)}
    assert summary["splits"]["test"]["gold_in_candidates"] == 1.0
    assert summary["entities"] == 8 and summary["mention_images"] == {"found": 5, "missing": 1}
    assert summary["entity_images"] == {"found": 2, "missing": 6}
    printed = capsys.readouterr().out
    assert "train: 2 mentions of 3" in printed and "1 missing" in printed


def test_wikidiverse_output_is_read_by_the_project(tmp_path):
    out = tmp_path / "out"
    convert_wikidiverse(str(make_wikidiverse(tmp_path / "raw")), str(out))
    for split in ("train", "dev", "test"):
        examples = read_split(str(out / f"{split}.json"))
        lists = read_candidates(str(out / f"candidates.{split}.jsonl"), examples)
        assert list(lists) == [ex["line"] for ex in examples]
    kb = {e["name"] for e in read_entities(str(out / "entities.jsonl"))}
    assert kb == set((out / "entities.txt").read_text(encoding="utf-8").splitlines())


def test_wikidiverse_records_it_cannot_use_are_skipped_counted_and_named(tmp_path, capsys):
    raw = make_wikidiverse(tmp_path / "raw")
    records = WD_SPLITS["valid"] + [wd_record("Short.", UPLOAD + "a.jpg", WIKI + "Paris", [WIKI + "Paris"], 0, 5),
                                    ["too", "short"]]
    records[2][10] = 99  # span end past the text
    write_json(str(raw / "candidates" / "valid_w_10cands.json"), records)
    summary = convert_wikidiverse(str(raw), str(tmp_path / "out"))
    assert summary["skipped_records"] == 2 and len(read_jsonl(tmp_path / "out" / "dev.json")) == 2
    assert "valid_w_10cands.json, record 2 (0-based): span" in summary["skipped_first"][0]
    assert "2 record(s) could not be used and were skipped" in capsys.readouterr().out


def test_wikidiverse_nil_golds_and_duplicate_candidates_as_the_original(tmp_path):
    """Every spelling of a gold the original finds in no list is no entity (NIL); duplicates stay in the lists."""
    raw = make_wikidiverse(tmp_path / "raw")
    records = [wd_record("Paris was busy.", UPLOAD + "Hilton.png", gold, [WIKI + "Paris", WIKI + "Paris"], 0, 5)
               for gold in ("", WIKI + "nil", WIKI + "NIL", PAD, WIKI + "Paris")]
    write_json(str(raw / "candidates" / "valid_w_10cands.json"), records)
    convert_wikidiverse(str(raw), str(tmp_path / "out"))
    rows = [json.loads(line) for line in open(tmp_path / "out" / "dev.json")]
    assert [r["golden"] for r in rows] == ["NIL", "NIL", "NIL", "NIL", "Paris"]
    assert read_jsonl(tmp_path / "out" / "candidates.dev.jsonl")[4]["candidates"] == ["Paris", "Paris"]
    names = (tmp_path / "out" / "entities.txt").read_text(encoding="utf-8").splitlines()
    assert "nil" not in names and "NIL" not in names


def test_wikidiverse_bad_tsv_missing_file_and_overwrite(tmp_path):
    raw = make_wikidiverse(tmp_path / "raw")
    tsv = raw / "entities" / "wikipedia_entity2imgs.tsv"
    tsv.write_text("header\nZürich has no separator\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"wikipedia_entity2imgs\.tsv, line 2: expected `title@@@@url"):
        convert_wikidiverse(str(raw), str(tmp_path / "out"))
    tsv.write_text("\n".join(WD_ENTITY_IMAGES) + "\n", encoding="utf-8")
    os.remove(raw / "entities" / "entity2brief_test.json")
    with pytest.raises(DataError, match=r"entity2brief_test\.json: not found"):
        convert_wikidiverse(str(raw), str(tmp_path / "out"))
    write_json(str(raw / "entities" / "entity2brief_test.json"), WD_BRIEFS["test"])
    out = tmp_path / "out"
    convert_wikidiverse(str(raw), str(out))
    with pytest.raises(DataError, match="already holds a train.json; pass overwrite=True"):
        convert_wikidiverse(str(raw), str(out))
    convert_wikidiverse(str(raw), str(out), overwrite=True)


# ----------------------------------------------------------------------------- WikiMEL

WM_SPLITS = {
    "train": {
        "101-0": {"sentence": "Barack Obama visited Berlin in June.", "mentions": "Barack Obama", "answer": "Q76",
                  "imgPath": "unused"},
        "101-1": {"sentence": "Barack Obama visited Berlin in June.", "mentions": "Berlin", "answer": "Q64"},
        "102-0": {"sentence": "The actor smiled for the camera.", "mentions": "Tom Hanks", "answer": "Q2263"},
    },
    "valid": {
        "103-0": {"sentence": "Angela Merkel spoke.", "mentions": "Angela Merkel", "answer": "Q567"},  # gold missing
        "104-0": {"sentence": "Nobody here.", "mentions": "Nobody", "answer": "Q76"},  # no candidate at all
    },
    "test": {
        "105-0": {"sentence": "Tom Hanks in Berlin.", "mentions": "Tom Hanks", "answer": "Q2263"},
    },
}
WM_CANDIDATES = ["101-0\tQ76\tQ649593", "101-1\tQ649593\tQ64\tQ999", "102-0\tQ76", "103-0\tQ76",
                 "104-0", "105-0\tQ2263\tQ64"]  # Q999 is in no qid2ne.json
WM_NAMES = {"Q76": "Barack Obama", "Q64": "Berlin", "Q649593": "Berlin", "Q2263": "Tom Hanks",
            "Q567": "Angela Merkel", "Q1": "Universe"}
WM_ABSTRACTS = {"Q76": "44th president of the United States.", "Q64": "Capital of Germany.",
                "Q649593": "A town in New Hampshire.", "Q2263": "American actor."}  # none for Q567


def make_wikimel(raw):
    for split, records in WM_SPLITS.items():
        write_json(str(raw / "mentions" / f"WIKIMEL_{split}.json"), records)
    top = raw / "candidates" / "top100"
    top.mkdir(parents=True)
    (top / "candidates-answer.tsv").write_text("\n".join(WM_CANDIDATES) + "\n", encoding="utf-8")
    write_json(str(raw / "candidates" / "qid2ne.json"), WM_NAMES)
    write_json(str(raw / "entities" / "qid2abs.json"), WM_ABSTRACTS)
    touch(str(raw / "mentions" / "KVQAimgs" / "101"))  # as the original reads it: no extension
    touch(str(raw / "mentions" / "KVQAimgs" / "102.jpg"))  # an extension is found too
    touch(str(raw / "entities" / "cleaned-images" / "Q76"))
    touch(str(raw / "entities" / "cleaned-images" / "Q64"))
    return raw


def test_wikimel_converts_line_by_line(tmp_path, capsys):
    raw, out = make_wikimel(tmp_path / "raw"), tmp_path / "out"
    summary = convert_wikimel(str(raw), str(out))
    assert read_jsonl(out / "train.json") == [
        {"text": "Barack Obama visited Berlin in June.", "mention": "Barack Obama", "target": "Barack Obama",
         "golden": "Barack_Obama", "img_url": "KVQAimgs/101"},
        {"text": "Barack Obama visited Berlin in June.", "mention": "Berlin", "target": "Berlin (Q64)",
         "golden": "Berlin_(Q64)", "img_url": "KVQAimgs/101"},
        {"text": "The actor smiled for the camera.", "mention": "Tom Hanks", "target": "Tom Hanks",
         "golden": "Tom_Hanks", "img_url": "KVQAimgs/102.jpg"},  # mention not in its sentence: kept
    ]
    assert read_jsonl(out / "candidates.train.jsonl") == [
        {"line": 1, "mention": "Barack Obama", "candidates": ["Barack Obama", "Berlin (Q649593)"],
         "scores": [1.0, 0.5]},
        {"line": 2, "mention": "Berlin", "candidates": ["Berlin (Q649593)", "Berlin (Q64)"], "scores": [1.0, 0.5]},
        {"line": 3, "mention": "Tom Hanks", "candidates": ["Barack Obama"], "scores": [1.0]},  # gold missed
    ]
    assert read_jsonl(out / "dev.json") == [
        {"text": "Angela Merkel spoke.", "mention": "Angela Merkel", "target": "Angela Merkel",
         "golden": "Angela_Merkel", "img_url": "KVQAimgs/103"}]  # 104-0 has no candidate: left out
    assert read_jsonl(out / "candidates.test.jsonl") == [
        {"line": 1, "mention": "Tom Hanks", "candidates": ["Tom Hanks", "Berlin (Q64)"], "scores": [1.0, 0.5]}]
    blank = "default.jpg"  # text: qid2ne's name + ". " + the abstract with "." written ";" (preprocess/bert.py)
    assert read_jsonl(out / "entities.jsonl") == [
        {"name": "Angela Merkel", "description": "", "image": blank, "text": "Angela Merkel. "},
        {"name": "Barack Obama", "description": "44th president of the United States.",
         "image": "cleaned-images/Q76", "text": "Barack Obama. 44th president of the United States;"},
        {"name": "Berlin (Q64)", "description": "Capital of Germany.", "image": "cleaned-images/Q64",
         "text": "Berlin. Capital of Germany;"},
        {"name": "Berlin (Q649593)", "description": "A town in New Hampshire.", "image": blank,
         "text": "Berlin. A town in New Hampshire;"},
        {"name": "Tom Hanks", "description": "American actor.", "image": blank, "text": "Tom Hanks. American actor;"},
    ]  # Q1 is referenced by no mention; Q999 is dropped
    assert (out / "entities.txt").read_text(encoding="utf-8").splitlines() == [
        "Angela Merkel", "Barack Obama", "Berlin (Q64)", "Berlin (Q649593)", "Tom Hanks"]
    listed = dict(read_image_list(str(out / "image_list.tsv")))
    assert listed == {"KVQAimgs/101": str(raw / "mentions" / "KVQAimgs" / "101"),
                      "KVQAimgs/102.jpg": str(raw / "mentions" / "KVQAimgs" / "102.jpg"),
                      "cleaned-images/Q76": str(raw / "entities" / "cleaned-images" / "Q76"),
                      "cleaned-images/Q64": str(raw / "entities" / "cleaned-images" / "Q64"),
                      blank: str(out / blank)}
    assert summary["splits"]["train"] == {"raw": 3, "mentions": 3, "dropped_no_candidates": 0,
                                          "gold_in_candidates": round(2 / 3, 4), "mention_not_in_sentence": 1}
    assert summary["splits"]["dev"]["gold_in_candidates"] == 0.0
    assert summary["mention_images"] == {"found": 2, "missing": 2}  # KVQAimgs/103 and /105
    assert summary["unknown_candidate_qids_dropped"] == 1 and summary["names_shared_by_qids"] == 2
    assert "1 mention(s) not in their sentence (kept)" in capsys.readouterr().out


def test_wikimel_output_is_read_by_the_project(tmp_path):
    out = tmp_path / "out"
    convert_wikimel(str(make_wikimel(tmp_path / "raw")), str(out))
    kb = {e["name"] for e in read_entities(str(out / "entities.jsonl"))}
    for split in ("train", "dev", "test"):
        examples = read_split(str(out / f"{split}.json"))
        lists = read_candidates(str(out / f"candidates.{split}.jsonl"), examples)
        assert all(name in kb for names in lists.values() for name in names)
        assert all(ex["target"] in kb for ex in examples)


@pytest.mark.parametrize("record, reason", [
    ({"sentence": "No answer here.", "mentions": "answer"}, r"WIKIMEL_test\.json, id '106-0': expected"),
    ({"sentence": "Barack Obama.", "mentions": "Barack Obama", "answer": "Q76"},
     r"candidates-answer\.tsv: no line for mention id '106-0'"),
    ({"sentence": "Someone.", "mentions": "Someone", "answer": "Q404"},
     r"WIKIMEL_test\.json, id '106-0': gold QID 'Q404' is not in .*qid2ne"),
])
def test_wikimel_records_it_cannot_use_are_skipped_and_named(tmp_path, record, reason):
    raw = make_wikimel(tmp_path / "raw")
    write_json(str(raw / "mentions" / "WIKIMEL_test.json"), dict(WM_SPLITS["test"], **{"106-0": record}))
    summary = convert_wikimel(str(raw), str(tmp_path / "out"))
    assert summary["skipped_records"] == 1 and re.search(reason, summary["skipped_first"][0])
    assert len(read_jsonl(tmp_path / "out" / "test.json")) == 1  # the usable record is converted


def test_wikimel_unreadable_file_and_nil_gold(tmp_path):
    raw = make_wikimel(tmp_path / "raw")
    write_json(str(raw / "mentions" / "WIKIMEL_test.json"),
               dict(WM_SPLITS["test"], **{"107-0": {"sentence": "Nobody.", "mentions": "Nobody", "answer": "nil"}}))
    (raw / "candidates" / "top100" / "candidates-answer.tsv").write_text("\n".join(WM_CANDIDATES + ["107-0\tQ76"])
                                                                         + "\n", encoding="utf-8")
    convert_wikimel(str(raw), str(tmp_path / "out"))
    assert [r["golden"] for r in read_jsonl(tmp_path / "out" / "test.json")] == ["Tom_Hanks", "NIL"]
    (raw / "candidates" / "qid2ne.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"qid2ne\.json: not valid JSON"):  # a whole file: fatal
        convert_wikimel(str(raw), str(tmp_path / "out2"))
    assert not (tmp_path / "out2").exists()


def test_command_line(tmp_path, capsys):
    import prepare

    raw, out = make_wikimel(tmp_path / "raw"), tmp_path / "data" / "out"
    argv = ["drin_release", "wikimel", str(raw), "--data_dir", str(tmp_path / "data"), "--dataset", "out"]
    assert prepare.main(argv) == 0
    assert (out / "train.json").exists() and "Converted DRIN's raw wikimel" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="already holds a train.json"):
        prepare.main(argv)

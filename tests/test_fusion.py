"""Fused candidate scores: the weights' arithmetic by hand, the LM-only fusion equal to GEMEL among the candidates,
weights chosen on dev alone, stored with the checkpoint and read back, and bad flags named."""
import json
import shutil

import numpy as np
import pytest

import infe
import main
from mel.errors import DataError
from mel.fusion.scores import CandidateScores, _below_the_rest
from mel.fusion.weights import Fusion, choose_on_dev, fused_scores, hits_and_mrr, ranking
from mel.io.datasets import read_split
from tiny import tiny_run_flags


def scores_by_hand():
    """Two mentions: the LM prefers slot 1 for both, the retriever slot 0; the gold is slot 0, then slot 2."""
    mask = np.array([[True, True, True], [True, True, False]])
    return CandidateScores(
        lines=[1, 2], names=[["a", "b", "c"], ["d", "e"]], gold=np.array([0, -1]), mask=mask,
        lm_average=np.array([[-2.0, -1.0, -3.0], [-4.0, -0.5, 0.0]]), lm_length=np.array([[2.0, 4.0, 1.0],
                                                                                         [1.0, 3.0, 1.0]]),
        retriever=np.array([[1.0, 0.2, 0.1], [0.9, 0.1, 0.0]]))


def test_fused_scores_ranking_and_figures_by_hand():
    scores = scores_by_hand()
    lm_only = fused_scores(scores, Fusion())
    np.testing.assert_array_equal(lm_only[0], [-2.0, -1.0, -3.0])
    assert lm_only[1, 2] == -np.inf  # padding
    # length penalty 0.5: sum / length ** 0.5 = average * length ** 0.5
    np.testing.assert_allclose(scores.lm(0.5)[0], [-2.0 * 2 ** 0.5, -1.0 * 4 ** 0.5, -3.0])
    mixed = fused_scores(scores, Fusion(lm=1.0, retriever=3.0))
    np.testing.assert_allclose(mixed[0], [-2.0 + 3.0, -1.0 + 0.6, -3.0 + 0.3])
    assert ranking(scores, Fusion(lm=1.0, retriever=3.0))[0].tolist() == [0, 1, 2]
    assert ranking(scores, Fusion())[0].tolist() == [1, 0, 2]
    assert hits_and_mrr(scores, Fusion()) == (0.0, pytest.approx(0.25))  # rank 2, and a gold not listed: 0
    assert hits_and_mrr(scores, Fusion(lm=0.0, retriever=1.0)) == (50.0, pytest.approx(0.5))


def test_the_fusion_chosen_on_dev_is_the_simplest_best():
    fusion, (hits, mrr) = choose_on_dev(scores_by_hand())
    assert (hits, mrr) == (50.0, pytest.approx(0.5))
    assert fusion == Fusion(lm=0.0, retriever=0.1)  # one signal suffices: the simplest fusion that reaches it


def test_scores_a_list_lacks_go_below_the_rest():
    matrix = np.array([[0.5, np.nan, 0.2], [np.nan, np.nan, 0.0]])
    mask = np.array([[True, True, True], [True, True, False]])
    np.testing.assert_allclose(_below_the_rest(matrix, mask), [[0.5, -0.8, 0.2], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize("text, expected", [
    ("lm=1,retriever=0.3", Fusion(1.0, 0.3, 0.0, 1.0)),
    ("retriever=2, ranker=1, lm=0, length_penalty=0.5", Fusion(0.0, 2.0, 1.0, 0.5)),
])
def test_weights_by_hand_parse(text, expected):
    assert Fusion.parse(text) == expected


@pytest.mark.parametrize("text, message", [
    ("lm=1,bm25=2", "unknown name 'bm25'"), ("lm=x", "'lm=x' is not name=number"),
    ("lm=0", "every weight is 0"), ("lm=-1", "lm must be a finite number >= 0"), ("lm=nan", "finite"),
])
def test_bad_weights_are_named(text, message):
    with pytest.raises(DataError, match=message):
        Fusion.parse(text)


# ----------------------------------------------------------------------------- end to end on the tiny dataset

@pytest.fixture(scope="module")
def fused_run(tmp_path_factory, drin_dataset, tiny_dataset, tiny_opt_dir):
    """A copy of the DRIN-ready tiny dataset (4 candidates per mention, no retriever scores: minus the position
    stands in), a GEMEL checkpoint at initialisation and a DRIN checkpoint."""
    root = tmp_path_factory.mktemp("fusion")
    shutil.copytree(drin_dataset["folder"], root / "data" / "tiny")
    common = tiny_run_flags(tiny_dataset, tiny_opt_dir, root, data_dir=str(root / "data"))
    main.main(common + ["--train_epoch", "0", "--no-do_test"])
    main.main(["--method", "drin", "--data_dir", str(root / "data"), "--dataset", "tiny", "--ckpt_dir",
               str(root / "ckpt"), "--log_dir", str(root / "log"), "--hidden", "16", "--train_epoch", "2",
               "--batch_size", "4"])
    return {"root": root, "common": common, "ranker": str(root / "ckpt" / "drin_tiny_tt-ti-it-ii_dynamic.pt")}


def read(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.mark.parametrize("split", ["dev", "test"])
def test_the_lm_alone_gives_gemels_names_and_scores(fused_run, tmp_path, split):
    """Weights (LM 1, others 0): exactly what GEMEL gives among the same candidates with a beam per candidate."""
    common = fused_run["common"]
    infe.main(common + ["--split", split, "--use_candidates", "--num_beams", "4", "--predictions_file",
                        str(tmp_path / "gemel.jsonl")])
    infe.main(common + ["--split", split, "--fusion_weights", "lm=1", "--predictions_file",
                        str(tmp_path / "fused.jsonl")])
    gemel, fused = read(tmp_path / "gemel.jsonl"), read(tmp_path / "fused.jsonl")
    assert [r["line"] for r in fused] == [r["line"] for r in gemel]
    for g, f in zip(gemel, fused):
        assert [e["name"] for e in f["ranked"]] == [e["name"] for e in g["ranked"]]
        assert [e["score"] for e in f["ranked"]] == [e["score"] for e in g["ranked"]]
        assert f["prediction"] == g["prediction"] and f["rank"] == g["rank"]


def test_weights_come_from_dev_alone(fused_run, tmp_path):
    """--fusion dev with a ranker: the same weights whatever the test candidate lists hold."""
    common = fused_run["common"]
    flags = common + ["--fusion", "dev", "--fusion_ranker", fused_run["ranker"]]
    infe.main(flags + ["--predictions_file", str(tmp_path / "a.jsonl")])
    data = tmp_path / "data"
    shutil.copytree(fused_run["root"] / "data", data)
    test_lists = data / "tiny" / "candidates.test.jsonl"
    rows = read(test_lists)
    test_lists.write_text("".join(json.dumps({**r, "candidates": r["candidates"][::-1]}) + "\n" for r in rows))
    other = [data_flag if data_flag != str(fused_run["root"] / "data") else str(data) for data_flag in flags]
    infe.main(other + ["--predictions_file", str(tmp_path / "b.jsonl")])
    a, b = (json.load(open(tmp_path / f"{x}.summary.json")) for x in "ab")
    assert a["fusion"] == b["fusion"] and a["fusion_dev"] == b["fusion_dev"]
    assert a["fusion_ranker"] == fused_run["ranker"]
    assert all("ranker" in entry for r in read(tmp_path / "a.jsonl") for entry in r["ranked"])


def test_main_stores_the_fusion_and_infe_reads_it_back(fused_run, tmp_path, tiny_dataset, tiny_opt_dir):
    common = tiny_run_flags(tiny_dataset, tiny_opt_dir, tmp_path, data_dir=str(fused_run["root"] / "data"))
    result = main.main(common + ["--train_epoch", "0", "--fusion", "dev", "--fusion_ranker", fused_run["ranker"]])
    [fused_file] = (tmp_path / "ckpt").glob("*.test.fused.predictions.jsonl")
    stem = str(fused_file)[:-len(".test.fused.predictions.jsonl")]
    config = json.load(open(f"{stem}.json"))
    chosen = config["chosen_fusion"]
    assert chosen["weights"] == result["fusion"] and chosen["ranker"] == fused_run["ranker"]
    assert set(chosen["dev"]) == {"hits@1", "mrr"}
    infe.main(common + ["--fusion", "checkpoint", "--predictions_file", str(tmp_path / "again.jsonl")])
    stored = read(f"{stem}.test.fused.predictions.jsonl")
    again = read(tmp_path / "again.jsonl")
    assert [r["ranked"] for r in again] == [r["ranked"] for r in stored]
    assert result["test_fused_acc"] == pytest.approx(100 * sum(r["correct"] for r in stored) / len(stored))


def test_fusion_refusals_are_one_line(fused_run, tmp_path):
    common = fused_run["common"]
    with pytest.raises(SystemExit, match=r"no fusion weights stored \(chosen_fusion\); choose them with `--fusion"):
        infe.main(common + ["--fusion", "checkpoint", "--predictions_file", str(tmp_path / "x.jsonl")])
    with pytest.raises(SystemExit, match="weighs a ranker's scores .* pass --fusion_ranker"):
        infe.main(common + ["--fusion_weights", "lm=1,ranker=2", "--predictions_file", str(tmp_path / "y.jsonl")])
    with pytest.raises(SystemExit):
        infe.main(common + ["--fusion", "dev", "--keep_nil"])
    with pytest.raises(SystemExit):
        infe.main(common + ["--fusion_weights", "lm=banana"])


def test_link_fuses_new_text_with_the_same_signals(fused_run, tmp_path):
    """link.py --fusion_weights: LM-only equals GEMEL's link among the candidates with a beam each; the ranker's
    signal is what link.py --method drin gives the same lines; the retriever's is `candidate_scores`."""
    import link

    folder = fused_run["root"] / "data" / "tiny"
    lists = {r["line"]: r["candidates"] for r in read(folder / "candidates.test.jsonl")}
    rows = [{"text": ex["text"], "mention": ex["mention"], "image_key": ex["img_url"], "candidates": lists[ex["line"]],
             "candidate_scores": [float(len(lists[ex["line"]]) - i) for i in range(len(lists[ex["line"]]))]}
            for ex in read_split(str(folder / "test.json"))]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = fused_run["common"]
    gemel = link.main(common + ["--input", str(source), "--output", str(tmp_path / "g.jsonl"), "--num_beams", "4"])
    fused = link.main(common + ["--input", str(source), "--output", str(tmp_path / "f.jsonl"), "--fusion_weights",
                                "lm=1,ranker=1", "--fusion_ranker", fused_run["ranker"]])
    drin = link.main(["--method", "drin", "--data_dir", str(fused_run["root"] / "data"), "--dataset", "tiny",
                      "--ckpt_dir", str(fused_run["root"] / "ckpt"), "--hidden", "16", "--input", str(source),
                      "--output", str(tmp_path / "d.jsonl")])
    for g, f, d, row in zip(gemel, fused, drin, rows):
        lm = {e["name"]: e["score"] for e in g["entities"]}
        ranker = {e["name"]: e["score"] for e in d["entities"]}
        assert {e["name"] for e in f["entities"]} == set(row["candidates"]) == set(lm)
        for entry in f["entities"]:
            assert entry["lm"] == lm[entry["name"]]
            assert entry["ranker"] == pytest.approx(ranker[entry["name"]], abs=1e-5)
            assert entry["retriever"] == row["candidate_scores"][row["candidates"].index(entry["name"])]
            assert entry["score"] == pytest.approx(entry["lm"] + entry["ranker"], abs=1e-9)
        assert [e["score"] for e in f["entities"]] == sorted((e["score"] for e in f["entities"]), reverse=True)

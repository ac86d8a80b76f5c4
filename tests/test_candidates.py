"""Candidate-constrained generation: each example chooses among its own candidates, in the same batched fast path."""
import json
import shutil

import numpy as np
import pytest

import infe
import main as train_script
import prepare
from mel.decoding.beam_search import constrained_beam_search
from mel.errors import DataError
from mel.retrieval.candidates import entity_texts, rank_candidates, read_candidates, recall_at, with_gold
from mel.tree.candidate_trees import CandidateTrees
from tiny import NAMES, left_padded_prompts, make_tree, tiny_lm, tiny_run_flags

EOS = 2


@pytest.mark.parametrize("num_beams", [1, 5])
def test_the_whole_kb_as_every_examples_candidates_equals_whole_kb_decoding(num_beams):
    lm, tree = tiny_lm("opt", 1), make_tree(NAMES)
    embeds, mask = left_padded_prompts([9, 4, 12, 7], 1)
    whole = constrained_beam_search(lm, embeds, mask, tree, num_beams=num_beams, max_new_tokens=8)
    per_example = constrained_beam_search(lm, embeds, mask, CandidateTrees([NAMES] * 4, EOS), num_beams=num_beams,
                                          max_new_tokens=8)
    assert per_example.tokens == whole.tokens and per_example.ranked == whole.ranked
    np.testing.assert_array_equal(per_example.scores, whole.scores)


def test_each_example_decodes_among_its_own_candidates_only():
    lm, tree = tiny_lm("opt", 1), make_tree(NAMES)
    embeds, mask = left_padded_prompts([9, 4, 12, 7], 1)
    whole = constrained_beam_search(lm, embeds, mask, tree, num_beams=5, max_new_tokens=8)
    # each example's candidates: two names it did not choose over the whole KB, plus (for examples 0 and 2) its choice
    lists = []
    for i, best in enumerate(whole.tokens):
        others = [n for n in NAMES if n != best][i:i + 2]
        lists.append(others + ([best] if i % 2 == 0 else []))
    out = constrained_beam_search(lm, embeds, mask, CandidateTrees(lists, EOS), num_beams=5, max_new_tokens=8)
    for i, (names, ranked) in enumerate(zip(lists, out.ranked)):
        assert all(tokens in names for tokens, _ in ranked)
        assert len(ranked) == len(names)  # every candidate finishes: fewer names than beams
        if i % 2 == 0:
            assert out.tokens[i] == whole.tokens[i]  # the whole-KB choice wins again when offered


def test_candidate_file_is_checked_line_by_line(tmp_path):
    examples = [{"line": 1, "mention": "Paris", "target": "Paris"},
                {"line": 3, "mention": "Jordan", "target": "Jordan"}]
    path = tmp_path / "candidates.dev.jsonl"
    path.write_text(json.dumps({"line": 1, "mention": "Paris", "candidates": ["Paris", "Paris Hilton"]}) + "\n")
    with pytest.raises(DataError, match="line 3"):
        read_candidates(str(path), examples)
    path.write_text(json.dumps({"line": 1, "mention": "Paris", "candidates": []}) + "\n")
    with pytest.raises(DataError, match=r"candidates.dev.jsonl, line 1"):
        read_candidates(str(path), examples)
    # a list of another split (or of an edited one): its line numbers exist, its mentions differ
    path.write_text("".join(json.dumps({"line": n, "mention": m, "candidates": c}) + "\n"
                            for n, m, c in ((1, "Paris", ["Paris"]), (3, "Mercury", ["Mercury (planet)"]))))
    with pytest.raises(DataError, match=r"candidates.dev.jsonl, line 2: the candidates of mention 'Mercury', but "
                                        r"line 3 of the split is 'Jordan'"):
        read_candidates(str(path), examples)
    path.write_text("".join(json.dumps({"line": n, "mention": m, "candidates": c}) + "\n"
                            for n, m, c in ((1, "Paris", ["Paris Hilton", "Paris"]), (3, "Jordan", ["Jordan River"]))))
    candidates = read_candidates(str(path), examples)
    assert recall_at(candidates, examples, (1, 2)) == {1: 0.0, 2: 50.0}
    assert with_gold(candidates, examples)[3] == ["Jordan River", "Jordan"]
    assert with_gold(candidates, examples)[1] == ["Paris Hilton", "Paris"]


def test_ranking_keeps_exact_names_and_uses_string_similarity():
    names = ["Paris", "Paris Hilton", "Jordan", "Michael Jordan", "Liverpool F.C."]
    vectors = np.eye(5, dtype=np.float32)
    # the encoder thinks "Jordan" is closest to "Liverpool F.C."; the string match must still rank "Jordan" first
    ranked = rank_candidates(vectors[[4]], ["Jordan"], vectors, names, k=3, shortlist=1)
    assert ranked[0][0][0] == "Jordan" and "Liverpool F.C." in ranked[0][0]


def test_the_context_retriever_adds_the_sentence_against_the_entity_texts():
    names = ["Jordan", "Michael Jordan", "Jordan River"]
    mention = np.array([[0.0, 1.0, 1.0]])  # as close to "Michael Jordan" as to "Jordan River"
    name_vectors = np.eye(3, dtype=np.float32)
    without = dict(zip(*rank_candidates(mention, ["Jordan"], name_vectors, names, k=3)[0]))
    lower = min(("Michael Jordan", "Jordan River"), key=without.get)
    higher = ({"Michael Jordan", "Jordan River"} - {lower}).pop()
    # the sentence's vector matches the description of the one the mention alone ranks lower
    sentence, texts = name_vectors[[names.index(lower)]], np.eye(3, dtype=np.float32)
    ranked = rank_candidates(mention, ["Jordan"], name_vectors, names, k=3, context=(sentence, texts))
    scores = dict(zip(*ranked[0]))
    assert scores[lower] == pytest.approx(without[lower] + 1.0, abs=1e-6)  # + cos(sentence, its text) = 1
    assert scores[higher] == pytest.approx(without[higher], abs=1e-6) and scores[lower] > scores[higher]
    assert scores["Jordan"] == pytest.approx(without["Jordan"], abs=1e-6)


def test_entity_texts_take_descriptions_where_there_are_some(tmp_path):
    rows = [{"name": "Paris", "description": "capital of France"}, {"name": "Paris Hilton", "description": ""}]
    (tmp_path / "entities.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert entity_texts(str(tmp_path), ["Paris", "Paris Hilton", "Texas"]) == ["Paris: capital of France",
                                                                               "Paris Hilton", "Texas"]
    assert entity_texts(str(tmp_path / "none"), ["Paris"]) == ["Paris"]


def test_prepare_candidates_with_the_context_retriever(drin_dataset, tiny_dataset, tmp_path):
    shutil.copytree(drin_dataset["folder"], tmp_path / "tiny")
    assert prepare.main(["candidates", "--data_dir", str(tmp_path), "--dataset", "tiny", "--simcse_model",
                         tiny_dataset["simcse_model"], "--num_candidates", "3", "--retriever", "context"]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "tiny" / "candidates.test.jsonl")]
    assert all(len(r["candidates"]) == 3 and len(r["scores"]) == 3 for r in rows)
    assert all(r["scores"] == sorted(r["scores"], reverse=True) for r in rows)


@pytest.fixture(scope="module")
def candidate_run(tmp_path_factory, tiny_dataset, tiny_opt_dir):
    root = tmp_path_factory.mktemp("cands")
    shutil.copytree(tiny_dataset["folder"], root / "data" / "tiny")
    assert prepare.main(["candidates", "--data_dir", str(root / "data"), "--dataset", "tiny",
                         "--simcse_model", tiny_dataset["simcse_model"], "--num_candidates", "3"]) == 0
    common = tiny_run_flags(tiny_dataset, tiny_opt_dir, root, data_dir=str(root / "data"))
    train_script.main(common + ["--train_epoch", "0", "--no-do_test"])
    return root, common


def test_infe_with_candidates_predicts_only_candidates(candidate_run, tmp_path):
    root, common = candidate_run
    folder = root / "data" / "tiny"
    lists = {json.loads(line)["line"]: json.loads(line)["candidates"] for line in open(folder / "candidates.dev.jsonl")}
    assert all(len(c) == 3 for c in lists.values())
    out = tmp_path / "cands.jsonl"
    infe.main(common + ["--split", "dev", "--use_candidates", "--predictions_file", str(out)])
    for row in map(json.loads, open(out)):
        assert row["prediction"] in lists[row["line"]]
        assert all(h["name"] in lists[row["line"]] for h in row["ranked"])


def test_infe_with_the_whole_kb_as_candidates_equals_whole_kb(candidate_run, tmp_path):
    root, common = candidate_run
    folder = root / "data" / "tiny"
    names = [n for n in open(folder / "entities.txt", encoding="utf-8").read().split("\n") if n]
    rows = [json.loads(line) for line in open(folder / "candidates.dev.jsonl")]
    with open(folder / "candidates.dev.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({"line": row["line"], "mention": row["mention"], "candidates": names}) + "\n")
    paths = {name: tmp_path / f"{name}.jsonl" for name in ("kb", "candidates")}
    infe.main(common + ["--split", "dev", "--predictions_file", str(paths["kb"])])
    infe.main(common + ["--split", "dev", "--use_candidates", "--predictions_file", str(paths["candidates"])])
    kb, cands = ([json.loads(line) for line in open(p)] for p in paths.values())
    assert [r["ranked"] for r in kb] == [r["ranked"] for r in cands]


def test_a_candidate_outside_the_knowledge_base_is_refused(candidate_run, tmp_path):
    root, common = candidate_run
    data_dir = tmp_path / "data"
    shutil.copytree(root / "data" / "tiny", data_dir / "tiny")
    path = data_dir / "tiny" / "candidates.dev.jsonl"
    rows = [json.loads(line) for line in open(path)]
    rows[0]["candidates"][1] = "Paris Saint-Germain"  # line 1, a linked mention (NIL lines are not evaluated)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = [a if a != str(root / "data") else str(data_dir) for a in common]
    with pytest.raises(SystemExit, match=rf"candidates\.dev\.jsonl \(the list of dev\.json line {rows[0]['line']}\): "
                                         r"candidate 'Paris Saint-Germain' is not an entity of the knowledge base"):
        infe.main(argv + ["--split", "dev", "--use_candidates", "--predictions_file", str(tmp_path / "p.jsonl")])


def test_an_empty_knowledge_base_is_refused(tmp_path, tiny_dataset):
    shutil.copytree(tiny_dataset["folder"], tmp_path / "tiny")
    (tmp_path / "tiny" / "entities.txt").write_text("\n")
    with pytest.raises(SystemExit, match=r"entities\.txt: holds no entity name"):
        prepare.main(["candidates", "--data_dir", str(tmp_path), "--dataset", "tiny", "--simcse_model",
                      tiny_dataset["simcse_model"]])


def test_the_retriever_evaluated_as_a_linker(drin_dataset, tmp_path):
    """infe.py --method retriever: the first candidate is the answer, the list's order the ranking, a missing gold a
    miss; the records and summary are written once and never replaced without --overwrite."""
    from mel.io.datasets import read_split

    folder = drin_dataset["folder"]
    examples = read_split(f"{folder}/test.json")
    lists = {row["line"]: row["candidates"] for row in map(json.loads, open(f"{folder}/candidates.test.jsonl"))}
    ranks = [lists[ex["line"]].index(ex["target"]) + 1 if ex["target"] in lists[ex["line"]] else 0 for ex in examples]
    assert 0 in ranks  # the tiny test split has a mention whose gold is not listed
    out = tmp_path / "retriever.jsonl"
    flags = ["--method", "retriever", "--data_dir", drin_dataset["data_dir"], "--dataset", "tiny", "--hits", "1,2",
             "--predictions_file", str(out)]
    summary = infe.main(flags)
    assert summary["hits@1"] == pytest.approx(100 * sum(r == 1 for r in ranks) / len(ranks))
    assert summary["hits@2"] == pytest.approx(100 * sum(0 < r <= 2 for r in ranks) / len(ranks))
    assert summary["mrr"] == pytest.approx(sum(1 / r for r in ranks if r) / len(ranks))
    assert summary["gold_listed"] == pytest.approx(100 * sum(r > 0 for r in ranks) / len(ranks))
    records = [json.loads(line) for line in open(out)]
    assert [r["prediction"] for r in records] == [lists[ex["line"]][0] for ex in examples]
    assert [r["gold_rank"] or 0 for r in records] == ranks
    assert json.load(open(tmp_path / "retriever.summary.json")) == json.loads(json.dumps(summary))
    with pytest.raises(SystemExit, match="earlier evaluation"):
        infe.main(flags)


def test_the_retriever_without_candidates_says_how_to_build_them(tiny_dataset, tmp_path):
    with pytest.raises(SystemExit, match=r"candidates\.test\.jsonl: candidate file not found\. Build it with "
                                         r"`python prepare\.py candidates --dataset tiny`"):
        infe.main(["--method", "retriever", "--data_dir", tiny_dataset["data_dir"], "--dataset", "tiny",
                   "--ckpt_dir", str(tmp_path)])

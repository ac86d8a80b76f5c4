"""End to end on CPU: main.py trains a tiny OPT on a tiny dataset, infe.py evaluates what it wrote."""
import json
import os

import pytest
import torch

import infe
import main as train_script
from tiny import tiny_run_flags


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_dataset, tiny_opt_dir):
    out = tmp_path_factory.mktemp("run")
    common = tiny_run_flags(tiny_dataset, tiny_opt_dir, out, demos=3)
    result = train_script.main(common + ["--train_epoch", "2", "--accum_iter", "4", "--do_eval_steps", "10",
                                         "--lr", "1e-3", "--train_bs", "2"])
    return {"out": out, "common": common, "result": result, "folder": tiny_dataset["folder"]}


def test_main_writes_checkpoint_config_metrics_and_predictions(run):
    ckpt = run["out"] / "ckpt" / "tiny-opt0_tiny_linear_4token_3examples.pkl"
    assert ckpt.exists(), os.listdir(run["out"] / "ckpt")
    state = torch.load(ckpt, weights_only=True)
    assert set(state) == {"weight", "bias"} and state["weight"].dtype == torch.float16
    config = json.loads(ckpt.with_suffix(".json").read_text())
    assert config["ICL_examples_num"] == 3 and config["best_dev_acc"] == run["result"]["best_dev_acc"]
    log = run["out"] / "log" / "tiny-opt0_tiny_linear_4token_3examples.metrics.jsonl"
    rows = [json.loads(line) for line in open(log)]
    dev = [r for r in rows if "dev_acc" in r]
    assert len(dev) == 2  # once at step 10 (of 12 micro-steps), once at the end
    assert any("train_loss" in r for r in rows) and rows[-1]["test_acc"] == run["result"]["test_acc"]
    preds = [json.loads(line) for line in open(ckpt.with_suffix(".test.predictions.jsonl"))]
    assert len(preds) == 3
    entities = set(open(os.path.join(run["folder"], "entities.txt"), encoding="utf-8").read().split("\n"))
    for p in preds:
        assert p["prediction"] in entities  # constrained decoding only lets KB names out
        assert p["correct"] == (p["prediction"] == p["target"]) and len(p["demonstrations"]) == 3
    assert run["result"]["test_acc"] == pytest.approx(100.0 * sum(p["correct"] for p in preds) / 3)


def test_infe_batched_and_unbatched_agree(run, tmp_path):
    files = []
    for bs in ("1", "3"):
        path = tmp_path / f"bs{bs}.jsonl"
        infe.main(run["common"] + ["--eval_bs", bs, "--split", "dev", "--predictions_file", str(path)])
        files.append([json.loads(line) for line in open(path)])
    assert len(files[0]) == 4  # NIL lines of dev.json were dropped
    assert [r["prediction"] for r in files[0]] == [r["prediction"] for r in files[1]]
    for a, b in zip(*files):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_reference_decoding_gives_the_fast_paths_names_and_scores(run, tmp_path):
    """--decoding reference is transformers' own generate(): the fast path must give the same names and scores."""
    entities = set(open(os.path.join(run["folder"], "entities.txt"), encoding="utf-8").read().split("\n"))
    paths = {name: tmp_path / f"{name}.jsonl" for name in ("fast", "reference")}
    for name, path in paths.items():
        infe.main(run["common"] + ["--split", "dev", "--decoding", name, "--predictions_file", str(path)])
    fast, ref = ([json.loads(line) for line in open(path)] for path in paths.values())
    assert len(fast) == len(ref) == 4
    assert [r["prediction"] for r in fast] == [r["prediction"] for r in ref]
    assert all(r["prediction"] in entities for r in ref)
    for a, b in zip(fast, ref):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_unconstrained_decoding_leaves_the_knowledge_base(run, tmp_path):
    entities = set(open(os.path.join(run["folder"], "entities.txt"), encoding="utf-8").read().split("\n"))
    free = tmp_path / "free.jsonl"
    infe.main(run["common"] + ["--split", "dev", "--no-use_prefix_tree", "--max_new_tokens", "3",
                               "--predictions_file", str(free)])
    rows = [json.loads(line) for line in open(free)]
    # without the tree a random tiny LM writes arbitrary tokens, not KB names
    assert len(rows) == 4 and not all(r["prediction"] in entities for r in rows)


def test_resume_after_a_crash_gives_the_uninterrupted_result(tmp_path, tiny_dataset, tiny_opt_dir, crash_at_evaluation):
    def args(out):
        return ["--data_dir", tiny_dataset["data_dir"], "--dataset", "tiny", "--model_name", tiny_opt_dir,
                "--simcse_model", tiny_dataset["simcse_model"], "--ment_embed_file", tiny_dataset["ment_embed_file"],
                "--ckpt_dir", str(out), "--log_dir", str(out), "--ICL_examples_num", "2", "--max_new_tokens", "4",
                "--train_epoch", "1", "--accum_iter", "2", "--do_eval_steps", "4", "--lr", "1e-3", "--no-do_test"]

    train_script.main(args(tmp_path / "whole"))

    crash_at_evaluation(train_script, args(tmp_path / "crashed"))
    state_name = "tiny-opt0_tiny_linear_4token_2examples.train_state.pt"
    assert torch.load(tmp_path / "crashed" / state_name, weights_only=True)["progress"]["global_step"] == 4
    train_script.main(args(tmp_path / "crashed") + ["--resume"])

    whole = torch.load(tmp_path / "whole" / state_name, weights_only=True)
    resumed = torch.load(tmp_path / "crashed" / state_name, weights_only=True)
    assert resumed["progress"]["global_step"] == whole["progress"]["global_step"] == 12
    for key in ("weight", "bias"):
        torch.testing.assert_close(resumed["weights"][key], whole["weights"][key], rtol=0, atol=0)


def test_infe_reports_hits_at_k_and_mrr_from_the_ranked_names(run, tmp_path):
    path = tmp_path / "ranked.jsonl"
    accuracy = infe.main(run["common"] + ["--split", "dev", "--num_beams", "4", "--predictions_file", str(path)])
    rows = [json.loads(line) for line in open(path)]
    summary = json.loads((tmp_path / "ranked.summary.json").read_text())
    for r in rows:
        names = [h["name"] for h in r["ranked"]]
        scores = [h["score"] for h in r["ranked"]]
        assert 1 <= len(names) <= 4 and names[0] == r["prediction"] and scores == sorted(scores, reverse=True)
        assert r["rank"] == (names.index(r["target"]) + 1 if r["target"] in names else None)
    assert summary["accuracy"] == summary["hits@1"] == pytest.approx(accuracy)
    for k in range(1, 5):
        assert summary[f"hits@{k}"] == pytest.approx(100 * sum(r["rank"] is not None and r["rank"] <= k
                                                               for r in rows) / len(rows))
    assert summary["hits@1"] <= summary["hits@2"] <= summary["hits@4"]
    assert summary["mrr"] == pytest.approx(sum(1 / r["rank"] for r in rows if r["rank"]) / len(rows))
    assert summary["examples"] == 4 and summary["seconds"] > 0 and summary["examples_per_s"] > 0


def test_summary_of_known_ranks():
    from mel.gemel.evaluation import summarize

    records = [{"correct": True, "rank": 1, "target": "A", "prediction": "A"},
               {"correct": False, "rank": 3, "target": "B", "prediction": "C"},
               {"correct": False, "rank": None, "target": "D", "prediction": "C"},
               {"correct": False, "rank": 2, "target": "E", "prediction": "F"}]
    summary = summarize(records, num_beams=3, seconds=2.0)
    assert summary["accuracy"] == summary["hits@1"] == 25.0
    assert summary["hits@2"] == 50.0 and summary["hits@3"] == 75.0
    assert summary["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 4)
    assert summary["examples_per_s"] == 2.0


def test_nil_threshold_chosen_on_dev_maximises_accuracy_with_nil(run, tmp_path):
    """Dev with its NIL lines kept: the threshold chosen there gives at least the accuracy of never predicting NIL
    and of predicting NIL everywhere; infe.py reports NIL precision/recall and the linked examples' accuracy."""
    from mel.gemel.evaluation import _with_nil, choose_nil_threshold, summarize

    plain = tmp_path / "plain.jsonl"
    infe.main(run["common"] + ["--split", "dev", "--keep_nil", "--predictions_file", str(plain)])
    records = [json.loads(line) for line in open(plain)]
    assert sum(r["target"] == "NIL" for r in records) == 2 and len(records) == 6  # dev.json's NIL lines kept
    threshold = choose_nil_threshold(records)
    best = summarize([_with_nil(r, threshold) for r in records], 5, 1)["accuracy"]
    for other in (None, max(r["score"] for r in records) + 1):
        assert best >= summarize([_with_nil(r, other) for r in records], 5, 1)["accuracy"]
    chosen = tmp_path / "chosen.jsonl"
    infe.main(run["common"] + ["--split", "dev", "--keep_nil", "--nil_threshold", "dev",
                               "--predictions_file", str(chosen)])
    summary = json.loads((tmp_path / "chosen.summary.json").read_text())
    assert summary["nil_threshold"] == threshold and summary["accuracy"] == pytest.approx(best)
    assert {"nil_precision", "nil_recall", "linked_accuracy"} <= set(summary) and summary["nil_examples"] == 2
    rows = [json.loads(line) for line in open(chosen)]
    assert all((r["prediction"] == "NIL") == (threshold is not None and r["score"] < threshold) for r in rows)


def test_choose_nil_threshold_on_known_scores():
    from mel.gemel.evaluation import choose_nil_threshold

    records = [{"score": -3, "target": "NIL", "prediction": "B"}, {"score": -2, "target": "C", "prediction": "D"},
               {"score": -1, "target": "A", "prediction": "A"}, {"score": -0.5, "target": "E", "prediction": "E"}]
    assert choose_nil_threshold(records) == -2.5  # NIL below it: 3 of 4 right (the lowest of two equal choices)
    records[0]["target"] = "B"
    assert choose_nil_threshold(records) is None  # no NIL line: predicting NIL never helps


def test_text_only_gemel_has_nothing_to_train(tiny_dataset, tiny_opt_dir, tmp_path):
    """--visual_prefix_length 0: prompts without image slots, no training, the frozen LM evaluated as is."""
    flags = tiny_run_flags(tiny_dataset, tiny_opt_dir, tmp_path, "--visual_prefix_length", "0")
    result = train_script.main(flags + ["--train_epoch", "2"])
    state = torch.load(tmp_path / "ckpt" / "tiny-opt0_tiny_linear_0token_2examples.pkl", weights_only=True)
    assert state["weight"].shape == (0, 1024)
    log = tmp_path / "log" / "tiny-opt0_tiny_linear_0token_2examples.metrics.jsonl"
    rows = [json.loads(line) for line in open(log)]
    assert not any("train_loss" in r for r in rows)
    assert infe.main(flags + ["--predictions_file", str(tmp_path / "p.jsonl")]) == result["test_acc"]

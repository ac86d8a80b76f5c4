"""The fast path's names and scores equal those of GEMEL's original decoding under transformers 4.30.2.

tests/data/beam_scores_430.json was written by transformers 4.30.2's own generate() (beam search with a
prefix_allowed_tokens_fn over a nested-dict tree, as GEMEL calls it), see tests/data/beam_scores_430.py. 4.30 divided a
finished name's log-probability sum by the start token it prepended plus the name, EOS not counted; transformers 5.x
and the fast path divide by the name plus EOS: the same number.
"""
import importlib.util
import json
import os

import numpy as np
import pytest

from mel.decoding.beam_search import constrained_beam_search
from mel.tree.trie import PrefixTree

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def load_reference():
    spec = importlib.util.spec_from_file_location("beam_scores_430", os.path.join(HERE, "beam_scores_430.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with open(os.path.join(HERE, "beam_scores_430.json"), encoding="utf-8") as f:
        return module, json.load(f)


REFERENCE, EXPECTED = load_reference()


@pytest.mark.parametrize("case", EXPECTED["cases"], ids=lambda c: f"seed{c['seed']}-beams{c['beams']}")
def test_fast_path_gives_transformers_430_names_and_scores(case):
    lm, embeds, mask = REFERENCE.build_case(case["seed"], case["lengths"])
    eos = REFERENCE.EOS
    tree = PrefixTree.from_sequences([[eos] + name + [eos] for name in REFERENCE.NAMES], eos_token_id=eos)
    out = constrained_beam_search(lm, embeds, mask, tree, num_beams=case["beams"],
                                  max_new_tokens=EXPECTED["max_new_tokens"])
    assert out.tokens == case["names"]
    # 4.30 ran eager attention, 5.x runs SDPA: the logits differ by float32 rounding only
    np.testing.assert_allclose(out.scores, case["scores"], rtol=0, atol=1e-4)


def test_the_reference_is_not_trivial():
    """Names of several lengths, and scores that a length off by one would miss by far more than the tolerance."""
    names = [tuple(n) for case in EXPECTED["cases"] for n in case["names"]]
    assert len(set(names)) >= 5 and len({len(n) for n in names}) >= 3
    for case in EXPECTED["cases"]:
        for name, score in zip(case["names"], case["scores"]):
            length = len(name) + 1
            assert abs(score * length / (length + 1) - score) > 1e-2  # what dividing by one more would give

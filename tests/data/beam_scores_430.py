"""Expected names and scores of GEMEL's decoding as the original ran it: transformers 4.30.2's generate().

Run in an environment with transformers==4.30.2 (the version GEMEL's code was written for) to regenerate
beam_scores_430.json beside this file:

    python -m venv /tmp/tf430 && /tmp/tf430/bin/pip install torch "numpy<2" "huggingface_hub<0.20" \
        "tokenizers<0.14" regex requests pyyaml filelock packaging tqdm safetensors \
        && /tmp/tf430/bin/pip install --no-deps transformers==4.30.2
    /tmp/tf430/bin/python tests/data/beam_scores_430.py

tests/test_scores_430.py builds the same models and prompts with `build_case` (weights and inputs come from numpy's
seeded generator, not from torch's initialisers, so both transformers versions get the same numbers) and checks the
fast path against this file. Like GEMEL, the constraint walks a nested-dict tree from the start token that 4.30
prepends to outputs generated from inputs_embeds (BOS = EOS = 2 for OPT).
"""
import json
import os

import numpy as np
import torch

VOCAB, HIDDEN, EOS = 64, 32, 2
# Names as token ids: some are prefixes of others, lengths 1 to 6.
NAMES = [[5], [5, 9], [5, 9, 11], [5, 9, 11, 20, 21, 22], [7, 3, 3, 8], [12, 40, 7], [13], [13, 14],
         [30, 31], [41], [41, 5, 9], [50, 51, 52, 53, 54], [60, 9], [61]]
CASES = [  # (seed, prompt lengths of the batch, beams)
    (0, [9, 4, 12, 7], 5), (1, [6, 11, 3], 5), (2, [10, 10, 5, 8, 2], 5), (3, [7, 12], 3), (4, [5, 9, 6], 4),
]
MAX_NEW_TOKENS = 16
OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "beam_scores_430.json")


def build_case(seed, lengths):
    """(tiny OPT with seeded weights, inputs_embeds (B, T, H) left-padded, attention_mask (B, T))."""
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
                       max_position_embeddings=128, word_embed_proj_dim=HIDDEN, bos_token_id=EOS, eos_token_id=EOS,
                       pad_token_id=1)
    lm = OPTForCausalLM(config).eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, param in sorted(lm.named_parameters()):
            if name.endswith("layer_norm.weight"):
                param.fill_(1.0)
            elif name.endswith("layer_norm.bias"):
                param.zero_()
            else:  # large weights: peaked next-token distributions, so beams rarely near-tie
                param.copy_(torch.from_numpy(rng.normal(0.0, 0.3, size=tuple(param.shape)).astype(np.float32)))
    width = max(lengths)
    embeds = torch.zeros(len(lengths), width, HIDDEN)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        embeds[row, width - length:] = torch.from_numpy(rng.normal(size=(length, HIDDEN)).astype(np.float32))
        mask[row, width - length:] = 1
    return lm, embeds, mask


def nested_tree(names):
    root = {}
    for name in names:
        node = root
        for token in [EOS] + name + [EOS]:
            node = node.setdefault(token, {})
    return root


def generate_430(lm, embeds, mask, beams):
    """GEMEL's call: beam search, length penalty 1, no early stopping, prefix_allowed_tokens_fn over the tree."""
    tree = nested_tree(NAMES)

    def allowed(batch_id, sent):
        node = tree
        for token in sent.tolist():  # starts with the BOS (= EOS) that 4.30 prepends
            node = node.get(token, {})
        return list(node)

    out = lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS, num_beams=beams,
                      num_return_sequences=1, early_stopping=False, length_penalty=1.0, do_sample=False,
                      prefix_allowed_tokens_fn=allowed, eos_token_id=EOS, pad_token_id=EOS,
                      return_dict_in_generate=True, output_scores=True)
    names = [[t for t in row[1:] if t != EOS] for row in out.sequences.tolist()]  # drop the start token and EOS
    return names, out.sequences_scores.tolist()


def main():
    import transformers

    assert transformers.__version__ == "4.30.2", f"run with transformers 4.30.2, not {transformers.__version__}"
    results = []
    for seed, lengths, beams in CASES:
        lm, embeds, mask = build_case(seed, lengths)
        with torch.no_grad():
            names, scores = generate_430(lm, embeds, mask, beams)
        results.append({"seed": seed, "lengths": lengths, "beams": beams, "names": names, "scores": scores})
    with open(OUTPUT, "w", encoding="utf-8") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "max_new_tokens": MAX_NEW_TOKENS, "cases": results}, f, indent=1)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()

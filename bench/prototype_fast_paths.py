"""Prototype (not used by the project): changes to the fast paths of decoding.py and model.py, measured on demo data.

The benchmark (bench/pipeline.py) showed the fast evaluation path at about 2x the straightforward one on the tiny
OPT at 16 demonstrations, and a profile of it puts the time in (1) the prefill's attention and (2) work over the whole
vocabulary at every decoding step. This script patches the project's functions in memory, one change at a time (the
project's files are untouched), and measures:

  unpadded prefill   `_prefill` runs each example's prompt alone (no padding, so SDPA takes its causal path
                     without a mask, which skips the upper triangle; with a padding mask the CPU kernel computes every
                     block), then left-pads the per-example caches into the batch cache the decoding loop expects.
                     The logits are then exactly those of a batch-1 prefill, as in transformers' generate() one
                     example at a time.
  sparse candidates  `_beam_search` picks the top 2K candidates from the tree's allowed (beam, token) pairs only,
                     instead of masking a (B*K, V) tensor, adding the running scores to all of it and running top-k
                     over K*V entries per example. log_softmax stays over the whole vocabulary (the normaliser needs
                     it), so every candidate's score is the same float as before; only the set handed to top-k shrinks.
  gathered targets   (training) GEMEL.forward asks the LM for logits at positions first..last of the whole batch
                     (`logits_to_keep`, one range for every row): with right padding and prompts of different lengths
                     that range spans the spread of prompt lengths in the batch, mostly non-target positions. Instead,
                     run the base model, gather the hidden states of the positions that predict a target token, and
                     apply the LM head to those rows only. Same loss (mean over target tokens).

  python bench/prototype_fast_paths.py                 # tiny OPT, 16 demonstrations, 80 dev examples
  python bench/prototype_fast_paths.py --train --train_examples 48   # the training change instead
  python bench/prototype_fast_paths.py --demos 8 --lm smollm2-135m --dev 24

Prints samples/s of each variant, best of --repeats, and its agreement with the straightforward path (evaluation) or
the largest difference of its loss from GEMEL.forward's (training).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline as bench  # noqa: E402  (puts the repository on sys.path)

import decoding  # noqa: E402
from decoding import _NOT_A_CANDIDATE, FELL_OFF_TREE_SCORE, _answer_tokens, _grow, _reorder_beams  # noqa: E402

ORIGINAL_PREFILL = decoding._prefill
ORIGINAL_BEAM_SEARCH = decoding._beam_search


# ----------------------------------------------------------------------------------------------- unpadded prefill

def prefill_unpadded(lm, inputs_embeds, attention_mask):
    """decoding._prefill's contract, computed one example at a time without padding; caches left-padded afterwards."""
    batch_size, width = attention_mask.shape
    lengths = attention_mask.sum(-1).tolist()
    if min(lengths) == width:  # nothing padded: the batched prefill already runs without a mask
        return ORIGINAL_PREFILL(lm, inputs_embeds, attention_mask)
    logits, caches = [], []
    for row, length in enumerate(lengths):
        positions = torch.arange(length, device=inputs_embeds.device)[None]
        out = lm(inputs_embeds=inputs_embeds[row:row + 1, width - length:], position_ids=positions, use_cache=True,
                 **decoding._last_logits_only(lm))
        logits.append(out.logits[:, -1].float())
        caches.append(out.past_key_values)
    cache = caches[0]
    for index, layer in enumerate(cache.layers):
        for name in ("keys", "values"):
            first = getattr(layer, name)  # (1, heads, length, head_dim)
            padded = first.new_zeros(batch_size, first.shape[1], width, first.shape[3])
            for row, other in enumerate(caches):
                states = getattr(other.layers[index], name)
                padded[row, :, width - states.shape[2]:] = states[0]
            setattr(layer, name, padded)  # (B, heads, width, head_dim), zeros under the padding (masked)
    positions = torch.tensor(lengths, device=inputs_embeds.device)  # next position of each example
    return torch.cat(logits), cache, attention_mask.long(), positions


# ----------------------------------------------------------------------------------------------- sparse candidates

def sparse_top_candidates(log_probs, running_scores, tree, states, beams, num_candidates):
    """torch.topk over the allowed (beam, token) pairs of each example; returns (scores, beam * V + token) (B, 2K).

    Same values as decoding's dense path: log_probs at allowed pairs plus the beam's running score; a row with nothing
    allowed offers EOS at FELL_OFF_TREE_SCORE. Slots beyond an example's candidates hold -inf (index 0), as the dense
    path's masked entries do.
    """
    num_rows, vocab_size = log_probs.shape
    batch_size, device, eos = num_rows // beams, log_probs.device, tree.eos_token_id
    rows, tokens = (np.asarray(a, dtype=np.int64) for a in tree.allowed_indices(np.asarray(states, dtype=np.int64)))
    fell_off = np.flatnonzero(np.bincount(rows, minlength=num_rows) == 0)
    if len(fell_off):
        keys = np.concatenate([rows * vocab_size + tokens, fell_off * vocab_size + eos])
        order = np.argsort(keys, kind="stable")  # keep (row, token) order, the dense tensor's flat order
        rows, tokens = keys[order] // vocab_size, keys[order] % vocab_size
    rows_t, tokens_t = torch.from_numpy(rows).to(device), torch.from_numpy(tokens).to(device)
    values = log_probs[rows_t, tokens_t]
    if len(fell_off):
        off = torch.from_numpy(np.isin(rows, fell_off)).to(device)
        values = torch.where(off, torch.full_like(values, FELL_OFF_TREE_SCORE), values)
    totals = values + running_scores.reshape(-1)[rows_t]  # the dense path's (log_prob + running score), same floats

    example = rows // beams
    counts = np.bincount(example, minlength=batch_size)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    width = max(int(counts.max()), num_candidates)
    example_t, slot_t = torch.from_numpy(example).to(device), torch.from_numpy(slot).to(device)
    packed = torch.full((batch_size, width), float("-inf"), device=device)
    packed[example_t, slot_t] = totals
    packed_index = torch.zeros((batch_size, width), dtype=torch.long, device=device)
    packed_index[example_t, slot_t] = (rows_t % beams) * vocab_size + tokens_t
    cand_scores, picked = torch.topk(packed, k=num_candidates)
    return cand_scores, torch.take_along_dim(packed_index, picked, dim=1)


def beam_search_sparse(lm, tree, logits, cache, mask, positions, num_beams, max_new_tokens, length_penalty,
                       length_offset):
    """decoding._beam_search with the candidate selection of sparse_top_candidates; everything else unchanged."""
    batch_size, vocab_size = logits.shape
    device, eos, beams = logits.device, tree.eos_token_id, num_beams
    prompt_length = cache.get_seq_length()
    num_candidates = 2 * beams
    in_top_beams = torch.arange(num_candidates, device=device) < beams
    example_offset = torch.arange(batch_size, device=device)[:, None] * beams

    cache.batch_repeat_interleave(beams)
    mask = None if mask is None else mask.repeat_interleave(beams, dim=0)
    positions = positions.repeat_interleave(beams)
    log_probs = torch.log_softmax(logits, dim=-1).repeat_interleave(beams, dim=0)
    states = np.full(batch_size * beams, tree.start_state(), dtype=np.int64)

    running_tokens = torch.full((batch_size, beams, max_new_tokens), eos, dtype=torch.long, device=device)
    running_scores = torch.zeros((batch_size, beams), device=device)
    running_scores[:, 1:] = _NOT_A_CANDIDATE
    finished_tokens = running_tokens.clone()
    finished_scores = torch.full((batch_size, beams), _NOT_A_CANDIDATE, device=device)
    is_finished = torch.zeros((batch_size, beams), dtype=torch.bool, device=device)
    may_improve = torch.ones((batch_size, 1), dtype=torch.bool, device=device)

    for step in range(max_new_tokens):
        if step > 0:
            mask = _grow(mask)
            logits, cache = decoding._forward_token(lm, running_tokens[:, :, step - 1].reshape(-1), cache, mask,
                                                    positions)
            log_probs = torch.log_softmax(logits, dim=-1)
            positions = positions + 1
        cand_scores, cand_index = sparse_top_candidates(log_probs, running_scores, tree, states, beams, num_candidates)
        cand_beam, cand_token = cand_index // vocab_size, cand_index % vocab_size
        cand_tokens = torch.take_along_dim(running_tokens, cand_beam[:, :, None], dim=1)
        cand_tokens[:, :, step] = cand_token
        ends = (cand_token == eos) | (step + 1 >= max_new_tokens)

        keep_scores = cand_scores + ends.float() * _NOT_A_CANDIDATE
        keep = torch.topk(keep_scores, k=beams)[1]
        running_tokens = torch.take_along_dim(cand_tokens, keep[:, :, None], dim=1)
        running_scores = torch.take_along_dim(keep_scores, keep, dim=1)
        parent_row = (torch.take_along_dim(cand_beam, keep, dim=1) + example_offset).view(-1)

        just_finished = ends & in_top_beams[None, :]
        new_scores = cand_scores / ((step + 1 + length_offset) ** length_penalty)
        new_scores = new_scores + (~may_improve).float() * _NOT_A_CANDIDATE
        new_scores = new_scores + (~just_finished).float() * _NOT_A_CANDIDATE
        merged_scores = torch.cat([finished_scores, new_scores], dim=1)
        best = torch.topk(merged_scores, k=beams)[1]
        finished_tokens = torch.take_along_dim(torch.cat([finished_tokens, cand_tokens], dim=1), best[:, :, None], 1)
        finished_scores = torch.take_along_dim(merged_scores, best, dim=1)
        is_finished = torch.take_along_dim(torch.cat([is_finished, just_finished], dim=1), best, dim=1)

        _reorder_beams(cache, parent_row, prompt_length)
        states = tree.advance(states[parent_row.cpu().numpy()], running_tokens[:, :, step].reshape(-1).cpu().numpy())

        best_running = running_scores[:, :1] / ((step + 1 + length_offset) ** length_penalty)
        worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True)[0], _NOT_A_CANDIDATE)
        may_improve = may_improve & (best_running > worst_finished).any(dim=-1, keepdim=True)
        if not bool(may_improve.any()) or bool(ends.all()):
            break

    tokens = [_answer_tokens(row, eos) for row in finished_tokens[:, 0].tolist()]
    return decoding.BeamSearchOutput(tokens=tokens, scores=finished_scores[:, 0].tolist())


# ----------------------------------------------------------------------------------------------- gathered targets

def forward_gathered(model, batch):
    """GEMEL.forward's loss with the LM head applied only at positions that predict a target token."""
    import torch.nn.functional as F

    device = model.linear.weight.device
    labels = batch.labels.to(device)
    hidden = model.lm.base_model(inputs_embeds=model.embed(batch), attention_mask=batch.attention_mask.to(device),
                                 use_cache=False).last_hidden_state  # (B, T, H) after the final norm
    targets = labels[:, 1:]                                   # position t predicts token t + 1
    rows, cols = (targets != -100).nonzero(as_tuple=True)     # (N,) each
    logits = model.lm.get_output_embeddings()(hidden[rows, cols]).float()  # (N, V)
    return F.cross_entropy(logits, targets[rows, cols])


def train_variants(args, model, data, train):
    from model import GEMEL

    original = GEMEL.forward
    with torch.no_grad():  # same loss, eval mode (no dropout)
        lengths = [data.builder.prompt_length(ex, d, with_target=True) for ex, d in zip(train.examples, train.demos)]
        diff = 0.0
        for idx in bench.length_bucketed_batches(lengths, args.train_bs, shuffle=False):
            batch = data.builder.collate([train.examples[i] for i in idx], [train.demos[i] for i in idx],
                                         train.images[idx], training=True)
            diff = max(diff, abs(float(original(model, batch)) - float(forward_gathered(model, batch))))

    def with_forward(forward):
        def run():
            GEMEL.forward = forward
            try:
                bench.fast_train(model, data.builder, train, args.train_bs)
            finally:
                GEMEL.forward = original
        return run

    runs = {"fast (model.py as is)": (with_forward(original), None),
            "+ gathered targets": (with_forward(forward_gathered), None)}
    for _, (fn, _) in runs.items():
        fn()  # warm-up
    best, _ = bench.time_alternately(runs, args.repeats, torch.device("cpu"))
    print(f"\n{args.lm}, {args.demos} demonstrations, {len(train.examples)} training examples, train_bs "
          f"{args.train_bs}, {torch.get_num_threads()} thread(s); largest loss difference {diff:.2e}")
    print(f"{'variant':<26} {'samples/s':>10} {'vs as is':>9}")
    for name, seconds in best.items():
        print(f"{name:<26} {len(train.examples) / seconds:>10.2f} {best['fast (model.py as is)'] / seconds:>8.2f}x")


# ----------------------------------------------------------------------------------------------- driver

VARIANTS = {
    "fast (decoding.py as is)": (ORIGINAL_PREFILL, ORIGINAL_BEAM_SEARCH),
    "+ unpadded prefill": (prefill_unpadded, ORIGINAL_BEAM_SEARCH),
    "+ sparse candidates": (ORIGINAL_PREFILL, beam_search_sparse),
    "+ both": (prefill_unpadded, beam_search_sparse),
}


def run_variant(variant, fn):
    decoding._prefill, decoding._beam_search = VARIANTS[variant]
    try:
        return fn()
    finally:
        decoding._prefill, decoding._beam_search = ORIGINAL_PREFILL, ORIGINAL_BEAM_SEARCH


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", default="tiny-opt", choices=["tiny-opt", "smollm2-135m"], help="LM")
    parser.add_argument("--demos", type=int, default=16, help="demonstrations per example")
    parser.add_argument("--dev", type=int, default=80, help="dev examples")
    parser.add_argument("--eval_bs", type=int, default=16, help="fast path batch size")
    parser.add_argument("--train", action="store_true", help="measure the training change instead")
    parser.add_argument("--train_examples", type=int, default=48, help="training examples (--train)")
    parser.add_argument("--train_bs", type=int, default=8, help="training batch size (--train)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per variant; the best is kept")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (see bench/pipeline.py)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    tokenizer = bench.load_tokenizer()
    data = bench.DemoData(tokenizer, dev_limit=args.dev, train_limit=args.train_examples if args.train else 1)
    model = bench.build_model(args.lm, len(tokenizer), torch.float32, "cpu")
    dev, train = data.splits(args.demos)
    if args.train:
        return train_variants(args, model, data, train)
    straight = lambda: bench.straightforward_eval(model, data.builder, tokenizer, dev, data.nested, args.dev)  # noqa
    runs = {"straightforward": (straight, 1)}
    for variant in VARIANTS:
        runs[variant] = (lambda v=variant: run_variant(v, lambda: bench.fast_eval(
            model, data.builder, tokenizer, dev, data.tree, args.eval_bs)), None)
    for variant in VARIANTS:  # warm-up
        run_variant(variant, lambda: bench.fast_eval(model, data.builder, tokenizer, bench.Split(
            "dev", dev.examples[:2], dev.demos[:2], dev.images[:2]), data.tree, 2))
    best, preds = bench.time_alternately(runs, args.repeats, torch.device("cpu"))
    reference = preds["straightforward"]
    print(f"\n{args.lm}, {args.demos} demonstrations, {args.dev} dev examples, eval_bs {args.eval_bs}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'variant':<26} {'samples/s':>10} {'vs straightforward':>19} {'agreement':>10}")
    for name, seconds in best.items():
        agree = sum(a == b for a, b in zip(preds[name], reference)) / len(reference)
        print(f"{name:<26} {args.dev / seconds:>10.2f} {best['straightforward'] / seconds:>18.1f}x "
              f"{100 * agree:>9.1f}%")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s)")

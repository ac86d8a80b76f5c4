"""Constrained decoding of entity names: the answer must be a path of the prefix tree (trie.PrefixTree).

Two paths with the same results:
- `generate_reference`: the straightforward one, transformers' `generate` with `PrefixTreeLogitsProcessor`.
  Beam search there copies the prompt to every beam before the first forward pass, so the prompt is prefilled
  num_beams times.
- `constrained_beam_search`: the fast one (issue 5). The prompt is prefilled once per example, its KV cache and last
  logits are expanded to the beams, and all beams of all examples are decoded together; the tree mask is applied to
  the whole batch in one scatter per step.

Why the fast path equals the reference (transformers 5.x, `_beam_search` / `_sample` in generation/utils.py):
- Inputs: generate() starts from `inputs_embeds` with an empty `input_ids` (B, 0), computes
  position_ids = cumsum(attention_mask) - 1 (0 on padding), drops an all-ones mask, keeps only the last position's
  logits (`logits_to_keep=1`), and for each new token appends position last + 1 and a 1 to the mask. The fast path
  builds the same position_ids / mask and hands them to the model's forward, for OPT and LLaMA alike.
- Beams: generate() repeats the prompt num_beams times, so the prefill gives num_beams identical rows per example;
  expanding one row's cache and logits (`DynamicCache.batch_repeat_interleave`) gives the same values, up to the
  float rounding of running the prefill with a smaller batch (about 1e-6 on the logits on CPU float32). Beams are
  reordered like `DynamicCache.reorder_cache`, skipping the prompt positions, which are equal within an example.
- Bookkeeping: the loop below repeats transformers' tensor algorithm step by step, in the same float32 operations
  and tensor layouts: log_softmax of the raw logits, then the tree mask (no renormalisation); top 2*num_beams
  candidates over (num_beams * vocab); EOS (or max length) candidates finish only when ranked in the top num_beams;
  finished score = sum of log-probs / generated_len ** length_penalty (the EOS counted); the same -1e9 sentinels and
  the same early-stop heuristic for early_stopping=False. Ties are broken by the same `torch.topk` calls on tensors
  of the same shape, so only near-ties closer than the prefill's rounding can resolve differently.
- num_beams=1 means greedy decoding, as in transformers (generate() runs `_sample`, not beam search, for one beam):
  at each step the allowed token with the highest raw logit; a row stops at EOS or after max_new_tokens. Its score is
  the same length-normalised sum of log-probabilities as a finished beam's.
"""
import inspect
from dataclasses import dataclass

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import DynamicLayer

# Score given to EOS in a row whose allowed set is empty (the row fell off the tree, which normal decoding never does):
# finite so that nothing becomes NaN, low so that such a beam finishes and ranks below every real name.
FELL_OFF_TREE_SCORE = -1.0e4
# transformers' beam-search sentinel for "not a candidate" (added, never multiplied, so -inf stays -inf).
_NOT_A_CANDIDATE = -1.0e9


@dataclass
class BeamSearchOutput:
    tokens: list[list[int]]   # best hypothesis per example, answer tokens without the final EOS
    scores: list[float]       # its length-normalised score


class Unconstrained:
    """Stands in for a PrefixTree when decoding is not constrained (--no-use_prefix_tree): every token is allowed."""

    def __init__(self, eos_token_id):
        self.eos_token_id = eos_token_id

    def start_state(self):
        return 0

    def advance(self, states, tokens):
        return np.zeros(len(tokens), dtype=np.int64)


def mask_to_tree(scores, tree, states):
    """Keep in each row of `scores` (N, V) only the tokens the tree allows after that row's state (N,); others -inf.

    A row with nothing allowed (state -1 or a leaf) gets only EOS, at FELL_OFF_TREE_SCORE. One scatter for the batch.
    """
    if isinstance(tree, Unconstrained):
        return scores
    num_rows, vocab_size = scores.shape
    rows, tokens = (np.asarray(a, dtype=np.int64) for a in tree.allowed_indices(np.asarray(states, dtype=np.int64)))
    if len(tokens) and int(tokens.max()) >= vocab_size:
        raise ValueError(f"the prefix tree holds token id {int(tokens.max())} but the LM has only {vocab_size} "
                         f"logits: the tree was built with another tokenizer; rebuild it for this LM")
    allowed = torch.zeros((num_rows, vocab_size), dtype=torch.bool, device=scores.device)
    allowed[torch.from_numpy(rows).to(scores.device), torch.from_numpy(tokens).to(scores.device)] = True
    masked = scores.masked_fill(~allowed, float("-inf"))
    fell_off = ~allowed.any(dim=-1)  # (N,)
    masked[:, tree.eos_token_id] = torch.where(fell_off, FELL_OFF_TREE_SCORE, masked[:, tree.eos_token_id])
    return masked


class PrefixTreeLogitsProcessor(LogitsProcessor):
    """For transformers' own generate(): masks every row to the tokens the tree allows after that row's answer so far.

    The answer start is the input_ids length at the first call, so it works whether or not the transformers version
    puts a start token in front of the generated output (4.30 did, 5.x does not). Use one processor per generate()
    call. Tree states are cached per answer prefix, each new prefix costs one `tree.advance` from its parent.
    """

    def __init__(self, tree):
        self.tree = tree
        self.answer_start = None               # input_ids length when the answer begins
        self._states = {(): tree.start_state()}  # answer prefix (tuple of ids) -> tree state

    def __call__(self, input_ids, scores):
        if self.answer_start is None:
            self.answer_start = input_ids.shape[1]
        if input_ids.shape[1] < self.answer_start:
            raise ValueError("PrefixTreeLogitsProcessor was reused for another generate() call; make a new one")
        answers = input_ids[:, self.answer_start:].tolist()
        states = np.array([self._state_of(tuple(answer)) for answer in answers], dtype=np.int64)
        return mask_to_tree(scores, self.tree, states)

    def _state_of(self, prefix):
        state = self._states.get(prefix)
        if state is None:  # the parent prefix was seen at the previous step, so this recursion is one level deep
            parent = self._state_of(prefix[:-1])
            state = int(self.tree.advance(np.array([parent]), np.array([prefix[-1]]))[0])
            self._states[prefix] = state
        return state


def _answer_tokens(generated, eos_token_id):
    """Answer tokens of one generated row: everything before the first EOS (the row may be filled with EOS after)."""
    return generated[:generated.index(eos_token_id)] if eos_token_id in generated else generated


@torch.no_grad()
def generate_reference(lm, inputs_embeds, attention_mask, tree, num_beams=5, max_new_tokens=32) -> BeamSearchOutput:
    """The straightforward path: transformers' generate() with the tree as a logits processor.

    inputs_embeds (B, T, H) in the LM's dtype, attention_mask (B, T) left-padded 0/1. Scores use length penalty 1.
    Logit-changing entries of `lm.generation_config` that are not neutralised here (forced or suppressed tokens)
    would apply to this path only; OPT's and LLaMA's configs have none.
    """
    eos = tree.eos_token_id
    processor = PrefixTreeLogitsProcessor(tree)  # with Unconstrained, it only records the answer start
    settings = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False, num_return_sequences=1,
                    eos_token_id=eos, pad_token_id=eos, return_dict_in_generate=True, output_scores=True,
                    repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0)
    if num_beams > 1:
        settings.update(early_stopping=False, length_penalty=1.0)
    else:
        settings.update(output_logits=True)  # greedy reports processed scores only; the score needs raw logits
    out = lm.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                      generation_config=GenerationConfig(**settings),
                      logits_processor=LogitsProcessorList([processor]))
    generated = out.sequences[:, processor.answer_start:]  # (B, L) answer tokens, EOS-filled after the end
    tokens = [_answer_tokens(row, eos) for row in generated.tolist()]
    if num_beams > 1:
        return BeamSearchOutput(tokens=tokens, scores=out.sequences_scores.float().tolist())

    # Greedy: sum of the chosen tokens' log-probabilities (EOS included) over the answer length, step by step in
    # float32 like the fast path.
    lengths = torch.tensor([len(t) + (len(t) < generated.shape[1]) for t in tokens])  # +1 for the EOS when present
    total = torch.zeros(len(tokens))
    for step, logits in enumerate(out.logits[:generated.shape[1]]):
        log_probs = torch.log_softmax(logits.float().cpu(), dim=-1)
        chosen = log_probs.gather(1, generated[:, step:step + 1].cpu()).squeeze(1)
        total = total + torch.where(step < lengths, chosen, 0.0)
    return BeamSearchOutput(tokens=tokens, scores=(total / lengths.float()).tolist())


def _last_logits_only(lm):
    """generate() computes only the last position's logits when the model supports it; do the same."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(lm.forward).parameters else {}


def _prefill(lm, inputs_embeds, attention_mask):
    """Run the prompt once, as generate() does.

    Returns the last logits (B, V) float32, the cache, the mask (None when all ones) and the next positions (B,)."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # (B, T)
    mask = None if bool((attention_mask == 1).all()) else attention_mask.long()  # generate() drops an all-ones mask
    out = lm(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids, use_cache=True,
             **_last_logits_only(lm))
    return out.logits[:, -1].float(), out.past_key_values, mask, position_ids[:, -1] + 1


def _forward_token(lm, tokens, cache, mask, positions):
    """One decoding step for every row: tokens (N,) at positions (N,); mask (N, past + 1) or None."""
    out = lm(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None], past_key_values=cache,
             use_cache=True, **_last_logits_only(lm))
    return out.logits[:, -1].float(), out.past_key_values


def _reorder_beams(cache, rows, prompt_length):
    """cache.reorder_cache(rows), but moving only the generated positions.

    The prompt positions of all beams of an example are copies of one prefill row, and `rows` never leaves its
    example, so reordering them changes nothing; skipping them saves copying the whole prompt cache every step (on CPU
    the copy costs more than the forward pass). Falls back to the library's reorder for other cache layer types.
    """
    layers = getattr(cache, "layers", None)
    if layers is None or any(type(layer) is not DynamicLayer for layer in layers):
        cache.reorder_cache(rows)
        return
    for layer in layers:
        if layer.get_seq_length() > prompt_length:  # (N, heads, prompt + generated, head_dim)
            for states in (layer.keys, layer.values):
                generated = states[:, :, prompt_length:]
                generated.copy_(generated.index_select(0, rows))  # index_select: far faster than [rows] on a view


def _grow(mask):
    """The attention mask after one more token: a column of ones (None stays None, as in generate())."""
    return None if mask is None else torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)


@torch.no_grad()
def constrained_beam_search(lm, inputs_embeds, attention_mask, tree, num_beams=5, max_new_tokens=32,
                            length_penalty=1.0, length_offset=0) -> BeamSearchOutput:
    """The fast path: one prefill per example, then all beams of all examples decoded together under the tree.

    inputs_embeds (B, T, H) in the LM's dtype; attention_mask (B, T) left-padded 0/1; the answer starts right after
    the prompt. A finished hypothesis scores sum of log-probs (EOS included) / (generated_len + length_offset) **
    length_penalty; the early-stop heuristic uses the same length. length_offset=0 reproduces transformers 5.x
    (`generate_reference`); length_offset=1 reproduces the length normalisation of transformers 4.30 as used by
    GEMEL's original code, whose output carried a leading BOS so that every hypothesis was one token longer.
    num_beams=1 is greedy decoding (see the module docstring). A name longer than max_new_tokens comes back cut at
    max_new_tokens tokens, as in transformers.
    """
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError(f"num_beams ({num_beams}) and max_new_tokens ({max_new_tokens}) must be at least 1")
    logits, cache, mask, positions = _prefill(lm, inputs_embeds, attention_mask)
    search = _greedy if num_beams == 1 else _beam_search
    return search(lm, tree, logits, cache, mask, positions, num_beams, max_new_tokens, length_penalty, length_offset)


def _greedy(lm, tree, logits, cache, mask, positions, num_beams, max_new_tokens, length_penalty, length_offset):
    """Greedy decoding as transformers' `_sample` with do_sample=False: argmax of the masked raw logits."""
    batch_size, device, eos = logits.shape[0], logits.device, tree.eos_token_id
    states = np.full(batch_size, tree.start_state(), dtype=np.int64)
    generated = torch.full((batch_size, max_new_tokens), eos, dtype=torch.long, device=device)
    unfinished = torch.ones(batch_size, dtype=torch.bool, device=device)
    total = torch.zeros(batch_size, device=device)                      # sum of chosen log-probs
    lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # answer length, EOS included
    for step in range(max_new_tokens):
        if step > 0:
            mask = _grow(mask)
            logits, cache = _forward_token(lm, generated[:, step - 1], cache, mask, positions)
            positions = positions + 1
        chosen = mask_to_tree(logits, tree, states).argmax(dim=-1)  # (B,)
        chosen_log_prob = torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None]).squeeze(1)
        chosen = torch.where(unfinished, chosen, eos)  # finished rows are filled with EOS (the pad id)
        total = total + torch.where(unfinished, chosen_log_prob, 0.0)
        lengths = lengths + unfinished.long()
        generated[:, step] = chosen
        unfinished = unfinished & (chosen != eos)
        states = tree.advance(states, chosen.cpu().numpy())
        if not bool(unfinished.any()):
            break
    scores = total / (lengths + length_offset).float() ** length_penalty
    tokens = [_answer_tokens(row, eos) for row in generated.tolist()]
    return BeamSearchOutput(tokens=tokens, scores=scores.tolist())


def _beam_search(lm, tree, logits, cache, mask, positions, num_beams, max_new_tokens, length_penalty, length_offset):
    """Beam search as transformers' `_beam_search` (early_stopping=False), starting from the prefill's last logits."""
    batch_size, vocab_size = logits.shape
    device, eos, beams = logits.device, tree.eos_token_id, num_beams
    prompt_length = cache.get_seq_length()
    num_candidates = 2 * beams  # transformers keeps (1 + number of EOS ids) * num_beams candidates, at least 2x
    in_top_beams = torch.arange(num_candidates, device=device) < beams  # (2K,) only these may finish
    example_offset = torch.arange(batch_size, device=device)[:, None] * beams  # (B, 1)

    # Expand the prompt's cache, mask, positions and logits to the beams: row b * K + k is beam k of example b.
    cache.batch_repeat_interleave(beams)
    mask = None if mask is None else mask.repeat_interleave(beams, dim=0)  # (B*K, T)
    positions = positions.repeat_interleave(beams)                          # (B*K,)
    log_probs = torch.log_softmax(logits, dim=-1).repeat_interleave(beams, dim=0)  # (B*K, V)
    states = np.full(batch_size * beams, tree.start_state(), dtype=np.int64)

    # Running beams: answer tokens so far and summed log-probs; only beam 0 starts live, so that the K beams of
    # the first step are K different tokens.
    running_tokens = torch.full((batch_size, beams, max_new_tokens), eos, dtype=torch.long, device=device)
    running_scores = torch.zeros((batch_size, beams), device=device)
    running_scores[:, 1:] = _NOT_A_CANDIDATE
    # Finished hypotheses, best first: tokens (EOS-filled after the end), normalised scores, and whether real.
    finished_tokens = running_tokens.clone()
    finished_scores = torch.full((batch_size, beams), _NOT_A_CANDIDATE, device=device)
    is_finished = torch.zeros((batch_size, beams), dtype=torch.bool, device=device)
    may_improve = torch.ones((batch_size, 1), dtype=torch.bool, device=device)

    for step in range(max_new_tokens):
        if step > 0:
            mask = _grow(mask)
            logits, cache = _forward_token(lm, running_tokens[:, :, step - 1].reshape(-1), cache, mask, positions)
            log_probs = torch.log_softmax(logits, dim=-1)
            positions = positions + 1
        log_probs = mask_to_tree(log_probs, tree, states)  # (B*K, V)
        totals = (log_probs.view(batch_size, beams, vocab_size) + running_scores[:, :, None]).view(batch_size, -1)

        # Top 2K continuations over all beams of an example.
        cand_scores, cand_index = torch.topk(totals, k=num_candidates)  # (B, 2K)
        cand_beam, cand_token = cand_index // vocab_size, cand_index % vocab_size
        cand_tokens = torch.take_along_dim(running_tokens, cand_beam[:, :, None], dim=1)  # (B, 2K, max_new)
        cand_tokens[:, :, step] = cand_token
        ends = (cand_token == eos) | (step + 1 >= max_new_tokens)  # (B, 2K) EOS or max length

        # The best K candidates that do not end keep running.
        keep_scores = cand_scores + ends.float() * _NOT_A_CANDIDATE
        keep = torch.topk(keep_scores, k=beams)[1]  # (B, K)
        running_tokens = torch.take_along_dim(cand_tokens, keep[:, :, None], dim=1)
        running_scores = torch.take_along_dim(keep_scores, keep, dim=1)
        parent_row = (torch.take_along_dim(cand_beam, keep, dim=1) + example_offset).view(-1)  # (B*K,)

        # Ending candidates ranked in the top K join the finished hypotheses if they beat the worst kept one.
        just_finished = ends & in_top_beams[None, :]
        new_scores = cand_scores / ((step + 1 + length_offset) ** length_penalty)
        new_scores = new_scores + (~may_improve).float() * _NOT_A_CANDIDATE
        new_scores = new_scores + (~just_finished).float() * _NOT_A_CANDIDATE
        merged_scores = torch.cat([finished_scores, new_scores], dim=1)  # (B, 3K)
        best = torch.topk(merged_scores, k=beams)[1]
        finished_tokens = torch.take_along_dim(torch.cat([finished_tokens, cand_tokens], dim=1), best[:, :, None], 1)
        finished_scores = torch.take_along_dim(merged_scores, best, dim=1)
        is_finished = torch.take_along_dim(torch.cat([is_finished, just_finished], dim=1), best, dim=1)

        # Move cache rows and tree states to the kept beams' parents, then read their new tokens.
        _reorder_beams(cache, parent_row, prompt_length)
        states = tree.advance(states[parent_row.cpu().numpy()], running_tokens[:, :, step].reshape(-1).cpu().numpy())

        # transformers' heuristic for early_stopping=False: stop an example once its best running beam, normalised
        # by the current length, cannot beat its worst finished hypothesis.
        best_running = running_scores[:, :1] / ((step + 1 + length_offset) ** length_penalty)
        worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True)[0], _NOT_A_CANDIDATE)
        may_improve = may_improve & (best_running > worst_finished).any(dim=-1, keepdim=True)
        if not bool(may_improve.any()) or bool(ends.all()):
            break

    tokens = [_answer_tokens(row, eos) for row in finished_tokens[:, 0].tolist()]
    return BeamSearchOutput(tokens=tokens, scores=finished_scores[:, 0].tolist())

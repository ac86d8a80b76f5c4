"""Constrained decoding of entity names: the answer must be a path of the prefix tree (trie.PrefixTree).

Two paths with the same results:
- `generate_reference`: the straightforward one, transformers' `generate` with `PrefixTreeLogitsProcessor`.
  Beam search there copies the prompt to every beam before the first forward pass, so the prompt is prefilled
  num_beams times.
- `constrained_beam_search`: the fast one. Each prompt is prefilled once (on CPU one unpadded prompt at a
  time, on a GPU as one batch) into a cache that keeps one copy of it for all its beams (beam_cache.py); all beams
  of all examples are then decoded together, each step ranking only the (beam, token) pairs the tree allows; an
  example whose result can no longer change leaves the batch.

Why the fast path equals the reference (transformers 5.x, `_beam_search` / `_sample` in generation/utils.py):
- Inputs: generate() starts from `inputs_embeds` with an empty `input_ids` (B, 0), computes
  position_ids = cumsum(attention_mask) - 1 (0 on padding), drops an all-ones mask, keeps only the last position's
  logits (`logits_to_keep=1`), and for each new token appends position last + 1 and a 1 to the mask. The fast path
  builds the same position_ids / mask and hands them to the model's forward, for OPT and LLaMA alike.
- Beams: generate() repeats the prompt num_beams times, so the prefill gives num_beams identical rows per example;
  one prefill row shared by the beams gives the same values, up to the float rounding of another batch shape and of
  computing attention over the shared prompt with matmuls (about 1e-6 on the logits on CPU float32). Beams are
  reordered like `DynamicCache.reorder_cache`, skipping the prompt positions, which are equal within an example.
- Bookkeeping: the loop below repeats transformers' tensor algorithm step by step, with the same float32 values:
  log_softmax of the raw logits, then the tree mask (no renormalisation); top 2*num_beams candidates over
  (num_beams * vocab), ranked among the allowed pairs kept in the dense tensor's order; EOS (or max length)
  candidates finish only when ranked in the top num_beams; finished score = sum of log-probs / generated_len
  (length penalty 1, the EOS counted); the same -1e9 sentinels and the same early-stop heuristic for
  early_stopping=False. Once that heuristic stops an example, transformers keeps decoding it without changing its
  result; here it leaves the batch. Only near-ties closer than the prefill's rounding can resolve differently.
- num_beams=1 means greedy decoding, as in transformers (generate() runs `_sample`, not beam search, for one beam):
  at each step the allowed token with the highest raw logit; a row stops at EOS or after max_new_tokens. Its score is
  the same length-normalised sum of log-probabilities as a finished beam's.
"""
from dataclasses import dataclass

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from mel.decoding import beam_cache

# Score given to EOS in a row whose allowed set is empty (the row fell off the tree, which normal decoding never does):
# finite so that nothing becomes NaN, low so that such a beam finishes and ranks below every real name.
FELL_OFF_TREE_SCORE = -1.0e4
# transformers' beam-search sentinel for "not a candidate" (added, never multiplied, so -inf stays -inf).
_NOT_A_CANDIDATE = -1.0e9


@dataclass(frozen=True)
class DecodingOptions:
    """How the fast path runs. No setting changes a result (tests/test_decoding.py checks each against the others)."""
    share_prompt: bool = True          # one prompt cache per example for all its beams (beam_cache.SharedPromptLayer)
    prefill_each_on: tuple = ("cpu",)  # devices where a padded batch is prefilled one unpadded prompt at a time
    min_shared_prefix: int = 32        # reuse an earlier prompt's keys/values when this many leading positions match
    dense_candidates_above: float = 0.25  # share of allowed (row, token) pairs above which V-wide top-k is cheaper
    retire_at: float = 0.25            # share of the in-flight batch whose results are final at which they leave it


@dataclass
class BeamSearchOutput:
    tokens: list[list[int]]   # best hypothesis per example, answer tokens without the final EOS
    scores: list[float]       # its length-normalised score
    ranked: list[list[tuple[list[int], float]]]  # per example every finished hypothesis (tokens, score), best first


def _ranked_output(tokens, scores, max_new_tokens, finished=None):
    """BeamSearchOutput from per-example lists of hypotheses (best first), keeping only real ones: a hypothesis that
    grew from a sentinel-scored beam (fewer names than beams) scores at most _NOT_A_CANDIDATE / max_new_tokens, far
    below any real average log-probability."""
    real_above = _NOT_A_CANDIDATE / (max_new_tokens + 1)
    finished = finished or [[True] * len(ts) for ts in tokens]
    ranked = [[(t, s) for t, s, ok in zip(ts, ss, fs) if ok and s > real_above] or [(ts[0], ss[0])]  # never empty
              for ts, ss, fs in zip(tokens, scores, finished)]
    return BeamSearchOutput(tokens=[r[0][0] for r in ranked], scores=[r[0][1] for r in ranked], ranked=ranked)


class Unconstrained:
    """Stands in for a PrefixTree when decoding is not constrained (--no-use_prefix_tree): every token is allowed."""

    def __init__(self, eos_token_id):
        self.eos_token_id = eos_token_id

    def start_state(self):
        return 0

    def start_states(self, batch_size):
        return np.zeros(batch_size, dtype=np.int64)

    def advance(self, states, tokens):
        return np.zeros(len(tokens), dtype=np.int64)


def mask_to_tree(scores, tree, states):
    """Keep in each row of `scores` (N, V) only the tokens the tree allows after that row's state (N,); others -inf.

    A row with nothing allowed (state -1 or a leaf) gets only EOS, at FELL_OFF_TREE_SCORE. One scatter for the batch.
    """
    if isinstance(tree, Unconstrained):
        return scores
    rows, tokens = _allowed_pairs(tree, states, scores.shape[1])
    return _mask_from_pairs(scores, rows, tokens, tree.eos_token_id)


def _allowed_pairs(tree, states, vocab_size):
    """The tree's allowed (row, token) pairs for `states`, as int64 arrays in (row, token) order."""
    rows, tokens = (np.asarray(a, dtype=np.int64) for a in tree.allowed_indices(np.asarray(states, dtype=np.int64)))
    if len(tokens) and int(tokens.max()) >= vocab_size:
        raise ValueError(f"the prefix tree holds token id {int(tokens.max())} but the LM has only {vocab_size} "
                         f"logits: the tree was built with another tokenizer; rebuild it for this LM")
    return rows, tokens


def _mask_from_pairs(scores, rows, tokens, eos_token_id):
    allowed = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    allowed[torch.from_numpy(rows).to(scores.device), torch.from_numpy(tokens).to(scores.device)] = True
    masked = scores.masked_fill(~allowed, float("-inf"))
    fell_off = ~allowed.any(dim=-1)  # (N,)
    masked[:, eos_token_id] = torch.where(fell_off, FELL_OFF_TREE_SCORE, masked[:, eos_token_id])
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
    if not hasattr(tree, "start_state"):
        raise ValueError("--decoding reference takes one tree for the whole batch; per-example candidates "
                         "(--use_candidates) decode with --decoding fast")
    eos = tree.eos_token_id
    processor = PrefixTreeLogitsProcessor(tree)  # with Unconstrained, it only records the answer start
    settings = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False, num_return_sequences=num_beams,
                    eos_token_id=eos, pad_token_id=eos, return_dict_in_generate=True, output_scores=True,
                    repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0)
    if num_beams > 1:
        settings.update(early_stopping=False, length_penalty=1.0)
    else:
        settings.update(output_logits=True)  # greedy reports processed scores only; the score needs raw logits
    out = lm.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                      generation_config=GenerationConfig(**settings),
                      logits_processor=LogitsProcessorList([processor]))
    generated = out.sequences[:, processor.answer_start:]  # (B * K, L) answer tokens, EOS-filled after the end
    tokens = [_answer_tokens(row, eos) for row in generated.tolist()]
    if num_beams > 1:
        scores = out.sequences_scores.float().tolist()
        groups = [range(b, b + num_beams) for b in range(0, len(tokens), num_beams)]
        return _ranked_output([[tokens[i] for i in g] for g in groups], [[scores[i] for i in g] for g in groups],
                              max_new_tokens)

    # Greedy: sum of the chosen tokens' log-probabilities (EOS included) over the answer length, step by step in
    # float32 like the fast path.
    lengths = torch.tensor([len(t) + (len(t) < generated.shape[1]) for t in tokens])  # +1 for the EOS when present
    total = torch.zeros(len(tokens))
    for step, logits in enumerate(out.logits[:generated.shape[1]]):
        log_probs = torch.log_softmax(logits.float().cpu(), dim=-1)
        chosen = log_probs.gather(1, generated[:, step:step + 1].cpu()).squeeze(1)
        total = total + torch.where(step < lengths, chosen, 0.0)
    scores = (total / lengths.float()).tolist()
    return _ranked_output([[t] for t in tokens], [[s] for s in scores], max_new_tokens)


def _grow(mask):
    """The attention mask after one more token: a column of ones (None stays None, as in generate())."""
    return None if mask is None else torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)


@torch.no_grad()
def constrained_beam_search(lm, inputs_embeds, attention_mask, tree, num_beams=5, max_new_tokens=32,
                            options=None) -> BeamSearchOutput:
    """The fast path: one prefill per example, then all beams of all examples decoded together under the tree.

    inputs_embeds (B, T, H) in the LM's dtype; attention_mask (B, T) left-padded 0/1; the answer starts right after
    the prompt. A finished hypothesis scores sum of log-probs (EOS included) / its length (EOS included; length
    penalty 1), the early-stop heuristic uses the same length. That is transformers 5.x's normalisation and also
    transformers 4.30's as GEMEL's original code ran it: 4.30 counted the start token it prepended and not the EOS,
    which gives the same length (tests/test_scores_430.py checks names and scores against 4.30.2's own output).
    num_beams=1 is greedy decoding (see the module docstring). A name longer than max_new_tokens comes back cut at
    max_new_tokens tokens, as in transformers. `options` (DecodingOptions) says how to run, never what comes out.
    """
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError(f"num_beams ({num_beams}) and max_new_tokens ({max_new_tokens}) must be at least 1")
    options = options or DecodingOptions()
    logits, cache, mask, positions = beam_cache.prefill(lm, inputs_embeds, attention_mask, num_beams, max_new_tokens,
                                                        options)
    if num_beams == 1:
        return _greedy(lm, tree, logits, cache, mask, positions, max_new_tokens)
    return _beam_search(lm, tree, logits, cache, mask, positions, num_beams, max_new_tokens, options)


def _greedy(lm, tree, logits, cache, mask, positions, max_new_tokens):
    """Greedy decoding as transformers' `_sample` with do_sample=False: argmax of the masked raw logits."""
    batch_size, device, eos = logits.shape[0], logits.device, tree.eos_token_id
    states = tree.start_states(batch_size)
    generated = torch.full((batch_size, max_new_tokens), eos, dtype=torch.long, device=device)
    unfinished = torch.ones(batch_size, dtype=torch.bool, device=device)
    total = torch.zeros(batch_size, device=device)                      # sum of chosen log-probs
    lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # answer length, EOS included
    for step in range(max_new_tokens):
        if step > 0:
            mask = _grow(mask)
            logits, cache = beam_cache.forward_token(lm, generated[:, step - 1], cache, mask, positions)
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
    scores = (total / lengths.float()).tolist()
    tokens = [_answer_tokens(row, eos) for row in generated.tolist()]
    return _ranked_output([[t] for t in tokens], [[s] for s in scores], max_new_tokens)


def _top_candidates(log_probs, running_scores, tree, states, num_candidates, dense_above):
    """The best `num_candidates` continuations of each example over all its beams: scores and beam * V + token.

    log_probs (B*K, V) raw log-softmax; running_scores (B, K); states (B*K,). Same values, in the same order, as
    transformers' top-k over an example's (K * V) tree-masked scores (log-prob + the beam's running score; disallowed
    tokens -inf; a row with nothing allowed offers only EOS, at FELL_OFF_TREE_SCORE). Only the allowed (beam, token)
    pairs are gathered and ranked, packed per example in (beam, token) order, so the work follows the tree's
    branching, not the vocabulary; when most pairs are allowed (no tree, or a very wide first step) the dense
    tensor is cheaper.
    """
    num_rows, vocab_size = log_probs.shape
    batch_size, beams = running_scores.shape
    device = log_probs.device
    dense = None  # the V-wide masked scores, when those are cheaper than packing the allowed pairs
    if isinstance(tree, Unconstrained):
        dense = log_probs
    else:
        rows, tokens = _allowed_pairs(tree, states, vocab_size)
        if len(rows) > dense_above * num_rows * vocab_size:
            dense = _mask_from_pairs(log_probs, rows, tokens, tree.eos_token_id)
    if dense is not None:
        totals = dense.view(batch_size, beams, vocab_size) + running_scores[:, :, None]
        return torch.topk(totals.view(batch_size, -1), k=num_candidates)

    fell_off = np.flatnonzero(np.bincount(rows, minlength=num_rows) == 0)  # rows offering only EOS
    is_fell_off = np.zeros(len(rows) + len(fell_off), dtype=bool)
    if len(fell_off):
        keys = np.concatenate([rows * vocab_size + tokens, fell_off * vocab_size + tree.eos_token_id])
        order = np.argsort(keys, kind="stable")  # back to (row, token) order, the dense tensor's flat order
        rows, tokens = keys[order] // vocab_size, keys[order] % vocab_size
        is_fell_off[len(keys) - len(fell_off):] = True
        is_fell_off = is_fell_off[order]
    rows_t, tokens_t = torch.from_numpy(rows).to(device), torch.from_numpy(tokens).to(device)
    values = log_probs[rows_t, tokens_t]  # (P,)
    if len(fell_off):
        values = values.masked_fill(torch.from_numpy(is_fell_off).to(device), FELL_OFF_TREE_SCORE)
    totals = values + running_scores.reshape(-1)[rows_t]  # the same float additions as the dense path

    example = rows // beams
    counts = np.bincount(example, minlength=batch_size)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)  # position within its example
    width = max(int(counts.max()), num_candidates)
    example_t, slot_t = torch.from_numpy(example).to(device), torch.from_numpy(slot).to(device)
    packed = torch.full((batch_size, width), float("-inf"), device=device)
    packed[example_t, slot_t] = totals
    packed_index = torch.zeros((batch_size, width), dtype=torch.long, device=device)
    packed_index[example_t, slot_t] = (rows_t % beams) * vocab_size + tokens_t
    scores, picked = torch.topk(packed, k=num_candidates)
    return scores, torch.take_along_dim(packed_index, picked, dim=1)


def _beam_search(lm, tree, logits, cache, mask, positions, num_beams, max_new_tokens, options):
    """Beam search as transformers' `_beam_search` (early_stopping=False), starting from the prefill's last logits.

    Examples that cannot change any more (transformers keeps decoding them, with no effect on their result) leave
    the batch once they are options.retire_at of it, so the remaining steps run on fewer rows.
    """
    batch_size, vocab_size = logits.shape
    prompt_length = cache.get_seq_length()
    can_retire = beam_cache.is_beam_layout(cache)
    beams = _Beams(batch_size, num_beams, max_new_tokens, tree.eos_token_id, logits.device)
    log_probs = torch.log_softmax(logits, dim=-1).repeat_interleave(num_beams, dim=0)  # (B*K, V)
    states = np.repeat(tree.start_states(batch_size), num_beams)  # tree state of each beam row

    for step in range(max_new_tokens):
        if step > 0:
            mask = _grow(mask)
            logits, cache = beam_cache.forward_token(lm, beams.last_tokens(step), cache, mask, positions)
            log_probs = torch.log_softmax(logits, dim=-1)
            positions = positions + 1

        # transformers keeps (1 + number of EOS ids) * num_beams candidates per example
        candidates = _top_candidates(log_probs, beams.running_scores, tree, states, 2 * num_beams,
                                     options.dense_candidates_above)  # scores, beam * V + token: (B, 2K) each
        parent_row, ends = beams.advance(step, *candidates, vocab_size)

        # Move cache rows and tree states to the kept beams' parents, then read their new tokens.
        beam_cache.reorder_beams(cache, parent_row, prompt_length)
        states = tree.advance(states[parent_row.cpu().numpy()], beams.new_tokens(step).cpu().numpy())

        if not beams.update_may_improve(step) or bool(ends.all()):
            break
        done = ~beams.may_improve[:, 0]  # (B',) results final: transformers adds nothing to them any more
        if can_retire and int(done.sum()) >= options.retire_at * len(beams.live):
            rows = beams.retire(done)
            beam_cache.keep_rows(cache, rows)
            mask = None if mask is None else mask.index_select(0, rows)
            positions, states = positions.index_select(0, rows), states[rows.cpu().numpy()]
    return beams.result()


class _Beams:
    """transformers' beam-search bookkeeping for the examples still in the batch (row b * K + k is beam k of b).

    Running beams hold their answer tokens so far and summed log-probs; finished hypotheses are kept best first with
    their normalised scores; `may_improve` is the early-stop heuristic's verdict per example.
    """

    def __init__(self, batch_size, beams, max_new_tokens, eos, device):
        self.beams, self.eos, self.max_new_tokens = beams, eos, max_new_tokens
        self.live = torch.arange(batch_size, device=device)  # (B',) the examples still in the batch
        # Results of the examples that left the batch: their finished hypotheses, best first.
        self.done_tokens = torch.full((batch_size, beams, max_new_tokens), eos, dtype=torch.long, device=device)
        self.done_scores = torch.full((batch_size, beams), _NOT_A_CANDIDATE, device=device)
        self.done_finished = torch.zeros((batch_size, beams), dtype=torch.bool, device=device)
        # Only beam 0 starts live, so that the K beams of the first step are K different tokens.
        self.running_tokens = torch.full((batch_size, beams, max_new_tokens), eos, dtype=torch.long, device=device)
        self.running_scores = torch.zeros((batch_size, beams), device=device)
        self.running_scores[:, 1:] = _NOT_A_CANDIDATE
        # Finished hypotheses: tokens (EOS-filled after the end), normalised scores, and whether real.
        self.finished_tokens = self.running_tokens.clone()
        self.finished_scores = torch.full((batch_size, beams), _NOT_A_CANDIDATE, device=device)
        self.is_finished = torch.zeros((batch_size, beams), dtype=torch.bool, device=device)
        self.may_improve = torch.ones((batch_size, 1), dtype=torch.bool, device=device)
        self.in_top_beams = torch.arange(2 * beams, device=device) < beams  # (2K,) only these may finish

    def last_tokens(self, step):
        return self.running_tokens[:, :, step - 1].reshape(-1)  # (B*K,)

    def new_tokens(self, step):
        return self.running_tokens[:, :, step].reshape(-1)  # (B*K,)

    def advance(self, step, cand_scores, cand_index, vocab_size):
        """Take this step's candidates (B, 2K): the best K that do not end keep running, ending ones ranked in the top
        K join the finished hypotheses if they beat the worst kept one. Returns each new beam's parent row (B*K,)
        and which candidates ended (B, 2K)."""
        cand_beam, cand_token = cand_index // vocab_size, cand_index % vocab_size
        cand_tokens = torch.take_along_dim(self.running_tokens, cand_beam[:, :, None], dim=1)  # (B, 2K, max_new)
        cand_tokens[:, :, step] = cand_token
        ends = (cand_token == self.eos) | (step + 1 >= self.max_new_tokens)  # EOS or max length

        keep_scores = cand_scores + ends.float() * _NOT_A_CANDIDATE
        keep = torch.topk(keep_scores, k=self.beams)[1]  # (B, K)
        self.running_tokens = torch.take_along_dim(cand_tokens, keep[:, :, None], dim=1)
        self.running_scores = torch.take_along_dim(keep_scores, keep, dim=1)
        example_offset = torch.arange(len(self.live), device=keep.device)[:, None] * self.beams  # (B, 1)
        parent_row = (torch.take_along_dim(cand_beam, keep, dim=1) + example_offset).view(-1)

        just_finished = ends & self.in_top_beams[None, :]
        new_scores = cand_scores / (step + 1)  # answer length, EOS included
        new_scores = new_scores + (~self.may_improve).float() * _NOT_A_CANDIDATE
        new_scores = new_scores + (~just_finished).float() * _NOT_A_CANDIDATE
        merged_scores = torch.cat([self.finished_scores, new_scores], dim=1)  # (B, 3K)
        best = torch.topk(merged_scores, k=self.beams)[1]
        self.finished_tokens = torch.take_along_dim(torch.cat([self.finished_tokens, cand_tokens], dim=1),
                                                    best[:, :, None], 1)
        self.finished_scores = torch.take_along_dim(merged_scores, best, dim=1)
        self.is_finished = torch.take_along_dim(torch.cat([self.is_finished, just_finished], dim=1), best, dim=1)
        return parent_row, ends

    def update_may_improve(self, step):
        """transformers' heuristic for early_stopping=False: an example stops once its best running beam, normalised
        by the current length, cannot beat its worst finished hypothesis. Returns whether any example goes on."""
        best_running = self.running_scores[:, :1] / (step + 1)
        worst_finished = torch.where(self.is_finished, self.finished_scores.min(dim=1, keepdim=True)[0],
                                     _NOT_A_CANDIDATE)
        self.may_improve = self.may_improve & (best_running > worst_finished).any(dim=-1, keepdim=True)
        return bool(self.may_improve.any())

    def retire(self, done):
        """Record the results of the `done` examples (B',) and drop them; returns the beam rows kept (B''*K,)."""
        self._record(self.live[done], done)
        kept = (~done).nonzero().squeeze(1)  # (B'',)
        for name in ("live", "running_tokens", "running_scores", "finished_tokens", "finished_scores",
                     "is_finished", "may_improve"):
            setattr(self, name, getattr(self, name)[kept])
        return (kept[:, None] * self.beams + torch.arange(self.beams, device=kept.device)).view(-1)

    def result(self):
        self._record(self.live, slice(None))
        tokens = [[_answer_tokens(row, self.eos) for row in rows] for rows in self.done_tokens.tolist()]
        return _ranked_output(tokens, self.done_scores.tolist(), self.max_new_tokens, self.done_finished.tolist())

    def _record(self, examples, rows):
        self.done_tokens[examples] = self.finished_tokens[rows]
        self.done_scores[examples] = self.finished_scores[rows]
        self.done_finished[examples] = self.is_finished[rows]

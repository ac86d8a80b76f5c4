"""The fast constrained beam search must give the same names and scores as transformers' generate() + tree processor."""
import numpy as np
import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from mel.decoding import beam_cache
from mel.decoding.beam_search import (
    FELL_OFF_TREE_SCORE,
    DecodingOptions,
    PrefixTreeLogitsProcessor,
    constrained_beam_search,
    generate_reference,
    mask_to_tree,
)
from tiny import EOS, HIDDEN, NAMES, VOCAB, left_padded_prompts, make_tree, tiny_lm


def bigram_lm(next_token_probs):
    """An OPT whose next-token distribution depends only on the current token: {token: {next: prob}}, the rest of
    each row's mass spread evenly. Attention and MLP outputs and positions are zeroed, token i is embedded as the
    one-hot e_i, and lm_head is solved so that logits = log-probabilities. The prompt's last embedding picks the
    first distribution (see `bigram_prompt`)."""
    width = VOCAB + 8  # > VOCAB so that the layer-normed one-hot embeddings stay linearly independent
    config = OPTConfig(vocab_size=VOCAB, hidden_size=width, num_hidden_layers=1, ffn_dim=8, num_attention_heads=4,
                       max_position_embeddings=64, word_embed_proj_dim=width, tie_word_embeddings=False,
                       bos_token_id=EOS, eos_token_id=EOS, pad_token_id=1)
    lm = OPTForCausalLM(config).eval()
    decoder = lm.model.decoder
    log_probs = torch.full((VOCAB, VOCAB), 0.0)
    for token in range(VOCAB):
        probs = next_token_probs.get(token, {})
        rest = (1.0 - sum(probs.values())) / (VOCAB - len(probs))
        assert rest > 0, f"probabilities after token {token} must leave some mass for the other tokens"
        row = torch.full((VOCAB,), rest)
        row[list(probs)] = torch.tensor(list(probs.values()))
        log_probs[token] = row.log()
    with torch.no_grad():
        # Every weight set here, none left to the initialiser: attention and MLP add exactly 0 (a random weight that
        # came out huge, or an uninitialised one, would turn 0 * x into NaN and change the scripted distributions).
        for name, param in lm.named_parameters():
            param.fill_(1.0 if "layer_norm.weight" in name else 0.0)
        decoder.embed_tokens.weight.copy_(torch.eye(VOCAB, width))
        # lm_head sees LN(e_i) = k (e_i - 1/width) for every token i (one scale k, as all rows are one-hot). With
        # head^T = M / k, where M's first VOCAB rows are log_probs and one more row makes its columns sum to 0,
        # the logits are exactly log_probs: solved by hand, since a LAPACK least-squares solve on a busy
        # multithreaded CPU was seen to return a wrong row now and then.
        normed = decoder.final_layer_norm(torch.eye(VOCAB, width))  # (V, width)
        k = normed[0, 0] / (1.0 - 1.0 / width)
        m = torch.zeros(width, VOCAB)
        m[:VOCAB] = log_probs
        m[VOCAB] = -log_probs.sum(0)
        lm.lm_head.weight.copy_((m / k).T)
        assert torch.allclose(lm.lm_head(normed), log_probs, atol=1e-4), "the bigram LM does not give its log-probs"
    return lm


def bigram_prompt(lm, token):
    """A one-position prompt whose next-token distribution is the bigram row of `token`."""
    return lm.get_input_embeddings().weight[token][None, None].detach(), torch.ones(1, 1, dtype=torch.long)


def assert_same(fast, ref):
    """The same best names and scores, and the same ranked list of finished hypotheses (Hits@k and MRR use it)."""
    assert fast.tokens == ref.tokens
    np.testing.assert_allclose(fast.scores, ref.scores, rtol=0, atol=1e-5)
    assert all(np.isfinite(fast.scores))
    assert [[t for t, _ in r] for r in fast.ranked] == [[t for t, _ in r] for r in ref.ranked]
    for f, r in zip(fast.ranked, ref.ranked):
        np.testing.assert_allclose([s for _, s in f], [s for _, s in r], rtol=0, atol=1e-5)
        assert [s for _, s in f] == sorted((s for _, s in f), reverse=True)


@pytest.mark.parametrize("arch", ["opt", "llama"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_beams", [1, 5])
@pytest.mark.parametrize("lengths", [[9], [9, 4, 12, 7]])
def test_fast_path_equals_generate(arch, seed, num_beams, lengths):
    lm, tree = tiny_lm(arch, seed), make_tree(NAMES)
    embeds, mask = left_padded_prompts(lengths, seed)
    ref = generate_reference(lm, embeds, mask, tree, num_beams=num_beams, max_new_tokens=8)
    fast = constrained_beam_search(lm, embeds, mask, tree, num_beams=num_beams, max_new_tokens=8)
    assert_same(fast, ref)
    for tokens in fast.tokens:  # every answer is a whole stored name
        assert [EOS] + tokens + [EOS] in tree


def random_names(rng, count):
    """Names of 1 to 8 tokens, most of them extending a prefix of an earlier name (shared prefixes, prefix names)."""
    names = []
    for _ in range(count):
        base = names[rng.integers(len(names))][:rng.integers(0, 6)] if names and rng.random() < 0.7 else []
        names.append(base + rng.integers(3, VOCAB, size=rng.integers(1, 4)).tolist())
    return names


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_random_trees_and_larger_batches(seed):
    rng = np.random.default_rng(seed)
    lm, tree = tiny_lm("opt", seed), make_tree(random_names(rng, 40))
    embeds, mask = left_padded_prompts(rng.integers(2, 12, size=12).tolist(), seed)
    for num_beams in (3, 5):
        ref = generate_reference(lm, embeds, mask, tree, num_beams=num_beams, max_new_tokens=10)
        fast = constrained_beam_search(lm, embeds, mask, tree, num_beams=num_beams, max_new_tokens=10)
        assert_same(fast, ref)


@pytest.mark.parametrize("arch", ["opt", "llama"])
def test_partial_cache_reorder_equals_the_library_reorder(arch, monkeypatch):
    """Skipping the prompt positions when reordering beams gives bit-identical results to DynamicCache.reorder_cache."""
    lm, tree = tiny_lm(arch, 0), make_tree(NAMES)
    embeds, mask = left_padded_prompts([9, 4, 12, 7], 0)
    fast = constrained_beam_search(lm, embeds, mask, tree, num_beams=5, max_new_tokens=8)
    def reorder_whole_cache(cache, rows, prompt_length):
        for layer in cache.layers:
            if isinstance(layer, beam_cache.BeamLayer):
                layer.batch_select_indices(rows)  # every position, prompt included
            else:
                layer.reorder_answer(rows)  # SharedPromptLayer: the prompt is not per beam

    monkeypatch.setattr(beam_cache, "reorder_beams", reorder_whole_cache)
    library = constrained_beam_search(lm, embeds, mask, tree, num_beams=5, max_new_tokens=8)
    assert fast == library


SETTINGS = {  # every fast-path alternative; none may change a result
    "batched prefill": DecodingOptions(prefill_each_on=()),
    "prompt copied to every beam": DecodingOptions(share_prompt=False),
    "batched prefill, prompt copied": DecodingOptions(prefill_each_on=(), share_prompt=False),
    "dense candidates": DecodingOptions(dense_candidates_above=-1.0),
    "no retiring": DecodingOptions(retire_at=2.0),
    "retire at once": DecodingOptions(retire_at=1e-9),
    "no prefix reuse": DecodingOptions(min_shared_prefix=10 ** 9),
}


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("arch", ["opt", "llama"])
def test_fast_path_settings_give_identical_results(arch, setting):
    rng = np.random.default_rng(7)
    lm, tree = tiny_lm(arch, 7), make_tree(random_names(rng, 40))
    embeds, mask = left_padded_prompts(rng.integers(2, 12, size=10).tolist(), 7)
    default = constrained_beam_search(lm, embeds, mask, tree, num_beams=5, max_new_tokens=10)
    changed = constrained_beam_search(lm, embeds, mask, tree, num_beams=5, max_new_tokens=10, options=SETTINGS[setting])
    assert changed.tokens == default.tokens
    np.testing.assert_allclose(changed.scores, default.scores, rtol=0, atol=1e-5)  # batch-shape rounding


def test_library_cache_fallback_gives_identical_results(monkeypatch):
    """Models whose cache the fast path does not lay out itself (sliding windows...) decode on the library's cache."""
    lm, tree = tiny_lm("llama", 2), make_tree(NAMES)
    embeds, mask = left_padded_prompts([9, 4, 12, 7], 2)
    ref = generate_reference(lm, embeds, mask, tree, num_beams=5, max_new_tokens=8)
    monkeypatch.setattr(beam_cache, "has_plain_layers", lambda lm: False)
    assert_same(constrained_beam_search(lm, embeds, mask, tree, num_beams=5, max_new_tokens=8), ref)


@pytest.mark.parametrize("layer_type", [beam_cache.SharedPromptLayer, beam_cache.BeamLayer])
def test_finished_examples_leave_the_batch(layer_type, monkeypatch):
    """With retire_at tiny, the batch shrinks as soon as one example is final, and results stay those of generate()."""
    rng = np.random.default_rng(3)
    lm, tree = tiny_lm("opt", 3), make_tree(random_names(rng, 40))
    embeds, mask = left_padded_prompts(rng.integers(2, 12, size=8).tolist(), 3)
    ref = generate_reference(lm, embeds, mask, tree, num_beams=5, max_new_tokens=10)
    row_counts = []
    select = layer_type.batch_select_indices

    def spy(layer, indices):
        row_counts.append(len(indices))
        select(layer, indices)

    monkeypatch.setattr(layer_type, "batch_select_indices", spy)
    options = DecodingOptions(share_prompt=layer_type is beam_cache.SharedPromptLayer, retire_at=1e-9)
    assert_same(constrained_beam_search(lm, embeds, mask, tree, num_beams=5, max_new_tokens=10, options=options), ref)
    assert row_counts and min(row_counts) < 8 * 5


def test_shared_prompt_cache_holds_one_prompt_copy_per_example():
    """The point of SharedPromptLayer: the prompt part is per example, not per beam."""
    lm = tiny_lm("llama", 0)
    embeds, mask = left_padded_prompts([9, 4, 12], 0)
    _, cache, _, _ = beam_cache.prefill(lm, embeds, mask, beams=5, max_new_tokens=8, options=DecodingOptions())
    assert beam_cache.is_shared(cache)
    for layer in cache.layers:
        assert layer.prompt_keys.shape[:3] == (3, 2, 12)          # (examples, kv heads, prompt)
        assert layer.key_buffer.shape[:3] == (15, 2, 8)    # (examples x beams, kv heads, answer)


def test_a_model_that_bypasses_the_attention_interface_is_refused(monkeypatch):
    """If a model's attention ignored transformers' attention interface, the shared cache would give wrong answers
    silently; the fast path must stop with a message instead."""
    lm, tree = tiny_lm("opt", 0), make_tree(NAMES)
    embeds, mask = left_padded_prompts([9, 4], 0)
    monkeypatch.setitem(beam_cache.AttentionInterface._global_mapping, beam_cache.SHARED_ATTENTION,
                        lambda module, query, key, value, *a, **k: (query.transpose(1, 2), None))
    with pytest.raises(RuntimeError, match="--no-share_prompt"):
        constrained_beam_search(lm, embeds, mask, tree, num_beams=5, max_new_tokens=8)


def prompts_with_shared_beginnings(seed):
    """Left-padded prompts where rows 2 and 3 begin like row 0 (12 positions, and all of it), as GEMEL prompts
    whose mentions retrieve the same demonstrations do."""
    gen = torch.Generator().manual_seed(seed)
    base, other, tail = (torch.randn(n, HIDDEN, generator=gen) for n in (15, 10, 4))
    prompts = [base, other, torch.cat([base[:12], tail]), base.clone()]
    width = max(len(p) for p in prompts)
    embeds = torch.zeros(len(prompts), width, HIDDEN)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        embeds[row, width - len(prompt):] = prompt
        mask[row, width - len(prompt):] = 1
    return embeds, mask


@pytest.mark.parametrize("arch", ["opt", "llama"])
def test_prompts_with_a_shared_beginning_reuse_its_cache(arch, monkeypatch):
    lm, tree = tiny_lm(arch, 4), make_tree(NAMES)
    embeds, mask = prompts_with_shared_beginnings(4)
    ref = generate_reference(lm, embeds, mask, tree, num_beams=5, max_new_tokens=8)
    prefill_lengths = []
    forward = type(lm).forward

    def spy(self, *args, **kwargs):
        if kwargs.get("inputs_embeds") is not None:
            prefill_lengths.append(kwargs["inputs_embeds"].shape[1])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(lm), "forward", spy)
    fast = constrained_beam_search(lm, embeds, mask, tree, num_beams=5, max_new_tokens=8,
                                   options=DecodingOptions(min_shared_prefix=4))
    assert_same(fast, ref)
    assert prefill_lengths == [15, 10, 4, 1]  # rows 2 and 3 ran only what row 0 had not


def test_answers_cover_prefix_names_and_lengths():
    """The equality test above is only meaningful if the answers vary: several names, of several lengths."""
    answers = set()
    for seed in range(3):
        lm = tiny_lm("opt", seed)
        embeds, mask = left_padded_prompts([9, 4, 12, 7], seed)
        answers |= {tuple(t) for t in constrained_beam_search(lm, embeds, mask, make_tree(NAMES)).tokens}
    assert len(answers) >= 3 and len({len(a) for a in answers}) >= 2


@pytest.mark.parametrize("num_beams", [1, 5])
def test_names_longer_than_max_new_tokens_are_cut_the_same_way(num_beams):
    lm, tree = tiny_lm("opt", 3), make_tree([[50, 51, 52, 53, 54], [12, 40, 7], [30, 31]])
    embeds, mask = left_padded_prompts([6, 10], 3)
    ref = generate_reference(lm, embeds, mask, tree, num_beams=num_beams, max_new_tokens=2)
    fast = constrained_beam_search(lm, embeds, mask, tree, num_beams=num_beams, max_new_tokens=2)
    assert_same(fast, ref)


def test_only_ends_ranked_in_the_top_beams_finish():
    """transformers keeps 2K candidates but lets an ending one finish only when ranked in the top K.
    K=2. Step 1 ranks A-Z (-1.4), A-Y (-1.5), X-EOS (-1.7): X-EOS (-0.85 once normalised, the best score of all)
    is ranked 3rd, so it is dropped, and the answer is A-Z (-4.4 / 3)."""
    A, X, Y, Z = 10, 12, 13, 14
    lm = bigram_lm({EOS: {A: 0.67, X: 0.3}, A: {Z: 0.37, Y: 0.33}, X: {EOS: 0.6}, Z: {EOS: 0.05}, Y: {EOS: 0.05}})
    tree = make_tree([[X], [A, Z], [A, Y]])
    ref = generate_reference(lm, *bigram_prompt(lm, EOS), tree, num_beams=2, max_new_tokens=6)
    fast = constrained_beam_search(lm, *bigram_prompt(lm, EOS), tree, num_beams=2, max_new_tokens=6)
    assert_same(fast, ref)
    assert fast.tokens == [[A, Z]]


def test_early_stop_heuristic_prunes_a_late_better_name():
    """early_stopping=False: once all K finished slots are full and the best running beam's score / current length
    is below the worst finished one, the example stops, even though the long name B..M would have scored
    -4.6 / 13 = -0.35, better than the answer A-Z (-1.51 / 3 = -0.50)."""
    A, X, Z, chain = 10, 12, 14, list(range(20, 32))
    follow = {a: {b: 0.9999} for a, b in zip(chain, chain[1:] + [EOS])}
    lm = bigram_lm({EOS: {A: 0.5, X: 0.3, chain[0]: 0.01}, A: {EOS: 0.55, Z: 0.44}, X: {EOS: 0.9999},
                    Z: {EOS: 0.9999}, **follow})
    tree = make_tree([[A], [X], [A, Z], chain])
    ref = generate_reference(lm, *bigram_prompt(lm, EOS), tree, num_beams=3, max_new_tokens=16)
    fast = constrained_beam_search(lm, *bigram_prompt(lm, EOS), tree, num_beams=3, max_new_tokens=16)
    assert_same(fast, ref)
    assert fast.tokens == [[A, Z]]


def test_single_name_tree_does_not_crash_or_give_nan():
    """One name of one token: 5 beams need 10 candidates, most are off the tree and must stay harmless."""
    lm, tree = tiny_lm("opt", 0), make_tree([[41]])
    embeds, mask = left_padded_prompts([5, 8], 0)
    ref = generate_reference(lm, embeds, mask, tree, num_beams=5, max_new_tokens=4)
    fast = constrained_beam_search(lm, embeds, mask, tree, num_beams=5, max_new_tokens=4)
    assert_same(fast, ref)
    assert fast.tokens == [[41], [41]]


def test_score_is_sum_of_log_probs_over_length():
    """Rescore each answer by one teacher-forced forward pass of prompt + answer + EOS."""
    lm, tree = tiny_lm("opt", 1), make_tree(NAMES)
    embeds, mask = left_padded_prompts([9, 4, 12], 1)
    out = constrained_beam_search(lm, embeds, mask, tree, num_beams=5, max_new_tokens=8)
    for row, (tokens, score) in enumerate(zip(out.tokens, out.scores)):
        prompt = embeds[row:row + 1, mask[row].bool()]                        # (1, T_real, H)
        answer = torch.tensor([tokens + [EOS]])                               # (1, A)
        full = torch.cat([prompt, lm.get_input_embeddings()(answer)], dim=1)  # (1, T_real + A, H)
        with torch.no_grad():
            logits = lm(inputs_embeds=full).logits[0, prompt.shape[1] - 1:-1]  # (A, V) predicting the answer
        total = torch.log_softmax(logits.float(), -1).gather(1, answer.T).sum().item()
        assert score == pytest.approx(total / (len(tokens) + 1), abs=1e-4)


def test_processor_lets_only_eos_through_when_off_the_tree():
    tree = make_tree([[5, 9]])
    scores = torch.randn(3, VOCAB)
    processor = PrefixTreeLogitsProcessor(tree)
    processor(torch.zeros((3, 0), dtype=torch.long), scores)  # the first call fixes the answer start
    out = processor(torch.tensor([[5], [5], [7]]), scores)  # answers [5] twice (inside), [7] (off the tree)
    assert not torch.isnan(out).any()
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [9]
    assert torch.isfinite(out[2]).nonzero().flatten().tolist() == [EOS]
    assert out[2, EOS].item() == FELL_OFF_TREE_SCORE


def test_processor_ignores_a_leading_start_token():
    """transformers 4.30 put a BOS in front of output generated from inputs_embeds, 5.x does not: same masks."""
    tree = make_tree(NAMES)
    scores = torch.randn(2, VOCAB)
    answers = torch.tensor([[5, 9, 11], [41, 5, 9]])  # (B, steps)
    without_bos, with_bos = PrefixTreeLogitsProcessor(tree), PrefixTreeLogitsProcessor(tree)
    bos = torch.full((2, 1), EOS)
    for step in range(answers.shape[1] + 1):
        a = without_bos(answers[:, :step], scores)
        b = with_bos(torch.cat([bos, answers[:, :step]], dim=1), scores)
        assert torch.equal(a, b)
        assert torch.isfinite(a).sum().item() > 0
    assert (without_bos.answer_start, with_bos.answer_start) == (0, 1)
    # after [5, 9, 11] the name may end or go on to [.., 20]; after [41, 5, 9] only EOS
    assert torch.isfinite(a[0]).nonzero().flatten().tolist() == [EOS, 20]
    assert torch.isfinite(a[1]).nonzero().flatten().tolist() == [EOS]
    assert a[1, EOS].item() == scores[1, EOS].item()


def test_tree_with_tokens_beyond_the_vocabulary_is_a_clear_error():
    tree = make_tree([[VOCAB + 3]])
    with pytest.raises(ValueError, match="another tokenizer"):
        mask_to_tree(torch.zeros(1, VOCAB), tree, np.array([tree.start_state()]))

"""Training: the loss is the LM's cross-entropy on target tokens only, and a few steps lower it."""
import numpy as np
import torch

from model import GEMEL
from tiny import tiny_opt
from utils import PromptBuilder

TRAIN = [{"text": "Paris is in France.", "mention": "Paris", "target": "Paris"},
         {"text": "Jordan scored 40.", "mention": "Jordan", "target": "Michael Jordan"},
         {"text": "Amman is the capital of Jordan.", "mention": "Jordan", "target": "Jordan"}]


def batch_and_model(tokenizer, init_std=0.02):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((3, 8)).astype(np.float32)
    builder = PromptBuilder(tokenizer, TRAIN, images, 2, pad_token_id=tokenizer.eos_token_id)
    batch = builder.collate(TRAIN, [[1, 2], [0, 2], []], images, training=True)
    return batch, GEMEL(tiny_opt(len(tokenizer), init_std=init_std), dim_clip=8, prefix_length=2)


def test_loss_equals_hf_loss_on_target_tokens(tokenizer):
    batch, model = batch_and_model(tokenizer)
    with torch.no_grad():
        ours = model(batch)
        ref = model.lm(inputs_embeds=model.embed(batch), attention_mask=batch.attention_mask,
                       labels=batch.labels).loss
    torch.testing.assert_close(ours, ref)


def test_loss_equals_hf_loss_for_gemma2_with_soft_capped_logits(tokenizer):
    """The LM head sees only target positions through a hook, so a model's own logit post-processing still applies."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, final_logit_softcapping=3.0,
                          pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    batch, _ = batch_and_model(tokenizer)
    model = GEMEL(Gemma2ForCausalLM(config).eval(), dim_clip=8, prefix_length=2)
    with torch.no_grad():
        ours = model(batch)
        out = model.lm(inputs_embeds=model.embed(batch), attention_mask=batch.attention_mask, labels=batch.labels)
    torch.testing.assert_close(ours, out.loss)
    assert out.logits.shape[:2] == batch.labels.shape  # the hook is gone after GEMEL.forward
    assert float(out.logits.abs().max()) <= 3.0       # soft-capping was active


def test_a_few_steps_lower_the_loss_and_only_the_projector_moves(tokenizer):
    # a larger init scale gives the random LM logits that the visual prefix can move
    batch, model = batch_and_model(tokenizer, init_std=0.5)
    lm_before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    opt = torch.optim.AdamW(model.linear.parameters(), lr=0.05)
    losses = []
    for _ in range(10):
        loss = model(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(torch.equal(v, model.lm.state_dict()[k]) for k, v in lm_before.items())
    assert not any(p.requires_grad for p in model.lm.parameters())

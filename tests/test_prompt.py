"""Prompt layout: GEMEL's exact text, visual prefix slots, label mask, padding sides."""
import numpy as np
import torch

from model import GEMEL
from tiny import tiny_opt
from utils import IMAGE_SLOT, PromptBuilder, demonstration_text, query_text

EX = {"text": "Jordan scored 40 points.", "mention": "Jordan", "target": "Michael Jordan"}


def test_prompt_text_is_gemels():
    assert demonstration_text(EX) == ("[Text]Jordan scored 40 points.\n[Question]What does Jordan mentioned in "
                                      "the text refer to?\n[Answer]Michael Jordan\n")
    assert query_text(EX) == ("[Text]Jordan scored 40 points.\n[Question]What does Jordan mentioned in the "
                              "text refer to?\n[Answer]")


def make_builder(tokenizer, k=2):
    train = [dict(EX), {"text": "Amman is in Jordan.", "mention": "Jordan", "target": "Jordan"}]
    images = np.arange(2 * 3, dtype=np.float32).reshape(2, 3)
    return train, PromptBuilder(tokenizer, train, images, k, pad_token_id=tokenizer.eos_token_id)


def test_training_batch_layout_and_labels(tokenizer):
    train, builder = make_builder(tokenizer)
    query = {"text": "Jordan won.", "mention": "Jordan", "target": "Michael Jordan"}
    short = {"text": "x", "mention": "x", "target": "Jordan"}
    batch = builder.collate([query, short], [[1, 0], []], np.ones((2, 3), np.float32), training=True)
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    demo1, demo0, q = enc(demonstration_text(train[1])), enc(demonstration_text(train[0])), enc(query_text(query))
    target = enc("Michael Jordan") + [tokenizer.eos_token_id]
    expected = [IMAGE_SLOT] * 2 + demo1 + [IMAGE_SLOT] * 2 + demo0 + [IMAGE_SLOT] * 2 + q + target
    row = batch.input_ids[0].tolist()
    assert row == expected  # least similar demonstration first, no BOS anywhere, target = name + EOS
    labels = batch.labels[0].tolist()
    assert labels == [-100] * (len(expected) - len(target)) + target
    # visual prefix slots point at (image row * k + j): demo 1's image is row 0, demo 0's row 1, the query's row 2
    slots = batch.image_tokens[0][batch.image_tokens[0] >= 0].tolist()
    assert slots == [0, 1, 2, 3, 4, 5]
    assert batch.images[:2].tolist() == [[3, 4, 5], [0, 1, 2]]
    # right padding: the shorter example's mask ends in zeros, its padded labels are ignored
    n = batch.attention_mask[1].sum().item()
    assert batch.attention_mask[1, :n].all() and not batch.attention_mask[1, n:].any()
    assert (batch.labels[1, n:] == -100).all()
    assert builder.prompt_length(query, [1, 0], with_target=True) == len(expected)


def test_generation_batch_is_left_padded(tokenizer):
    train, builder = make_builder(tokenizer)
    batch = builder.collate([train[0], {"text": "x", "mention": "x", "target": "y"}], [[1], []],
                            np.ones((2, 3), np.float32), training=False)
    assert batch.labels is None
    mask = batch.attention_mask[1]
    n = int(mask.sum())
    assert not mask[:-n].any() and mask[-n:].all()
    assert batch.input_ids[0, -3:].tolist() == tokenizer("\n[Answer]", add_special_tokens=False)["input_ids"][-3:]


def test_embed_puts_projected_images_at_slots(tokenizer):
    train, builder = make_builder(tokenizer, k=2)
    lm = tiny_opt(len(tokenizer))
    model = GEMEL(lm, dim_clip=3, prefix_length=2)
    batch = builder.collate([train[0]], [[1]], np.full((1, 3), 2.0, np.float32), training=False)
    emb = model.embed(batch)
    proj = model.linear(batch.images).reshape(-1, 32)  # (N_img * k, H)
    slots = batch.image_tokens[0]
    torch.testing.assert_close(emb[0, slots >= 0], proj[slots[slots >= 0]])
    text = slots < 0
    torch.testing.assert_close(emb[0, text], lm.get_input_embeddings()(batch.input_ids[0, text]))

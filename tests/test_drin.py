"""DRIN: the network against hand-computed numbers, the loss, Hits@k, the two candidate handlings, a tiny run."""
import json
import math
import os
import shutil

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mel.drin.data import DrinSplit, EntityTable, make_batch, resolve_slots
from mel.drin.model import (
    DRIN,
    DrinBatch,
    GCNLayer,
    gold_ranks,
    initial_edges,
    per_mention_triplet_loss,
    released_triplet_loss,
)
from mel.errors import DataError
from mel.io.datasets import read_split


def random_batch(B=3, C=4, Dt=6, Di=5, Ds=7, K=3, J=1, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    return DrinBatch(mention_text=r(B, Dt), mention_image=r(B, 2, Di), mention_text_joint=r(B, Ds),
                     mention_image_joint=r(B, Ds), mention_objects=r(B, K, Di), mention_object_scores=r(B, K).abs(),
                     entity_text=r(B, C, Dt), entity_text_edge=r(B, C, Dt), entity_image=r(B, C, Di),
                     entity_text_joint=r(B, C, Ds), entity_image_joint=r(B, C, Ds), entity_objects=r(B, C, J, Di),
                     entity_object_scores=r(B, C, J).abs(), mask=torch.ones(B, C))


@pytest.mark.parametrize("options", [{}, {"vector_edges": True}, {"edge_type": "static"}, {"edges": ("tt",)}])
def test_shapes_and_score_range(options):
    torch.manual_seed(0)
    model = DRIN(6, 5, dim=8, **options)
    scores = model(random_batch())
    assert scores.shape == (3, 4)
    assert torch.all(scores.abs() <= 1 + 1e-6)


@pytest.mark.parametrize("options, without_gradient", [
    ({}, {"layers.1.w_u", "layers.1.w_v"}),  # the last layer's new edges feed no later layer
    ({"vector_edges": True}, {"layers.1.w_u", "layers.1.w_v", "layers.1.w_m"}),
    ({"edge_type": "static"}, {"layers.0.w_u", "layers.0.w_v", "layers.1.w_u", "layers.1.w_v"}),
    ({"edges": ("tt",)}, {"mention_image", "entity_image", "layers.1.w_u", "layers.1.w_v"}),  # images cut off
])
def test_gradients_reach_exactly_the_parts_that_shape_the_score(options, without_gradient):
    torch.manual_seed(0)
    model = DRIN(6, 5, dim=8, **options)
    model(random_batch()).sum().backward()
    modules = {name.rsplit(".", 1)[0] for name, _ in model.named_parameters()}
    moved = {name.rsplit(".", 1)[0] for name, p in model.named_parameters()
             if p.grad is not None and p.grad.abs().sum() > 0}
    assert modules - moved == without_gradient


def test_initial_edges_by_hand():
    b = random_batch(B=1, C=2, K=2, J=1)
    edges = initial_edges(b)
    cos = lambda x, y: float(x @ y / (x.norm() * y.norm()))  # noqa: E731
    assert edges["tt"][0, 1].item() == pytest.approx(cos(b.mention_text[0], b.entity_text_edge[0, 1]), abs=1e-6)
    assert edges["ti"][0, 0].item() == pytest.approx(cos(b.mention_text_joint[0], b.entity_image_joint[0, 0]),
                                                     abs=1e-6)
    assert edges["it"][0, 1].item() == pytest.approx(cos(b.mention_image_joint[0], b.entity_text_joint[0, 1]),
                                                     abs=1e-6)
    s, t = b.mention_object_scores[0], b.entity_object_scores[0, 1]
    o, p = b.mention_objects[0], b.entity_objects[0, 1]
    num = sum(s[i] * t[0] * cos(o[i], p[0]) for i in range(2))
    assert edges["ii"][0, 1].item() == pytest.approx(float(num / (s.sum() * t[0] + 1e-9)), abs=1e-5)


def test_one_layer_by_hand():
    """A 2-d graph with one candidate pair, weights set by hand, checked against DRIN.md's update rules."""
    layer = GCNLayer(2, vector_edges=False)
    with torch.no_grad():
        layer.w_h.weight.copy_(torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
        layer.w_h.bias.zero_()
        layer.w_u.weight.copy_(torch.eye(2))
        layer.w_u.bias.zero_()
        layer.w_v.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        layer.w_v.bias.zero_()
    mt, mi = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 1.0]])
    et = torch.tensor([[[1.0, 0.0], [3.0, 1.0]]])   # (B=1, C=2, d=2)
    ei = torch.tensor([[[0.0, 2.0], [1.0, 1.0]]])
    edges = {"tt": torch.tensor([[0.5, 0.1]]), "ti": torch.tensor([[0.2, 0.4]]),
             "it": torch.tensor([[0.3, 0.0]]), "ii": torch.tensor([[1.0, 0.5]])}
    mask = torch.tensor([[1.0, 0.0]])  # the second slot is padding: left out of the mention vertices' mean
    vertices, new_edges = layer({"mt": mt, "mi": mi, "et": et, "ei": ei}, edges, mask, dynamic=True)

    def update(x):  # GELU(LN(W_h x)), LayerNorm at its initial weight 1 and bias 0
        h = np.array([[1.0, 0.5], [0.0, 1.0]]) @ x
        h = (h - h.mean()) / np.sqrt(h.var() + 1e-5)
        return np.array([0.5 * v * (1 + math.erf(v / np.sqrt(2))) for v in h])

    n = lambda t: t.numpy().astype(np.float64)  # noqa: E731
    # mt <- tt * et and ti * ei, mean over the real candidate (slot 0 only)
    expected_mt = update(n(mt[0]) + 0.5 * n(et[0, 0]) + 0.2 * n(ei[0, 0]))
    np.testing.assert_allclose(vertices["mt"][0].detach().numpy(), expected_mt, atol=1e-5)
    # et of slot 1 <- tt * mt and it * mi (entity vertices receive from the mention, per candidate)
    expected_et1 = update(n(et[0, 1]) + 0.1 * n(mt[0]) + 0.0 * n(mi[0]))
    np.testing.assert_allclose(vertices["et"][0, 1].detach().numpy(), expected_et1, atol=1e-5)
    # ei of slot 0 <- ti * mt and ii * mi
    expected_ei0 = update(n(ei[0, 0]) + 0.2 * n(mt[0]) + 1.0 * n(mi[0]))
    np.testing.assert_allclose(vertices["ei"][0, 0].detach().numpy(), expected_ei0, atol=1e-5)
    # dynamic edge: sigmoid(mean_d(W_u m * W_v v) + e), from the layer's input vertices
    wv = np.array([[2.0, 0.0], [0.0, 1.0]])
    expected_ti1 = 1 / (1 + np.exp(-(np.mean(n(mt[0]) * (wv @ n(ei[0, 1]))) + 0.4)))
    assert new_edges["ti"][0, 1].item() == pytest.approx(expected_ti1, abs=1e-6)
    expected_it0 = 1 / (1 + np.exp(-(np.mean(n(mi[0]) * (wv @ n(et[0, 0]))) + 0.3)))
    assert new_edges["it"][0, 0].item() == pytest.approx(expected_it0, abs=1e-6)


def test_switched_off_edges_cut_the_image_vertices_off():
    torch.manual_seed(0)
    model = DRIN(6, 5, dim=8, edges=("tt",))
    b = random_batch()
    before = model(b)
    b.mention_image = b.mention_image * 3 + 1
    b.entity_image = -b.entity_image
    b.mention_image_joint, b.entity_text_joint = -b.mention_image_joint, b.entity_text_joint + 1
    torch.testing.assert_close(model(b), before)
    torch.manual_seed(0)
    full = DRIN(6, 5, dim=8)
    assert not torch.allclose(full(b), full(random_batch()))


def test_per_mention_triplet_loss_by_hand():
    scores = torch.tensor([[0.5, 0.2, 0.9], [0.1, -0.5, 0.7]])
    gold = torch.tensor([0, -1])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    # row 0: (0.25 + 0 + 0.65) / 3; row 1, gold not listed (s_gold = 0), padded slot out: (0.35 + 0) / 2
    assert per_mention_triplet_loss(scores, gold, mask).item() == pytest.approx((0.3 + 0.175) / 2, abs=1e-6)


def test_released_triplet_loss_by_hand():
    """Each mention's gold against every candidate of the batch (DRIN.md 4), padded slots out of the mean."""
    scores = torch.tensor([[0.5, 0.2, 0.9], [0.1, -0.5, 0.7]])
    gold = torch.tensor([0, -1])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    # mention 0 (g = 0.5), over the 5 real slots: 0.25 + 0 + 0.65 + 0 + 0 = 0.9; mention 1 (g = 0, not listed):
    # 0.75 + 0.45 + 1.15 + 0.35 + 0 = 2.7
    assert released_triplet_loss(scores, gold, mask).item() == pytest.approx((0.9 / 5 + 2.7 / 5) / 2, abs=1e-6)


def released_code_loss(y_true, y_pred, margin=0.25):
    """The released TripletLoss (starreeze/drin common/utils.py), line for line: the reference."""
    y_pred = -y_pred
    positive_val = torch.sum(y_pred * y_true, dim=-1)
    loss = 0.0
    for i in range(y_true.shape[0]):
        loss += torch.mean(torch.maximum(positive_val[i] - y_pred + margin, torch.tensor(0)))
    return loss / y_true.shape[0]


def test_released_triplet_loss_equals_the_released_code():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(6, 11, generator=g) * 2 - 1
    gold = torch.tensor([0, 3, -1, 10, 5, -1])
    labels = torch.zeros(6, 11)
    labels[gold >= 0, gold[gold >= 0]] = 1  # a row of zeros where the gold is not listed
    ours = released_triplet_loss(scores, gold, torch.ones(6, 11))
    assert ours.item() == pytest.approx(released_code_loss(labels, scores).item(), abs=1e-6)
    assert ours.item() != pytest.approx(per_mention_triplet_loss(scores, gold, torch.ones(6, 11)).item(), abs=1e-3)


def test_original_hits_by_hand():
    """Ties count as hits under the original protocol, as misses in leak_free; Hits over all mentions and over
    those whose gold is listed (the WikiDiverse correction)."""
    from mel.runs.metrics import ranking_summary

    scores = torch.tensor([[0.9, 0.9, 0.1], [0.2, 0.8, 0.5], [0.3, 0.2, 0.1], [0.5, 0.4, 0.3]])
    gold = torch.tensor([1, 2, 0, -1])  # a tie at the top, rank 2, rank 1, not listed
    mask = torch.ones(4, 3).bool()
    original = ranking_summary(gold_ranks(scores, gold, mask, ties="hit"), [1, 2])
    assert original["hits@1"] == 50.0 and original["hits@1_listed"] == pytest.approx(200 / 3)
    assert original["hits@2"] == 75.0 and original["mrr"] == pytest.approx((1 + 0.5 + 1) / 4)
    leak_free = ranking_summary(gold_ranks(scores, gold, mask, ties="miss"), [1])
    assert leak_free["hits@1"] == 25.0 and leak_free["gold_listed"] == 75.0


def test_the_original_mention_mean_covers_every_slot():
    """The released model's torch.mean over C: a padded slot (an empty entity) weighs in the mention's messages."""
    edge = torch.tensor([[1.0, 0.5, 0.25]])
    neighbour = torch.tensor([[[2.0, 0.0], [0.0, 4.0], [8.0, 8.0]]])
    listed = GCNLayer.message(edge, neighbour, torch.tensor([[1.0, 1.0, 0.0]]))
    every = GCNLayer.message(edge, neighbour, torch.ones(1, 3))
    torch.testing.assert_close(listed, torch.tensor([[1.0, 1.0]]))          # ([2, 0] + [0, 2]) / 2
    torch.testing.assert_close(every, torch.tensor([[4.0 / 3, 4.0 / 3]]))   # ([2, 0] + [0, 2] + [2, 2]) / 3
    torch.manual_seed(0)
    b = random_batch(B=2, C=4)
    b.mask[0, -1] = 0
    listed_model, every_model = DRIN(6, 5, dim=8).eval(), DRIN(6, 5, dim=8, mention_mean="all").eval()
    every_model.load_state_dict(listed_model.state_dict())
    torch.testing.assert_close(every_model(b)[1], listed_model(b)[1])  # no padding: the same
    assert not torch.allclose(every_model(b)[0], listed_model(b)[0])


def test_gold_ranks_and_ties():
    scores = torch.tensor([[0.2, 0.9, 0.9, 0.1], [0.5, 0.4, 0.3, float("-inf")], [0.1, 0.2, 0.3, 0.4]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]]).bool()
    gold = torch.tensor([1, 2, -1])
    assert gold_ranks(scores, gold, mask, ties="hit").tolist() == [1, 3, 0]
    assert gold_ranks(scores, gold, mask, ties="miss").tolist() == [2, 3, 0]


# ----------------------------------------------------------------------------- candidate handling

class Table:
    def __init__(self, names):
        self.row = {n: i for i, n in enumerate(names)}


def test_gold_slot_versus_leak_free():
    entities = Table(["A", "B", "C", "D"])
    examples = [{"line": 1, "target": "B"}, {"line": 2, "target": "D"}]
    lists = {1: ["A", "B", "C"], 2: ["A", "B", "C"]}
    slots, gold = resolve_slots(lists, examples, entities, gold_slot=True, training=False, source="x")
    assert slots.tolist() == [[0, 1, 2, 1], [0, 1, 2, 3]] and gold.tolist() == [1, -1]  # gold always appended
    slots, gold = resolve_slots(lists, examples, entities, gold_slot=False, training=False, source="x")
    assert slots.tolist() == [[0, 1, 2], [0, 1, 2]] and gold.tolist() == [1, -1]        # nothing added
    slots, gold = resolve_slots(lists, examples, entities, gold_slot=False, training=True, source="x")
    assert slots.tolist() == [[0, 1, 2], [0, 1, 3]] and gold.tolist() == [1, 2]         # a positive to train on
    with pytest.raises(DataError, match="not in the knowledge base"):
        resolve_slots({1: ["A", "Z"], 2: ["A"]}, examples, entities, gold_slot=False, training=False, source="x")


def test_the_gold_slot_reaches_the_other_scores():
    """DRIN.md quirk 1: with the appended slot, the gold entity's features change the listed candidates' scores."""
    torch.manual_seed(0)
    model = DRIN(6, 5, dim=8).eval()
    b = random_batch(B=1, C=4)
    changed = random_batch(B=1, C=4, seed=1)
    changed.mention_text = b.mention_text
    for name in ("entity_text", "entity_text_edge", "entity_image", "entity_text_joint", "entity_image_joint",
                 "entity_objects", "entity_object_scores"):  # only the last slot (the gold slot) differs
        value = getattr(b, name).clone()
        value[:, -1] = getattr(changed, name)[:, -1]
        setattr(changed, name, value)
    for name in ("mention_image", "mention_text_joint", "mention_image_joint", "mention_objects",
                 "mention_object_scores"):
        setattr(changed, name, getattr(b, name))
    assert not torch.allclose(model(b)[:, :3], model(changed)[:, :3])
    b.mask[:, -1] = 0  # a padded (leak-free) slot does not
    changed.mask[:, -1] = 0
    torch.testing.assert_close(model(b)[:, :3], model(changed)[:, :3])


# ----------------------------------------------------------------------------- end to end

def drin_flags(data, out, *extra):
    return ["--method", "drin", "--data_dir", data["data_dir"], "--dataset", "tiny", "--ckpt_dir", str(out / "ckpt"),
            "--log_dir", str(out / "log"), "--hidden", "16", "--train_epoch", "3", "--batch_size", "4", *extra]


def test_features_file(drin_dataset):
    with h5py.File(os.path.join(drin_dataset["folder"], "drin.entities.h5")) as h5:
        assert h5["text"].shape == (16, 384) and h5["image"].shape == (16, 1024)
        assert h5["has_image"][()].sum() == 15 and not h5["image"][15].any()  # Israel: no image, zero feature
    with h5py.File(os.path.join(drin_dataset["folder"], "drin.test.h5")) as h5:
        assert h5["text"].shape == (3, 384) and h5["image"].shape == (3, 1, 1024)
        assert h5["lines"][()].tolist() == [1, 2, 3]


def test_split_rows_and_gold(drin_dataset):
    folder = drin_dataset["folder"]
    entities = EntityTable.load(folder, "tiny")
    examples = read_split(os.path.join(folder, "test.json"))
    split = DrinSplit.load(folder, "tiny", "test", examples, entities, gold_slot=False, training=False)
    assert split.gold.tolist()[1] == -1 and split.scored == 4
    batch = make_batch(split, entities, [0, 2])
    assert batch.entity_text.shape == (2, 4, 384) and batch.mention_image.shape == (2, 1, 1024)


def test_train_then_evaluate_both_ways(drin_dataset, tmp_path):
    import infe
    import main

    test = main.main(drin_flags(drin_dataset, tmp_path))
    assert test["examples"] == 3 and test["protocol"] == "leak_free"
    assert test["hits@1"] <= 100 * 2 / 3  # the third mention's gold is not among its candidates
    ckpt = tmp_path / "ckpt" / "drin_tiny_tt-ti-it-ii_dynamic.pt"
    assert ckpt.exists() and (tmp_path / "ckpt" / "drin_tiny_tt-ti-it-ii_dynamic.test.predictions.jsonl").exists()
    rows = [json.loads(line) for line in open(tmp_path / "log" / "drin_tiny_tt-ti-it-ii_dynamic.metrics.jsonl")]
    assert [r["epoch"] for r in rows if "train_loss" in r] == [1, 2, 3]

    again = infe.main(drin_flags(drin_dataset, tmp_path))
    assert again["hits@1"] == pytest.approx(test["hits@1"]) and again["mrr"] == pytest.approx(test["mrr"], abs=1e-6)
    faithful = infe.main(drin_flags(drin_dataset, tmp_path, "--protocol", "original", "--best_ckpt", str(ckpt)))
    assert faithful["protocol"] == "original"
    assert faithful["hits@1_listed"] == pytest.approx(faithful["hits@1"] * 3 / 2)  # WikiDiverse's correction
    assert (tmp_path / "ckpt" / "drin_tiny_tt-ti-it-ii_dynamic.infe.test.original.predictions.jsonl").exists()
    with pytest.raises(SystemExit, match="earlier evaluation"):
        infe.main(drin_flags(drin_dataset, tmp_path))
    with pytest.raises(SystemExit, match="another run's results"):
        main.main(drin_flags(drin_dataset, tmp_path))


def test_the_original_protocol_keeps_the_last_model(drin_dataset, tmp_path):
    import main
    import params

    args = params.parse_args(drin_flags(drin_dataset, tmp_path, "--protocol", "original"))
    assert (args.gold_slot, args.best_dev, args.ties, args.mention_mean, args.loss) == (True, False, "hit", "all",
                                                                                         "released")
    main.main(drin_flags(drin_dataset, tmp_path, "--protocol", "original"))
    config = json.loads((tmp_path / "ckpt" / "drin_tiny_tt-ti-it-ii_dynamic_original.json").read_text())
    assert config["best_epoch"] == 3 and config["protocol"] == "original"  # the last of 3 epochs, whatever dev says


def test_resume_gives_the_same_model(drin_dataset, tmp_path, monkeypatch):
    import main
    from mel.drin import run

    full = main.main(drin_flags(drin_dataset, tmp_path / "a"))
    real = run.evaluate_ranking
    calls = [0]

    def crashing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:  # during the third epoch's dev evaluation: two epochs are saved
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "evaluate_ranking", crashing)
    with pytest.raises(KeyboardInterrupt):
        main.main(drin_flags(drin_dataset, tmp_path / "b"))
    monkeypatch.setattr(run, "evaluate_ranking", real)
    resumed = main.main(drin_flags(drin_dataset, tmp_path / "b", "--resume"))
    assert resumed["mrr"] == pytest.approx(full["mrr"], abs=1e-6)
    a = torch.load(tmp_path / "a" / "ckpt" / "drin_tiny_tt-ti-it-ii_dynamic.pt")["state_dict"]
    b = torch.load(tmp_path / "b" / "ckpt" / "drin_tiny_tt-ti-it-ii_dynamic.pt")["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_missing_features_are_named(tiny_dataset, tmp_path):
    import main

    with pytest.raises(SystemExit, match="drin.entities.h5.*prepare.py drin"):
        main.main(["--method", "drin", "--data_dir", tiny_dataset["data_dir"], "--dataset", "tiny",
                   "--ckpt_dir", str(tmp_path / "c"), "--log_dir", str(tmp_path / "l")])


def test_span_feature_is_the_mean_of_the_span_tokens(minilm_dir):
    """The mention's text feature averages the token states inside its character span (a split line's own
    mention_span when given, else the first occurrence), as the original's Avg over [start, end)."""
    from mel.drin.features import TextEncoder, mention_span

    text = "Paris met Paris Hilton in Paris."
    encoder = TextEncoder(minilm_dir)
    assert mention_span(text, "Paris") == (0, 5) and mention_span(text, "paris hilton") == (10, 22)
    features, fallbacks = encoder.spans([text, text, text], [(0, 5), (26, 31), None])
    enc = encoder.encoder.tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0]
    with torch.no_grad():
        states = encoder.encoder.model(**enc).last_hidden_state[0]
    last = [i for i, (a, b) in enumerate(offsets.tolist()) if a >= 26 and b <= 31 and b > a]
    np.testing.assert_allclose(features[1], states[last].mean(0).numpy(), atol=1e-5)
    assert not np.allclose(features[0], features[1], atol=1e-3)
    real = [i for i, (a, b) in enumerate(offsets.tolist()) if b > a]
    np.testing.assert_allclose(features[2], states[real].mean(0).numpy(), atol=1e-5)  # no span: the sentence
    assert fallbacks == 1


def test_untrained_model_is_evaluated_and_its_config_is_json(drin_dataset, tmp_path):
    import main

    flags = drin_flags(drin_dataset, tmp_path)
    flags[flags.index("--train_epoch") + 1] = "0"
    test = main.main(flags)
    config = json.loads((tmp_path / "ckpt" / "drin_tiny_tt-ti-it-ii_dynamic.json").read_text())
    assert config["best_dev_hits@1"] is None and config["best_epoch"] is None and test["examples"] == 3


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random CLIP (text and vision towers, projection 8) with a character-level CLIP tokenizer, as a folder."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny-clip-full")
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=77, eos_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|startoftext|>"],
                pad_token_id=vocab["<|endoftext|>"])
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                                         crop_size={"height": 32, "width": 32}),
                  tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)


def test_clip_image_text_space(drin_dataset, tiny_clip, tiny_dataset, tmp_path):
    """--image_text clip: the cross-modal towers are CLIP's projected embeddings of the image files and the texts;
    a text past 77 tokens is truncated with its end-of-text token kept (the original lost it)."""
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    import prepare

    root = tmp_path / "data"
    folder = root / "tiny"
    shutil.copytree(drin_dataset["folder"], folder)
    (folder / "image_captions.jsonl").unlink()
    images, rng = tmp_path / "images", np.random.default_rng(0)
    keys = [json.loads(line)["img_url"] for split in ("train", "dev", "test")
            for line in open(folder / f"{split}.json", encoding="utf-8")]
    keys += [e["image"] for e in map(json.loads, open(folder / "entities.jsonl")) if e["image"]]
    for key in keys:
        (images / key).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / key)
    prepare.main(["drin", "--data_dir", str(root), "--dataset", "tiny", "--text_encoder", tiny_dataset["simcse_model"],
                  "--clip_model", tiny_clip, "--images", str(images)])
    model, processor = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)
    examples = read_split(str(folder / "test.json"))
    with h5py.File(folder / "drin.test.h5") as h5, torch.no_grad():
        pixels = processor(images=Image.open(images / examples[0]["img_url"]).convert("RGB"),
                           return_tensors="pt")["pixel_values"]
        expected = model.get_image_features(pixel_values=pixels)
        expected = expected if isinstance(expected, torch.Tensor) else expected.pooler_output
        np.testing.assert_allclose(h5["image_joint"][0], expected[0].numpy(), atol=1e-5)
        enc = processor(text=[examples[1]["text"]], return_tensors="pt")
        expected = model.get_text_features(**enc)
        expected = expected if isinstance(expected, torch.Tensor) else expected.pooler_output
        np.testing.assert_allclose(h5["text_joint"][1], expected[0].numpy(), atol=1e-5)
    from mel.drin.features import ClipSpace
    ids = processor(text=["word " * 100], padding=True, truncation=True, max_length=77)["input_ids"][0]
    assert len(ids) == 77 and ids[-1] == processor.tokenizer.eos_token_id
    assert ClipSpace(tiny_clip, {}).texts(["word " * 100]).shape == (1, 8)
    entities = EntityTable.load(str(folder), "tiny")
    assert entities.image_joint.shape == (16, 8) and not entities.image_joint[15].any()  # Israel: no image


def test_wikimel_entity_pooling(minilm_dir):
    """--entity_pooling wikimel: the vertex gets the mean of the tokens between [CLS] and [SEP], the tt edge [CLS]."""
    from mel.drin.features import TextEncoder

    encoder = TextEncoder(minilm_dir)
    texts = ["Paris: capital of France", "Jordan River: a river in the Middle East, flowing into the Dead Sea"]
    means, cls = encoder.wikimel_entities(texts)
    for row, text in enumerate(texts):
        enc = encoder.encoder.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            states = encoder.encoder.model(**enc).last_hidden_state[0]
        np.testing.assert_allclose(means[row], states[1:-1].mean(0).numpy(), atol=1e-5)
        np.testing.assert_allclose(cls[row], states[0].numpy(), atol=1e-5)


def test_stored_detector_objects_feed_the_ii_edge(drin_dataset, tmp_path):
    """Object crops and scores stored in the feature files (e.g. from DRIN's detector) replace the whole image."""
    root = tmp_path / "data"
    folder = root / "tiny"
    shutil.copytree(drin_dataset["folder"], folder)
    rng = np.random.default_rng(0)
    with h5py.File(folder / "drin.entities.h5", "a") as h5:
        h5["objects"] = rng.standard_normal((16, 1, 1024)).astype(np.float32)
        h5["object_scores"] = rng.random((16, 1)).astype(np.float32)
    with h5py.File(folder / "drin.test.h5", "a") as h5:
        h5["objects"] = rng.standard_normal((3, 3, 1024)).astype(np.float32)
        h5["object_scores"] = rng.random((3, 3)).astype(np.float32)
    entities = EntityTable.load(str(folder), "tiny")
    split = DrinSplit.load(str(folder), "tiny", "test", read_split(str(folder / "test.json")), entities, False, False)
    batch = make_batch(split, entities, [0, 1, 2])
    assert batch.mention_objects.shape == (3, 3, 1024) and batch.entity_objects.shape == (3, 4, 1, 1024)
    s, t = batch.mention_object_scores[0], batch.entity_object_scores[0, 2]
    cos = F.cosine_similarity(batch.mention_objects[0], batch.entity_objects[0, 2], dim=-1)  # (3,)
    expected = float((s * t[0] * cos).sum() / (s.sum() * t[0] + 1e-9))
    assert initial_edges(batch)["ii"][0, 2].item() == pytest.approx(expected, abs=1e-5)


def test_stale_or_missing_inputs_are_named(drin_dataset, tmp_path):
    root = tmp_path / "data"
    folder = root / "tiny"
    shutil.copytree(drin_dataset["folder"], folder)
    with open(folder / "entities.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"name": "Texas", "description": "a state", "image": None}) + "\n")
    with pytest.raises(DataError, match="built from another version of .*entities.jsonl"):
        EntityTable.load(str(folder), "tiny")
    (folder / "entities.jsonl").unlink()  # without the source file the features are taken as they are
    entities = EntityTable.load(str(folder), "tiny")
    (folder / "candidates.test.jsonl").unlink()
    with pytest.raises(DataError, match="prepare.py candidates --dataset tiny`, or convert DRIN's raw data"):
        DrinSplit.load(str(folder), "tiny", "test", read_split(str(folder / "test.json")), entities, False, False)


def test_recomputed_image_features_make_the_feature_files_stale(drin_dataset, tmp_path):
    """The feature files record every file they were computed from, the image features and captions included."""
    folder = tmp_path / "tiny"
    shutil.copytree(drin_dataset["folder"], folder)
    with h5py.File(folder / "clip_vit_large_patch14_1024.hdf5", "a") as h5:
        h5["entity/0.jpg"][...] = 0.5  # as a rerun of prepare.py clip with another model would
    with pytest.raises(DataError, match=r"drin\.entities\.h5: built from another version of .*"
                                        r"clip_vit_large_patch14_1024\.hdf5"):
        EntityTable.load(str(folder), "tiny")
    shutil.copy(os.path.join(drin_dataset["folder"], "clip_vit_large_patch14_1024.hdf5"), folder)
    with open(folder / "image_captions.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"key": "extra.jpg", "caption": "a new caption"}) + "\n")
    with pytest.raises(DataError, match=r"built from another version of .*image_captions\.jsonl"):
        EntityTable.load(str(folder), "tiny")


@pytest.mark.parametrize("damage, expected", [
    ("no names", "has no `names`"),
    ("object text", "`text` holds object values, not numbers"),
    ("no sources", "records no entities.jsonl it was built from"),
])
def test_a_malformed_feature_file_is_named(drin_dataset, tmp_path, damage, expected):
    folder = tmp_path / "tiny"
    shutil.copytree(drin_dataset["folder"], folder)
    with h5py.File(folder / "drin.entities.h5", "a") as h5:
        if damage == "no names":
            del h5["names"]
        elif damage == "object text":
            rows = h5["text"].shape[0]
            del h5["text"]
            h5.create_dataset("text", data=np.array(["x"] * rows, dtype=object), dtype=h5py.string_dtype())
        else:
            h5.attrs["sources"] = "{}"
    with pytest.raises(DataError, match=expected) as raised:
        EntityTable.load(str(folder), "tiny")
    assert str(raised.value).startswith(str(folder / "drin.entities.h5"))


def test_resume_with_nothing_to_resume_is_refused(drin_dataset, tmp_path):
    import main

    with pytest.raises(SystemExit, match=r"--resume: no run drin_tiny_tt-ti-it-ii_dynamic in --ckpt_dir"):
        main.main(drin_flags(drin_dataset, tmp_path, "--resume"))

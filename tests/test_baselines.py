"""GHMFC and MEL-HI (the baselines DRIN's repository ships): sizes, the released computations and their fixes, runs on
a dataset folder and on the preprocessed release."""
import shutil

import h5py
import pytest
import torch

import infe
import main
from mel.drin.baselines import GHMFC, MELHI
from mel.drin.model import DrinBatch
from released import write_wikidiverse, write_wikimel


def batch(B=3, C=4, T=12, Dt=16, R=5, Di=24, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    mask = torch.zeros(B, T, dtype=torch.long)
    for i, n in enumerate([12, 9, 7][:B]):
        mask[i, :n] = 1
    return DrinBatch(mention_text=r(B, Dt), mention_image=r(B, R, Di).abs(), mention_text_joint=r(B, 1),
                     mention_image_joint=r(B, 1), mention_objects=r(B, 1, Di), mention_object_scores=torch.ones(B, 1),
                     entity_text=r(B, C, Dt), entity_text_edge=r(B, C, Dt), entity_image=r(B, C, Di).abs(),
                     entity_text_joint=r(B, C, 1), entity_image_joint=r(B, C, 1), entity_objects=r(B, C, 1, Di),
                     entity_object_scores=torch.ones(B, C, 1), mask=torch.ones(B, C), mention_tokens=r(B, T, Dt),
                     mention_token_mask=mask, mention_span=torch.tensor([[3, 5], [1, 2], [4, 6]][:B]))


def test_parameter_counts_are_the_released_ones():
    """BASELINES.md counts, at WikiDiverse's widths (BERT 768, ResNet-152 2048)."""
    assert sum(p.numel() for p in GHMFC(768, 2048).parameters()) == 47_373_058
    assert sum(p.numel() for p in MELHI(768, 2048).parameters()) == 48_779_520


def test_ghmfc_ignores_the_span_and_the_entity_images():
    torch.manual_seed(0)
    model = GHMFC(16, 24, dim=8, heads=4).eval()
    b = batch()
    before = model(b)
    b.mention_span = torch.tensor([[1, 2], [3, 7], [2, 3]])
    b.entity_image = b.entity_image * 5
    torch.testing.assert_close(model(b), before)
    assert before.shape == (3, 4) and torch.all(before.abs() <= 1 + 1e-6)


def test_melhi_reads_each_contexts_last_state_or_the_released_row():
    """Fixed: each context's own last LSTM state. Released: the packed output's row rank - 1, the first step of the
    mention whose context is just longer (BASELINES.md, MEL-HI quirk 1)."""
    torch.manual_seed(0)
    model = MELHI(4, 6).eval()
    width = model.lstm.input_size
    contexts = [torch.randn(n, width) for n in (3, 5, 2)]
    with torch.no_grad():
        fixed = model._last(contexts)
        for i, context in enumerate(contexts):
            _, (h, _) = model.lstm(context.unsqueeze(1))  # alone, unpacked
            torch.testing.assert_close(fixed[i], h[-1, 0])
        model.released = True
        released = model._last(contexts)
        first_steps = [model.lstm(c[:1].unsqueeze(1))[0][0, 0] for c in contexts]
    # ranks by length: context 1 (5) is first, context 0 (3) second, context 2 (2) third
    torch.testing.assert_close(released[0], first_steps[1])   # rank 1 reads rank 0's first step
    torch.testing.assert_close(released[2], first_steps[0])   # rank 2 reads rank 1's first step
    torch.testing.assert_close(released[1], fixed[1])          # rank 0: the packed data's last row, its own last step


def test_melhi_gate_sees_the_gold_slot_only_when_released():
    """Only the appended gold slot's image is close to the mention's: the released gate opens, the fixed one (listed
    candidates only) stays shut, and the scores differ."""
    torch.manual_seed(0)
    b = batch(B=1)
    model = MELHI(16, 24, threshold=0.3)
    with torch.no_grad():
        model.image_to_text.weight.zero_()
        model.image_to_text.bias.copy_(torch.eye(16)[0])  # the mapped image is e_0, whatever the image
    b.mention_tokens[0, 0] = torch.eye(16)[0]           # [CLS] = e_0: the text-image test passes
    image = b.mention_image.mean(-2)
    b.entity_image[0] = -image[0]                        # every candidate's image opposite to the mention's ...
    b.entity_image[0, -1] = image[0]                     # ... but the last slot's, the appended gold slot
    b.mask[0, -1] = 0
    with torch.no_grad():
        mapped = model.image_to_text(image)
        model.released = False
        assert model.gate(b, image, mapped).tolist() == [0.0]
        shut = model(b)
        model.released = True
        assert model.gate(b, image, mapped).tolist() == [1.0]
        assert not torch.allclose(model(b), shut)


@pytest.mark.parametrize("method", ["ghmfc", "melhi"])
def test_a_baseline_trains_and_evaluates_on_a_dataset_folder(drin_dataset, tmp_path, method):
    flags = ["--method", method, "--data_dir", drin_dataset["data_dir"], "--dataset", "tiny", "--ckpt_dir",
             str(tmp_path / "c"), "--log_dir", str(tmp_path / "l"), "--train_epoch", "2", "--batch_size", "4"]
    test = main.main(flags)
    assert test["examples"] == 3 and (tmp_path / "c" / f"{method}_tiny.pt").exists()
    again = infe.main(flags)
    assert again["mrr"] == pytest.approx(test["mrr"], abs=1e-6)
    original = main.main(flags + ["--protocol", "original"])
    assert original["protocol"] == "original" and (tmp_path / "c" / f"{method}_tiny_original.pt").exists()


@pytest.mark.parametrize("method", ["ghmfc", "melhi"])
@pytest.mark.parametrize("dataset", ["wikidiverse", "wikimel"])
def test_a_baseline_trains_on_the_preprocessed_release(tmp_path, method, dataset):
    (write_wikimel if dataset == "wikimel" else write_wikidiverse)(str(tmp_path))
    flags = ["--method", method, "--preprocess_dir", str(tmp_path), "--dataset", dataset, "--ckpt_dir",
             str(tmp_path / "c"), "--log_dir", str(tmp_path / "l"), "--train_epoch", "1", "--batch_size", "4"]
    test = main.main(flags)
    assert test["examples"] == 6 and test["candidates"] == (100 if dataset == "wikimel" else 10)
    assert infe.main(flags)["mrr"] == pytest.approx(test["mrr"], abs=1e-6)


def test_features_without_token_states_are_named(drin_dataset, tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(drin_dataset["folder"], folder)
    for split in ("train", "dev", "test"):
        with h5py.File(folder / f"drin.{split}.h5", "a") as h5:
            for name in ("tokens", "token_mask", "token_span"):
                del h5[name]
    with pytest.raises(SystemExit, match=r"GHMFC reads each sentence's token states.*prepare\.py drin --token_states"):
        main.main(["--method", "ghmfc", "--data_dir", str(tmp_path), "--dataset", "tiny", "--ckpt_dir",
                   str(tmp_path / "c"), "--log_dir", str(tmp_path / "l")])

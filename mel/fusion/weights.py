"""Fusion weights: each candidate's fused score is w_lm * lm + w_retriever * retriever + w_ranker * ranker, where lm is
the LM's sum of log-probabilities (EOS included) divided by length ** length_penalty (GEMEL's score at length penalty
1). Chosen on dev by an exhaustive grid, from the scores of one pass: nothing is decoded again per weight."""
import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from mel.errors import DataError
from mel.io.datasets import is_finite_number

SIGNALS = ("lm", "retriever", "ranker")
WEIGHT_GRID = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
LENGTH_PENALTY_GRID = (0.5, 1.0, 1.5)


@dataclass(frozen=True)
class Fusion:
    lm: float = 1.0
    retriever: float = 0.0
    ranker: float = 0.0
    length_penalty: float = 1.0  # GEMEL's (transformers' default)

    def weights(self):
        return {name: getattr(self, name) for name in SIGNALS}

    def as_dict(self):
        return asdict(self)

    @classmethod
    def parse(cls, text, source="--fusion_weights"):
        """From "lm=1,retriever=0.3,ranker=3,length_penalty=1" (names left out keep their defaults)."""
        values = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in (*SIGNALS, "length_penalty"):
                raise DataError(f"{source}: unknown name {name!r} in {text!r}; use lm, retriever, ranker and "
                                f"length_penalty, e.g. lm=1,retriever=0.3")
            try:
                values[name] = float(value)
            except ValueError:
                raise DataError(f"{source}: {part!r} is not name=number") from None
            if not math.isfinite(values[name]) or values[name] < 0:
                raise DataError(f"{source}: {name} must be a finite number >= 0, got {value!r}")
        fusion = cls(**values)
        if not any(fusion.weights().values()):
            raise DataError(f"{source}: every weight is 0 in {text!r}; give at least one positive weight")
        return fusion

    @classmethod
    def from_dict(cls, stored, source):
        """The fusion a checkpoint's config stores, checked."""
        if not isinstance(stored, dict) or set(stored) != {*SIGNALS, "length_penalty"} or not all(
                is_finite_number(v) and v >= 0 for v in stored.values()):
            raise DataError(f"{source}: the stored fusion weights must map lm, retriever, ranker and length_penalty to "
                            f"numbers >= 0, got {stored!r}; choose them again with `--fusion dev`")
        return cls(**{k: float(v) for k, v in stored.items()})


def fused_scores(scores, fusion):
    """(N, C) fused scores of a CandidateScores; -inf at padded slots."""
    total = np.zeros(scores.mask.shape)
    if fusion.lm:
        total = total + fusion.lm * scores.lm(fusion.length_penalty)
    if fusion.retriever:
        total = total + fusion.retriever * scores.retriever
    if fusion.ranker:
        if scores.ranker is None:
            raise DataError("the fusion weighs a ranker's scores (ranker > 0) but no ranker checkpoint is given: pass "
                            "--fusion_ranker <checkpoint>, or set ranker=0")
        total = total + fusion.ranker * scores.ranker
    return np.where(scores.mask, total, -np.inf)


def ranking(scores, fusion):
    """(N, C) slot order per example, best first; equal scores keep the list's order (the retriever's ranking)."""
    return _best_first(fused_scores(scores, fusion))


def _best_first(fused):
    return np.argsort(-fused, axis=1, kind="stable")


def ranked_entries(scores, fusion):
    """Per example its candidates best first, each {"name", "score": the fused one, and each signal's score}."""
    fused = fused_scores(scores, fusion)
    order = _best_first(fused)
    return [[{"name": scores.names[i][j], "score": float(fused[i, j]), **scores.signals_of(i, j)}
             for j in order[i] if scores.mask[i, j]] for i in range(len(scores.names))]


def hits_and_mrr(scores, fusion):
    """(Hits@1 in %, MRR) of the fused ranking against scores.gold (a gold not listed counts 0)."""
    order = ranking(scores, fusion)
    rank = np.argmax(order == scores.gold[:, None], axis=1) + 1
    rank = np.where(scores.gold >= 0, rank, 0)
    return 100.0 * float(np.mean(rank == 1)), float(np.mean(np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0)))


def candidate_fusions(with_ranker):
    """Every grid point: weights of WEIGHT_GRID (the LM's 0 or 1: only ratios matter), each length penalty where the
    LM counts. The plain signals come first, so that among equal dev figures the simplest fusion wins."""
    points = []
    for lm, retriever, ranker in itertools.product((1.0, 0.0), WEIGHT_GRID, WEIGHT_GRID if with_ranker else (0.0,)):
        if not (lm or retriever or ranker):
            continue
        for lp in (LENGTH_PENALTY_GRID if lm else (1.0,)):
            points.append(Fusion(lm, retriever, ranker, lp))
    return sorted(points, key=lambda f: (sum(w > 0 for w in f.weights().values()), abs(f.length_penalty - 1.0)))


def choose_on_dev(scores):
    """(the Fusion with the best dev Hits@1, then MRR, then the simplest; its (Hits@1, MRR))."""
    best, best_figures = None, None
    for fusion in candidate_fusions(scores.ranker is not None):
        figures = hits_and_mrr(scores, fusion)
        if best is None or figures > best_figures:
            best, best_figures = fusion, figures
    return best, best_figures

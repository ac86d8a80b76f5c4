"""Every candidate's scores from each signal, for one split: the LM's (GEMEL decoding among the example's own
candidates with as many beams as the longest list, so that no candidate is pruned and each gets its exact score),
the retriever's (the candidate file's `scores`) and a trained ranker's (a DRIN, GHMFC or MEL-HI checkpoint)."""
import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch

from mel.decoding.beam_search import FELL_OFF_TREE_SCORE
from mel.errors import DataError
from mel.retrieval.candidates import candidates_path, read_candidate_scores

logger = logging.getLogger(__name__)


@dataclass
class CandidateScores:
    lines: list              # split line of each example
    names: list              # per example its candidates, list order, each name once
    gold: np.ndarray         # (N,) the gold's index among them, -1 when not listed
    mask: np.ndarray         # (N, C) real slots
    lm_average: np.ndarray   # (N, C) GEMEL's score: sum of log-probabilities (EOS included) / length
    lm_length: np.ndarray    # (N, C) that length
    retriever: np.ndarray    # (N, C)
    ranker: np.ndarray | None = None  # (N, C)

    def lm(self, length_penalty=1.0):
        """Sum of log-probabilities / length ** length_penalty (exactly GEMEL's score at 1)."""
        if length_penalty == 1.0:
            return self.lm_average
        return self.lm_average * self.lm_length ** (1.0 - length_penalty)

    def signals_of(self, i, j):
        """{signal: score} of slot j of example i, for the records."""
        out = {"lm": float(self.lm_average[i, j]), "retriever": float(self.retriever[i, j])}
        if self.ranker is not None:
            out["ranker"] = float(self.ranker[i, j])
        return out


def slots_of(examples, lists):
    """(names per example, each once, list order; gold index (N,); mask (N, C))."""
    names = [list(dict.fromkeys(lists[ex["line"]])) for ex in examples]
    width = max(len(n) for n in names)
    mask = np.zeros((len(names), width), dtype=bool)
    for i, n in enumerate(names):
        mask[i, :len(n)] = True
    gold = np.array([n.index(ex["target"]) if ex["target"] in n else -1 for ex, n in zip(examples, names)])
    return names, gold, mask


def lm_scores(exp, split, settings):
    """({line: {name: GEMEL's score}}, token lengths {name: length with EOS}) of every candidate of a split whose
    Split carries candidate lists: decoding with a beam per candidate of the longest list prunes none."""
    from mel.gemel.evaluation import evaluate

    longest = max(len(set(names)) for names in split.candidates.values())
    cache = exp.builder.cache
    lengths = {name: len(cache[name]) + 1 for names in split.candidates.values() for name in names}
    exhaustive = dataclasses.replace(settings, num_beams=longest, show_examples=0, nil_threshold=None,
                                     max_new_tokens=max(settings.max_new_tokens, max(lengths.values())))
    result = evaluate(exp, split, exhaustive)
    return {r["line"]: {entry["name"]: entry["score"] for entry in r["ranked"]} for r in result.records}, lengths


def retriever_scores(path, lines):
    """{line: {name: score}} from the candidate file's `scores`; where a listed line has none, every line's
    retriever score is minus its list position (the file's order is the retriever's ranking)."""
    rows = {line: row for line, row in read_candidate_scores(path).items() if line in lines}
    scored = all(values is not None for _, values in rows.values())
    if not scored:
        logger.info(f"{path}: not every line has finite `scores`; the retriever's score is minus the list position")
    return {line: retriever_row(names, values if scored else None) for line, (names, values) in rows.items()}


def retriever_row(names, values):
    """{name: the retriever's score} of one list: `values`, or minus the list position where None; a name listed
    twice keeps its first (best) score."""
    out = {}
    for name, value in zip(names, values if values is not None else [-float(i) for i in range(len(names))]):
        out.setdefault(name, float(value))
    return out


def ranker_scores(checkpoint, dataset_dir, dataset, split_name, examples, device, batch_size=256):
    """{line: {name: score}} of a DRIN, GHMFC or MEL-HI checkpoint among the split's candidate lists, leak-free
    (scores as link.py computes them), from the dataset folder's `prepare.py drin` features."""
    from mel.drin.data import DrinSplit, EntityTable
    from mel.drin.run import ARCHITECTURE, LEAK_FREE, NAMES, check_token_states, make_model, ranker_config, score
    from mel.runs.checkpoints import load_model_checkpoint, read_model_checkpoint

    method = ranker_config(checkpoint)["method"]
    saved = read_model_checkpoint(checkpoint, ARCHITECTURE[method], NAMES[method])
    split = DrinSplit.load(dataset_dir, dataset, split_name, examples, EntityTable.load(dataset_dir, dataset),
                           gold_slot=False, training=False)
    check_token_states(method, split)
    model = make_model(method, split.dims, saved["architecture"], LEAK_FREE).to(device)
    load_model_checkpoint(model, checkpoint, saved)
    values = score(model, split, batch_size, device)
    out = {}
    for i, ex in enumerate(split.examples):
        out[ex["line"]] = {}
        for row, value in zip(split.slots[i].tolist(), values[i].tolist()):
            if row >= 0:
                out[ex["line"]].setdefault(split.entity_name(row), value)
    return out


def collect(exp, split, settings, ranker=None, device=None):
    """CandidateScores of a candidate Split (split.candidates set) of a dataset split, the ranker's when `ranker` (a
    checkpoint) is given."""
    if split.candidates is None:
        raise DataError("fused scores need candidate lists: pass --use_candidates (prepare.py candidates builds them)")
    args = exp.args
    lm, lengths = lm_scores(exp, split, settings)
    retrieved = retriever_scores(candidates_path(args.dataset_dir, split.name), {ex["line"] for ex in split.examples})
    ranked = None
    if ranker is not None:
        ranked = ranker_scores(ranker, args.dataset_dir, args.dataset, split.name, split.examples,
                               device or torch.device("cpu"))
    return assemble(split.name, split.examples, split.candidates, lm, lengths, retrieved, ranked)


def assemble(name, examples, lists, lm, lengths, retrieved, ranked=None):
    """CandidateScores from each signal's {line: {name: score}} (`lengths`: {name: tokens with EOS}). A name the LM
    could not finish (longer than the decoding allows) scores FELL_OFF_TREE_SCORE; a name the retriever or the
    ranker does not score (the gold --candidates_with_gold adds) scores 1 below the lowest of its list."""
    names, gold, mask = slots_of(examples, lists)
    lines = [ex["line"] for ex in examples]
    lm_average = _matrix(names, mask, lambda i: lm.get(lines[i], {}))
    missing = int((np.isnan(lm_average) & mask).sum())
    if missing:
        logger.info(f"{name}: {missing} candidate(s) got no LM score (their decoded text differs from the name, or "
                    f"they are too long): they score {FELL_OFF_TREE_SCORE}")
    scores = CandidateScores(lines, names, gold, mask, np.nan_to_num(lm_average, nan=FELL_OFF_TREE_SCORE),
                             np.where(mask, _matrix(names, mask, lambda i: lengths, fill=1.0), 1.0),
                             _below_the_rest(_matrix(names, mask, lambda i: retrieved.get(lines[i], {})), mask))
    if ranked is not None:
        scores.ranker = _below_the_rest(_matrix(names, mask, lambda i: ranked.get(lines[i], {})), mask)
    return scores


def _matrix(names, mask, values_of, fill=np.nan):
    """(N, C) values_of(i)[name] per slot; NaN (or `fill`) where none, 0 at padding."""
    out = np.zeros(mask.shape, dtype=np.float64)
    for i, row in enumerate(names):
        values = values_of(i)
        out[i, :len(row)] = [values.get(name, fill) for name in row]
    return out


def _below_the_rest(matrix, mask):
    """NaN slots set 1 below the lowest real score of their row (0 where a row has none)."""
    known = np.where(mask & ~np.isnan(matrix), matrix, np.inf).min(axis=1, keepdims=True)
    floor = np.where(np.isfinite(known), known - 1.0, 0.0)
    return np.where(np.isnan(matrix), floor, matrix)

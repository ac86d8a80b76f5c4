"""Candidate entities per mention: the file format, building it from the knowledge base, recall@k. Decoding among
an example's own candidates is mel/tree/candidate_trees.py.

File: `<dataset folder>/candidates.<split>.jsonl`, one JSON object per non-NIL line of `<split>.json`:
    {"line": 12, "mention": "Jordan", "candidates": ["Jordan", "Michael Jordan", ...], "scores": [0.91, ...]}
`line` is the line number in the split file (NIL lines keep their numbers, so the two files never drift apart);
candidates are entity names, best first. The gold entity may be missing: that is a retriever's miss, counted by
recall@k, and the example can then not be linked correctly (unless --candidates_with_gold, an oracle setting).
"""
import logging
import os

import numpy as np

from mel.errors import DataError
from mel.io.datasets import NIL, is_finite_number, read_jsonl_objects

logger = logging.getLogger(__name__)

RECALL_AT = (1, 5, 10, 20, 50, 100)


def candidates_path(dataset_dir, split):
    return os.path.join(dataset_dir, f"candidates.{split}.jsonl")


# ----------------------------------------------------------------------------- reading

def read_candidates(path, examples, alternative="or drop --use_candidates"):
    """{split line: [names, best first]} for every example of the split, checked line by line."""
    if not os.path.exists(path):
        dataset = os.path.basename(os.path.dirname(os.path.abspath(path)))
        raise DataError(f"{path}: candidate file not found. Build it with `python prepare.py candidates --dataset "
                        f"{dataset}`, {alternative}")
    found, mentions = {}, {}
    for number, row in read_jsonl_objects(path):
        names = row.get("candidates")
        if not isinstance(row.get("line"), int) or not isinstance(row.get("mention"), str) \
                or not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise DataError(f"{path}, line {number}: expected {{\"line\": <split line number>, \"mention\": "
                            f"<its mention>, \"candidates\": [non-empty entity names]}}")
        found[row["line"]], mentions[row["line"]] = names, (number, row["mention"])
    missing = [ex["line"] for ex in examples if ex["line"] not in found]
    if missing:
        raise DataError(f"{path}: no candidates for {len(missing)} example(s) of the split, e.g. its line "
                        f"{missing[0]}; rebuild it with `python prepare.py candidates`")
    for ex in examples:  # a list made for another split, or an edited split, names other mentions
        number, mention = mentions[ex["line"]]
        if mention != ex["mention"]:
            raise DataError(f"{path}, line {number}: the candidates of mention {mention!r}, but line {ex['line']} of "
                            f"the split is {ex['mention']!r}: the file belongs to another split or version of it; "
                            f"rebuild it with `python prepare.py candidates`")
    return {ex["line"]: found[ex["line"]] for ex in examples}


def read_candidate_scores(path):
    """{split line: (its candidates, the retriever's score of each or None)} of a candidate file: a line's `scores`
    (optional) count where they give one finite number per candidate."""
    out = {}
    for _, row in read_jsonl_objects(path):
        names, values = row.get("candidates") or [], row.get("scores")
        given = isinstance(values, list) and len(values) == len(names) and all(is_finite_number(v) for v in values)
        out[row.get("line")] = (names, [float(v) for v in values] if given else None)
    return out


def with_gold(candidates, examples):
    """The oracle setting: each example's gold name added at the end of its list when the retriever missed it."""
    return {ex["line"]: candidates[ex["line"]] + ([ex["target"]] if ex["target"] not in candidates[ex["line"]]
                                                  and ex["target"] != NIL else []) for ex in examples}


def recall_at(candidates, examples, ks=RECALL_AT):
    """{k: % of linked examples (NIL lines aside) whose gold name is among their first k candidates}."""
    examples = [ex for ex in examples if ex["target"] != NIL]
    ranks = [candidates[ex["line"]].index(ex["target"]) + 1 if ex["target"] in candidates[ex["line"]] else None
             for ex in examples]
    n = max(len(examples), 1)
    return {k: 100.0 * sum(r is not None and r <= k for r in ranks) / n for k in ks}


# ----------------------------------------------------------------------------- building (prepare.py candidates)

def trigrams(text):
    text = f"  {text.lower()} "
    return {text[i:i + 3] for i in range(len(text) - 2)}


def string_similarity(a, b):
    """Jaccard similarity of character trigrams: 1 for equal strings (case aside), high for shared words."""
    x, y = trigrams(a), trigrams(b)
    return len(x & y) / max(len(x | y), 1)


RETRIEVERS = ("mention", "context")


def _unit(matrix):
    matrix = np.asarray(matrix, np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def rank_candidates(mention_vectors, mentions, name_vectors, names, k, shortlist=100, context=None):
    """Per mention the k best names and scores: the encoder's `shortlist` most similar names (cosine) plus names
    equal to the mention (case aside), reranked by cosine + trigram similarity of the strings.

    context: (sentence vectors (M, D), entity text vectors (N, D)) for the context retriever: the `shortlist` entities
    whose text ("name: description") is closest to the mention's sentence join the pool, and that cosine is added
    to the score."""
    cosine = _unit(mention_vectors) @ _unit(name_vectors).T  # (M, N)
    in_context = _unit(context[0]) @ _unit(context[1]).T if context is not None else None
    shortlist = min(shortlist, len(names))
    exact = {}
    for index, name in enumerate(names):
        exact.setdefault(name.lower(), []).append(index)
    ranked = []
    for row, mention in enumerate(mentions):
        pool = set(np.argpartition(-cosine[row], shortlist - 1)[:shortlist].tolist())
        pool.update(exact.get(mention.lower(), []))
        if in_context is not None:
            pool.update(np.argpartition(-in_context[row], shortlist - 1)[:shortlist].tolist())

        def score(i, row=row, mention=mention):
            extra = float(in_context[row, i]) if in_context is not None else 0.0
            return float(cosine[row, i]) + string_similarity(mention, names[i]) + extra

        scored = sorted(((score(i), i) for i in pool), key=lambda pair: (-pair[0], pair[1]))[:k]
        ranked.append(([names[i] for _, i in scored], [round(value, 6) for value, _ in scored]))
    return ranked


def entity_texts(dataset_dir, names):
    """Each name's text for the context retriever: "name: description" from entities.jsonl where it has one (the
    name alone otherwise, or for every name when there is no entities.jsonl)."""
    path = os.path.join(dataset_dir, "entities.jsonl")
    described = {}
    if os.path.exists(path):
        for number, row in read_jsonl_objects(path):
            if not isinstance(row.get("name"), str) or not isinstance(row.get("description", ""), str):
                raise DataError(f"{path}, line {number}: expected {{\"name\": string, \"description\": string, ...}}")
            if row.get("description"):
                described[row["name"]] = f"{row['name']}: {row['description']}"
    if not described:
        logger.info(f"{path}: no entity descriptions; the context retriever compares sentences with names alone")
    return [described.get(name, name) for name in names]


def build_candidates(dataset_dir, splits, names, encoder_name, k, device=None, batch_size=128, cache_dir=None,
                     retriever="mention"):
    """Write candidates.<split>.jsonl for each split; returns {split: recall@k dict}. retriever: "mention" (the
    mention string against the names) or "context" (also the mention's sentence against the entities' texts)."""
    from mel.io.atomic import write_jsonl
    from mel.io.datasets import read_split
    from mel.models.loading import pick_device
    from mel.retrieval.encoder import MentionEncoder

    encoder = MentionEncoder(encoder_name, device=str(pick_device(device)), cache_dir=cache_dir)
    logger.info(f"Embedding {len(names):,} entity names with {encoder_name} ({retriever} retriever)")
    name_vectors = encoder.encode(names, batch_size=batch_size, progress=True)
    text_vectors = None
    if retriever == "context":
        text_vectors = encoder.encode(entity_texts(dataset_dir, names), batch_size=batch_size, progress=True)
    recalls = {}
    for split in splits:
        examples = read_split(os.path.join(dataset_dir, f"{split}.json"), keep_nil=True)  # lists for NIL lines too
        mentions = [ex["mention"] for ex in examples]
        context = None
        if text_vectors is not None:
            context = (encoder.encode([ex["text"] for ex in examples], batch_size=batch_size), text_vectors)
        ranked = rank_candidates(encoder.encode(mentions, batch_size=batch_size), mentions, name_vectors, names, k,
                                 context=context)
        rows = [{"line": ex["line"], "mention": ex["mention"], "candidates": cands, "scores": scores}
                for ex, (cands, scores) in zip(examples, ranked)]
        path = candidates_path(dataset_dir, split)
        write_jsonl(path, rows)
        recalls[split] = recall_at({ex["line"]: r["candidates"] for ex, r in zip(examples, rows)}, examples,
                                   [r for r in RECALL_AT if r <= k])
        logger.info(f"Wrote {path}: {k} candidates for each of {len(rows):,} mentions; recall "
                    + ", ".join(f"@{r} {v:.1f} %" for r, v in recalls[split].items()))
    return recalls

"""Demonstration retrieval: order, ties by file order, self-exclusion."""
import numpy as np

from mel.retrieval.demonstrations import DemonstrationRetriever
from mel.retrieval.encoder import MentionEncoder


def examples(pairs):
    return [{"mention": m, "text": t} for m, t in pairs]


def test_least_similar_first_and_ties_by_file_order():
    train = examples([("a", "t0"), ("b", "t1"), ("a", "t2"), ("c", "t3"), ("a", "t4")])
    e_a, e_b, e_c = [1.0, 0.0], [0.8, 0.6], [0.0, 1.0]
    ret = DemonstrationRetriever(np.array([e_a, e_b, e_a, e_c, e_a]), train)
    # query equal to "a": the three tied "a" rows are the most similar; the later in the file ranks higher
    assert ret.retrieve(np.array([[2.0, 0.0]]), 4) == [[1, 0, 2, 4]]
    assert ret.retrieve(np.array([[2.0, 0.0]]), 2) == [[2, 4]]
    assert ret.retrieve(np.array([[0.0, 1.0]]), 1) == [[3]]
    assert ret.retrieve(np.array([[0.0, 1.0]]), 0) == [[]]


def test_training_query_skips_examples_with_same_mention_and_text():
    train = examples([("a", "t0"), ("a", "t1"), ("b", "t2"), ("a", "t0")])  # line 3 duplicates line 0
    ret = DemonstrationRetriever(np.array([[1.0, 0], [1.0, 0], [0.6, 0.8], [1.0, 0]]), train)
    got = ret.retrieve(np.array([[1.0, 0]]), 2, queries=[train[0]], exclude_self=True)
    assert got == [[2, 1]]  # both copies of (a, t0) are skipped, the next most similar ones are taken


def test_real_encoder_ranks_same_mention_highest(minilm_dir):
    enc = MentionEncoder(minilm_dir)
    mentions = ["Paris", "Michael Jordan", "Liverpool", "Paris", "Jordan"]
    train_emb = enc.encode(mentions)
    query = enc.encode(["Paris"])
    # Both "Paris" rows are the same vector up to float32 noise (one padded batch may compute its rows with
    # different kernels on some CPUs, so not necessarily bit for bit) and far above every other mention (measured:
    # cosine 1.0 against Liverpool 0.38, Jordan 0.19, Michael Jordan 0.16)
    ret = DemonstrationRetriever(train_emb, examples([(m, str(i)) for i, m in enumerate(mentions)]))
    cosine = [float(row @ query[0] / (np.linalg.norm(row) * np.linalg.norm(query[0]))) for row in train_emb]
    np.testing.assert_allclose(ret.scores(query)[0], cosine, rtol=0, atol=1e-5)
    assert cosine[0] > 0.9999 and cosine[3] > 0.9999, cosine
    assert min(cosine[0], cosine[3]) > max(cosine[i] for i in (1, 2, 4)) + 0.3, cosine
    assert sorted(ret.retrieve(query, 2)[0]) == [0, 3]
    next_best = max((1, 2, 4), key=lambda i: cosine[i])  # by the cosines computed here, not the retriever's
    assert ret.retrieve(query, 3)[0][0] == next_best
    # Rows of one mention made bit-identical (as retrieval.build_embeddings writes them: one vector per distinct
    # mention): an exact tie, which the later training line wins
    train_emb[3] = train_emb[0]
    ret = DemonstrationRetriever(train_emb, examples([(m, str(i)) for i, m in enumerate(mentions)]))
    assert ret.retrieve(query, 2) == [[0, 3]]
    # batched encoding equals one-by-one encoding up to float32 noise (padding does not enter mean pooling; had it
    # entered, "Paris" padded to the length of "Michael Jordan" would move by far more than 1e-4)
    one = np.concatenate([enc.encode([m]) for m in mentions])
    np.testing.assert_allclose(enc.encode(mentions), one, rtol=0, atol=1e-4)

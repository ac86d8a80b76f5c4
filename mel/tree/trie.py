"""Prefix tree of entity names for constrained decoding.

Every entity name is stored as the token sequence [EOS] + tokens(name) + [EOS], tokens(name) being
tokenizer(name, add_special_tokens=False).input_ids. Node 0 is the root; its only child is the leading EOS
("start of the answer"). After a complete name EOS is allowed; taking it reaches a leaf and the beam ends.

Storage, one file (see `save`):
  * a CSR transition table in numpy, used at every decoding step:
      offsets    (num_nodes + 1,)  first edge of each node; the edges of node s are offsets[s]:offsets[s+1]
      edge_key   (num_edges,)      int64 parent << 32 | token, sorted, so `advance` is one np.searchsorted
    Node ids are in level order (by depth, then parent, then token), so the child of edge e is node e + 1 and no
    child array is stored: 12 bytes per node in all.
  * a marisa_trie.Trie over the sequences (each token t becomes one code point, see `_tokens_to_codes`): compact
    membership, enumeration and name recovery. It is loaded lazily since decoding never needs it.

A decoding state is a node id; -1 means "fell off the tree" and every query on it answers "nothing allowed".
Torch-free and tokenizer-free: functions taking a tokenizer only call its methods.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import mmap
import os
import struct
from typing import Iterable, Iterator

import marisa_trie
import numpy as np

from mel.errors import TokenizerMismatchError
from mel.io.atomic import atomic_write
from mel.io.safeload import load_pickle

FORMAT_VERSION = 1
MAGIC = b"GEMELTRIE\x00"
_ALIGN = 64
_TOKEN_MASK = np.int64(0xFFFFFFFF)
_SURROGATE_START, _SURROGATE_SIZE = 0xD800, 0x800
# token t -> code point t + 1 (0 stays free as padding), shifted past the surrogate block, which UTF-8 cannot hold
MAX_TOKEN_ID = 0x10FFFF - _SURROGATE_SIZE - 1
_TILE_MIN_PAIRS = 4096  # allowed_indices tiles one slice instead of gathering when all states agree and it pays off
_REBUILD_COMMAND = "python prepare.py trie --dataset {folder} --model_name {model}"


class _PickledGenreTrie:
    """Inert stand-in for GENRE's `Trie` class when its pickled objects are read: holds their attributes, no code."""


# where a pickled GENRE Trie object says its class lives (GENRE's package, a copied trie.py, a script)
_GENRE_TRIE_GLOBALS = {(module, "Trie"): _PickledGenreTrie for module in ("genre.trie", "trie", "__main__")}


# ----------------------------------------------------------------------------------------------- tokenizer helpers

def tokenizer_info(tokenizer) -> dict:
    """Identity of a tokenizer: name, sha256 fingerprint of its vocabulary (token -> id) and EOS id, EOS id, size."""
    vocab = sorted(tokenizer.get_vocab().items())
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
    digest.update(f"eos={tokenizer.eos_token_id}".encode())
    name_or_path = str(getattr(tokenizer, "name_or_path", "") or "").rstrip("/\\")
    return {
        "name": os.path.basename(name_or_path) or type(tokenizer).__name__,
        "fingerprint": digest.hexdigest(),
        "eos_token_id": tokenizer.eos_token_id,
        "vocab_size": len(tokenizer),
    }


def is_opt_tokenizer(tokenizer) -> bool:
    """GEMEL's released prefix_tree_opt.pkl was built with the OPT tokenizer (50265 tokens, <s>=0, <pad>=1, </s>=2)."""
    if len(tokenizer) != 50265:
        return False
    return [tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>")] == [0, 1, 2]


# ----------------------------------------------------------------------------------------------- sequence encoding

def _tokens_to_codes(tokens: np.ndarray) -> np.ndarray:
    """Token ids (>= 0) -> uint32 code points for the marisa keys; order-preserving, never 0, never a surrogate."""
    codes = tokens.astype(np.uint32) + 1
    codes[codes >= _SURROGATE_START] += _SURROGATE_SIZE
    return codes


def _codes_to_tokens(codes: np.ndarray) -> np.ndarray:
    codes = codes.astype(np.int64)
    return np.where(codes >= _SURROGATE_START + _SURROGATE_SIZE, codes - _SURROGATE_SIZE, codes) - 1


def _key_of(sequence) -> str | None:
    """Marisa key of one token sequence, None when it holds a token that no tree can contain."""
    tokens = np.asarray(sequence, dtype=np.int64).ravel()
    if tokens.size == 0 or tokens.min() < 0 or tokens.max() > MAX_TOKEN_ID:
        return None
    return _tokens_to_codes(tokens).tobytes().decode("utf-32-le")


def _keys_to_sequences(keys: list[str]) -> list[list[int]]:
    lengths = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
    codes = np.frombuffer("".join(keys).encode("utf-32-le"), dtype="<u4")
    flat = _codes_to_tokens(codes).tolist()
    ends = np.cumsum(lengths).tolist()
    return [flat[start:end] for start, end in zip([0] + ends[:-1], ends)]


def _pad_sequences(sequences: list) -> tuple[np.ndarray, np.ndarray]:
    """Ragged token sequences -> (lengths (n,), flat tokens (sum of lengths,)) as int64, without a per-token loop."""
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    total = int(lengths.sum())
    flat = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=total)
    return lengths, flat


# ----------------------------------------------------------------------------------------------- the tree

class PrefixTree:
    """Compact prefix tree of [EOS] + name + [EOS] token sequences; answers "which tokens may follow this state"."""

    def __init__(self, offsets: np.ndarray, edge_key: np.ndarray, eos_token_id: int,
                 num_names: int, tokenizer: dict | None, marisa_bytes=None, marisa_trie_obj=None):
        self._offsets = offsets          # (num_nodes + 1,)
        self._edge_key = edge_key        # (num_edges,) int64, sorted
        self.eos_token_id = int(eos_token_id)
        self.tokenizer = dict(tokenizer or {})
        self.source = {}  # what the tree was built from, e.g. {"file": "entities.txt", "sha256": ...} (store.py)
        self.num_nodes = len(offsets) - 1
        self._num_names = int(num_names)
        self._marisa_bytes = marisa_bytes  # buffer (memory-mapped when loaded) to build the marisa trie on demand
        self._marisa = marisa_trie_obj
        self._start = int(self.advance(np.zeros(1, np.int64), np.array([self.eos_token_id]))[0])

    def __len__(self) -> int:
        return self._num_names

    def __repr__(self) -> str:
        name = self.tokenizer.get("name", "unknown tokenizer")
        return f"PrefixTree({len(self)} names, {self.num_nodes} nodes, eos={self.eos_token_id}, tokenizer={name!r})"

    # ------------------------------------------------------------------------------------------- building

    @classmethod
    def from_sequences(cls, sequences: Iterable, eos_token_id: int, tokenizer: dict | None = None) -> "PrefixTree":
        """Build from full token sequences ([EOS] + name + [EOS]); duplicates are dropped.

        Vectorized: pad to a 2-D array, sort the rows, take the longest common prefix (LCP) of neighbours; row i
        then creates the nodes for its columns lcp[i]:len[i]; numbered row-major they come out in DFS preorder,
        which gives each row's parent links, and one stable sort by depth turns that into level order.
        """
        sequences = sequences if isinstance(sequences, list) else list(sequences)
        if not sequences:
            raise ValueError("PrefixTree.from_sequences: no sequences given (the knowledge base has no names)")
        eos = int(eos_token_id)
        lengths, flat = _pad_sequences(sequences)
        _check_sequences(lengths, flat, eos)

        n, width = len(sequences), int(lengths.max())
        # tokens shifted by one so that 0 pads: a sequence that is a prefix of another sorts first, as in Python
        small = flat.max() + 1 < np.iinfo(np.uint16).max
        padded = np.zeros((n, width), dtype=np.uint16 if small else np.uint32)  # (n, width)
        row_starts = np.cumsum(lengths) - lengths
        padded[np.repeat(np.arange(n), lengths), np.arange(len(flat)) - np.repeat(row_starts, lengths)] = flat + 1
        del flat
        order = np.lexsort(padded.T[::-1])
        padded, lengths = padded[order], lengths[order]
        del order

        same_as_previous = padded[1:] == padded[:-1]  # (n - 1, width)
        keep = np.ones(n, dtype=bool)
        keep[1:] = ~same_as_previous.all(axis=1)
        lcp = np.zeros(n, dtype=np.int64)
        lcp[1:] = np.argmin(same_as_previous, axis=1)  # first differing column
        del same_as_previous
        # a duplicate's successor shares with the duplicate exactly what it shares with the kept twin
        padded, lengths, lcp = padded[keep], lengths[keep], lcp[keep]
        n = len(lengths)

        new_nodes = lengths - lcp                                # nodes created by each row
        first_id = 1 + np.cumsum(new_nodes) - new_nodes          # id of the node at (row, lcp[row]); root is 0
        num_nodes = 1 + int(new_nodes.sum())
        columns = np.arange(width)
        creates = (columns >= lcp[:, None]) & (columns < lengths[:, None])  # (n, width), row-major = node id order
        node_token = padded[creates].astype(np.int64) - 1                  # (num_nodes - 1,) token into node 1..
        del creates
        marisa = _build_marisa(padded)
        del padded
        node_parent = np.arange(num_nodes - 1, dtype=np.int64)            # default: the previous node in the row
        # the first node a row creates hangs below the node at depth lcp - 1 of the same path, created by the last
        # earlier row that reached that depth with a new node
        rows = np.arange(n)
        first_parent = np.zeros(n, dtype=np.int64)
        for depth in range(width - 1):
            needs = lcp == depth + 1
            if not needs.any():
                continue
            creator = np.where((lcp <= depth) & (lengths > depth), rows, -1)
            creator = np.maximum.accumulate(creator)[needs]
            first_parent[needs] = first_id[creator] + depth - lcp[creator]
        node_parent[first_id - 1] = first_parent

        # renumber in level order: within a depth, preorder is already (parent's order, token) order, so one stable
        # sort by depth gives ids whose edges, sorted by (parent, token), are exactly children 1, 2, 3, ...: the
        # child of edge e is node e + 1 and needs no array
        node_depth = np.zeros(num_nodes, dtype=np.uint8 if width < 2**8 else np.int64)  # root has depth 0
        node_depth[1:] = np.arange(num_nodes - 1) - np.repeat(first_id - 1 - lcp - 1, new_nodes)
        level_order = np.argsort(node_depth, kind="stable")  # new id -> preorder id
        del node_depth
        new_id = np.empty(num_nodes, dtype=np.int64)
        new_id[level_order] = np.arange(num_nodes)
        previous = level_order[1:] - 1                       # preorder index (into node_*) of new nodes 1..
        parent = new_id[node_parent[previous]]
        edge_key = (parent << 32) | node_token[previous]
        del level_order, new_id, previous, node_parent, node_token
        if len(edge_key) > 1 and not (edge_key[1:] > edge_key[:-1]).all():
            raise AssertionError("internal error: edge keys are not strictly increasing")
        index_dtype = np.int32 if num_nodes < 2**31 else np.int64
        offsets = np.zeros(num_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(parent, minlength=num_nodes), out=offsets[1:])
        offsets = offsets.astype(index_dtype)
        del parent

        tree = cls(offsets, edge_key, eos, n, tokenizer, marisa_trie_obj=marisa)
        if len(marisa) != n:
            raise AssertionError(f"internal error: {len(marisa)} marisa keys for {n} distinct sequences")
        return tree

    @classmethod
    def from_names(cls, names: list[str], tokenizer, batch_size: int = 10000) -> "PrefixTree":
        """Tokenize names in batches (no special tokens, no added space), wrap with EOS, record the tokenizer."""
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no eos_token_id; GEMEL's tree needs one")
        for index, name in enumerate(names):
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"entity name #{index} is {name!r}: names must be non-empty strings")
        sequences = []
        for start in range(0, len(names), batch_size):
            batch = tokenizer(list(names[start:start + batch_size]), add_special_tokens=False)["input_ids"]
            sequences.extend([eos, *ids, eos] for ids in batch)
        return cls.from_sequences(sequences, eos, tokenizer_info(tokenizer))

    @classmethod
    def from_gemel_pickle(cls, path, tokenizer_info_or_None: dict | None = None,
                          eos_token_id: int = 2) -> "PrefixTree":
        """Read GEMEL's released prefix_tree_opt.pkl: a pickled nested dict {token: {token: {...}}}, leaf = {}.

        Every root-to-leaf path is one sequence. The pickle is read by safeload.load_pickle, which runs no code
        from the file: it admits plain containers and, in place of a pickled GENRE `Trie` object, an inert stand-in
        that only keeps its attributes. Without tokenizer info the tree records only what it can know (eos id, the
        file it came from).
        """
        path = os.fspath(path)
        dataset = os.path.basename(os.path.dirname(os.path.abspath(path)))
        rebuild = f"python prepare.py trie --dataset {dataset} --names <entity list>"
        root = load_pickle(path, "prefix-tree pickle", rebuild, extra_globals=_GENRE_TRIE_GLOBALS)
        root = getattr(root, "trie_dict", root)  # a pickled GENRE Trie object carries the dict as trie_dict
        if not isinstance(root, dict) or not root:
            raise ValueError(f"{path}: expected a non-empty nested dict {{token_id: {{token_id: ...}}}} "
                             f"(GEMEL's prefix_tree_opt.pkl), got {type(root).__name__}")
        sequences, path_tokens, stack = [], [], [iter(root.items())]
        while stack:  # iterative DFS: KILT-size trees are too deep/wide for recursion to be comfortable
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                if path_tokens:
                    path_tokens.pop()
                continue
            token, child = item
            if not isinstance(token, (int, np.integer)) or isinstance(token, bool) or not isinstance(child, dict):
                raise ValueError(f"{path}: not a token prefix tree: key {token!r} under {path_tokens} maps to "
                                 f"{type(child).__name__}; expected int keys and dict values (leaf = {{}})")
            if child:
                path_tokens.append(int(token))
                stack.append(iter(child.items()))
            else:
                sequences.append(path_tokens + [int(token)])
        info = dict(tokenizer_info_or_None or {"name": f"unknown (from {os.path.basename(path)})",
                                                "eos_token_id": int(eos_token_id)})
        try:
            return cls.from_sequences(sequences, eos_token_id, info)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error

    # ------------------------------------------------------------------------------------------- file format

    def save(self, path) -> None:
        """Write the tree to one file, atomically (mel.io.atomic.atomic_write: temp file beside it, then os.replace).

        Layout: MAGIC, uint64 header length, JSON header, then 64-byte aligned sections (offsets, edge_key, the
        marisa trie's bytes) whose offsets the header records.
        """
        path = os.fspath(path)
        arrays = {"offsets": self._offsets, "edge_key": self._edge_key}
        blobs = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
        marisa_bytes = self._marisa_trie().tobytes()
        sections, position = {}, 0
        for name, array in blobs.items():
            sections[name] = {"offset": position, "dtype": array.dtype.str, "shape": list(array.shape)}
            position = _aligned(position + array.nbytes)
        sections["marisa"] = {"offset": position, "nbytes": len(marisa_bytes)}
        header = {"format": "gemel-prefix-tree", "format_version": FORMAT_VERSION, "tokenizer": self.tokenizer,
                  "source": self.source,
                  "eos_token_id": self.eos_token_id, "num_names": len(self), "num_nodes": self.num_nodes,
                  "num_edges": int(len(self._edge_key)), "max_token_id": self._max_token_id(),
                  "sections": sections}
        header_bytes = json.dumps(header, ensure_ascii=False).encode("utf-8")
        data_start = _aligned(len(MAGIC) + 8 + len(header_bytes))
        with atomic_write(path, "wb") as handle:
            handle.write(MAGIC + struct.pack("<Q", len(header_bytes)) + header_bytes)
            for name, payload in [*blobs.items(), ("marisa", marisa_bytes)]:
                handle.seek(data_start + sections[name]["offset"])
                handle.write(memoryview(payload).cast("B") if isinstance(payload, np.ndarray) else payload)

    @staticmethod
    def read_header(path) -> dict:
        """The JSON header (tokenizer info, counts, sections) without reading the arrays."""
        path = os.fspath(path)
        with open(path, "rb") as handle:
            start = handle.read(len(MAGIC) + 8)
            if len(start) < len(MAGIC) + 8 or not start.startswith(MAGIC):
                raise ValueError(f"{path} is not a GEMEL prefix tree file (no {MAGIC!r} magic); build one with "
                                 f"`{_REBUILD_COMMAND.format(folder='<folder>', model='<model>')}`")
            (header_length,) = struct.unpack("<Q", start[len(MAGIC):])
            header_bytes = handle.read(header_length)
        if len(header_bytes) != header_length:
            raise ValueError(f"{path}: truncated prefix tree file (header)")
        header = json.loads(header_bytes)
        if header.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: prefix tree format version {header.get('format_version')} is not supported "
                             f"(this code reads version {FORMAT_VERSION}); rebuild it with "
                             f"`{_REBUILD_COMMAND.format(folder='<folder>', model='<model>')}`")
        header["data_start"] = _aligned(len(MAGIC) + 8 + header_length)
        return header

    @classmethod
    def load(cls, path, tokenizer=None) -> "PrefixTree":
        """Memory-map a saved tree. With `tokenizer`, refuse a tree built by a different tokenizer."""
        path = os.fspath(path)
        header = cls.read_header(path)
        if tokenizer is not None:
            _check_tokenizer(path, header, tokenizer)
        with open(path, "rb") as handle:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        start, sections = header["data_start"], header["sections"]
        arrays = {}
        for name in ("offsets", "edge_key"):
            section = sections[name]
            dtype, count = np.dtype(section["dtype"]), int(np.prod(section["shape"]))
            offset = start + section["offset"]
            if offset + count * dtype.itemsize > len(mapped):
                raise ValueError(f"{path}: truncated prefix tree file (section {name})")
            arrays[name] = np.frombuffer(mapped, dtype=dtype, count=count, offset=offset)
        marisa = sections["marisa"]
        marisa_start = start + marisa["offset"]
        if marisa_start + marisa["nbytes"] > len(mapped):
            raise ValueError(f"{path}: truncated prefix tree file (section marisa)")
        marisa_view = memoryview(mapped)[marisa_start:marisa_start + marisa["nbytes"]]
        tree = cls(arrays["offsets"], arrays["edge_key"], header["eos_token_id"],
                   header["num_names"], header["tokenizer"], marisa_bytes=marisa_view)
        tree.source = header.get("source") or {}
        return tree

    # ------------------------------------------------------------------------------------------- decoding interface

    def start_state(self) -> int:
        """Node reached from the root by the leading EOS (the answer's first state)."""
        return self._start

    def start_states(self, batch_size: int) -> np.ndarray:
        """Each example's first state (the same for all: candidates.CandidateTrees gives each its own)."""
        return np.full(batch_size, self._start, dtype=np.int64)

    def allowed(self, state: int) -> np.ndarray:
        """Sorted int64 token ids that may follow `state`; empty for a leaf or -1."""
        state = int(state)
        if not 0 <= state < self.num_nodes:
            return np.zeros(0, dtype=np.int64)
        return self._edge_key[self._offsets[state]:self._offsets[state + 1]] & _TOKEN_MASK

    def advance(self, states: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Child node of each (state, token), -1 where there is no such edge or the state is -1. Shape of states."""
        states = np.asarray(states, dtype=np.int64)
        tokens = np.asarray(tokens, dtype=np.int64)
        keys = (states << 32) + tokens
        # a token outside 0..2**32-1 would spill into a neighbouring parent's keys; -1 is never an edge key
        keys[((tokens >> 32) != 0) | (states < 0)] = -1
        positions = np.searchsorted(self._edge_key, keys)
        np.minimum(positions, len(self._edge_key) - 1, out=positions)
        children = positions + 1  # level-order ids: the child of edge e is node e + 1
        children[self._edge_key[positions] != keys] = -1
        return children

    def allowed_indices(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every allowed (row, token) pair for a batch of states, rows indexing `states` (1-D); no Python loop.

        A logits processor builds its mask with one scatter: mask[rows, tokens] = 0.
        """
        states = np.asarray(states, dtype=np.int64).ravel()
        # off-tree states read the last node, which in level order is always a leaf (no edges)
        safe = np.where(states.astype(np.uint64) < self.num_nodes, states, self.num_nodes - 1)
        starts = self._offsets[safe].astype(np.int64)
        counts = self._offsets[safe + 1] - starts
        rows = np.repeat(np.arange(len(states)), counts)
        if len(rows) > _TILE_MIN_PAIRS and (safe == safe[0]).all():
            # the first step of a beam search: every beam at the start state, whose edges are one slice
            return rows, np.tile(self._edge_key[starts[0]:starts[0] + counts[0]] & _TOKEN_MASK, len(states))
        # edge index = the row's first edge + running index within the row
        edges = np.repeat(starts - (np.cumsum(counts) - counts), counts)
        edges += np.arange(len(edges))
        tokens = self._edge_key.take(edges)
        tokens &= _TOKEN_MASK  # in place: wide states (the start state) give millions of pairs per step
        return rows, tokens

    def is_complete(self, state: int) -> bool:
        """True when EOS may follow, i.e. a whole name has been read."""
        return bool(self.advance(np.array([state]), np.array([self.eos_token_id]))[0] >= 0)

    def get(self, prefix: list[int]) -> list[int]:
        """GENRE-style: tokens allowed after `prefix` read from the root (prefix includes the leading EOS)."""
        state = 0
        for token in prefix:
            state = int(self.advance(np.array([state]), np.array([token]))[0])
            if state < 0:
                return []
        return self.allowed(state).tolist()

    # ------------------------------------------------------------------------------------------- the set of names

    def sequences(self) -> Iterator[list[int]]:
        """Every stored sequence (with both EOS), in sorted order."""
        keys = sorted(self._marisa_trie().iterkeys())
        for start in range(0, len(keys), 10000):
            yield from _keys_to_sequences(keys[start:start + 10000])

    def __contains__(self, sequence) -> bool:
        key = _key_of(sequence)
        return key is not None and key in self._marisa_trie()

    def decode_batches(self, tokenizer, batch_size: int = 10000) -> Iterator[tuple[list[list[int]], list[str]]]:
        """(name tokens, decoded names) per batch of sequences (sorted by tokens): the EOS pair stripped, then
        batch_decode skipping special tokens, as answers are decoded."""
        name_tokens = (sequence[1:-1] for sequence in self.sequences())
        while batch := list(itertools.islice(name_tokens, batch_size)):
            yield batch, tokenizer.batch_decode(batch, skip_special_tokens=True)

    def decode_names(self, tokenizer) -> list[str]:
        """Names of all sequences (sorted by tokens), decoded as answers are."""
        return [name for _, decoded in self.decode_batches(tokenizer) for name in decoded]

    # ------------------------------------------------------------------------------------------- internals

    def _marisa_trie(self) -> marisa_trie.Trie:
        if self._marisa is None:
            self._marisa = marisa_trie.Trie().frombytes(bytes(self._marisa_bytes))
            self._marisa_bytes = None
        return self._marisa

    def _max_token_id(self) -> int:
        return int((self._edge_key & _TOKEN_MASK).max()) if len(self._edge_key) else -1


# ----------------------------------------------------------------------------------------------- module helpers

def genre_nested_dict(sequences: Iterable) -> dict:
    """GENRE's (and GEMEL's) prefix tree: a nested dict {token: {token: ...}}, leaf = {}, the format of GEMEL's
    released prefix_tree_opt.pkl. The reference PrefixTree is tested and benchmarked against."""
    root = {}
    for sequence in sequences:
        node = root
        for token in sequence:
            node = node.setdefault(token, {})
    return root


def _aligned(position: int) -> int:
    return (position + _ALIGN - 1) // _ALIGN * _ALIGN


def _check_sequences(lengths: np.ndarray, flat: np.ndarray, eos: int) -> None:
    """Every sequence must be [EOS] + name + [EOS] with valid token ids; the error names the first bad one."""
    starts = np.cumsum(lengths) - lengths
    bad = lengths < 2
    long_enough = ~bad
    first, last = starts[long_enough], starts[long_enough] + lengths[long_enough] - 1
    bad[long_enough] = (flat[first] != eos) | (flat[last] != eos)
    out_of_range = (flat < 0) | (flat > MAX_TOKEN_ID)
    if out_of_range.any():
        bad[np.repeat(np.arange(len(lengths)), lengths)[out_of_range]] = True
    if bad.any():
        index = int(np.argmax(bad))
        start = int(starts[index])
        shown = flat[start:start + lengths[index]].tolist()
        raise ValueError(f"sequence #{index} {shown} is not [EOS={eos}] + name + [EOS={eos}] with token ids in "
                         f"0..{MAX_TOKEN_ID}")


def _build_marisa(padded: np.ndarray, chunk_rows: int = 500_000) -> marisa_trie.Trie:
    """Marisa trie whose keys are the rows of `padded` (tokens + 1, 0 pads) as strings, one code point per token."""
    width, keys = padded.shape[1], []
    for start in range(0, len(padded), chunk_rows):
        codes = padded[start:start + chunk_rows].astype(np.uint32)  # (chunk, width), tokens + 1
        codes[codes >= _SURROGATE_START] += _SURROGATE_SIZE
        keys.extend(codes.view(f"<U{width}").ravel().tolist())  # numpy strips the 0 padding
    return marisa_trie.Trie(keys)


def _check_tokenizer(path: str, header: dict, tokenizer) -> None:
    recorded = header.get("tokenizer") or {}
    current = tokenizer_info(tokenizer)
    if recorded.get("fingerprint"):
        mismatch = recorded["fingerprint"] != current["fingerprint"]
    else:  # partial info (e.g. GEMEL's pickle): check what is known
        mismatch = (recorded.get("eos_token_id", current["eos_token_id"]) != current["eos_token_id"]
                    or header.get("max_token_id", -1) >= current["vocab_size"])
    if mismatch:
        folder = os.path.basename(os.path.dirname(os.path.abspath(path))) or "<folder>"
        command = _REBUILD_COMMAND.format(folder=folder, model=current["name"])
        raise TokenizerMismatchError(
            f"{path} was built with tokenizer {recorded.get('name', 'unknown')!r} "
            f"(fingerprint {str(recorded.get('fingerprint', 'n/a'))[:12]}, eos {recorded.get('eos_token_id')}) "
            f"but is used with tokenizer {current['name']!r} (fingerprint {current['fingerprint'][:12]}, "
            f"eos {current['eos_token_id']}); its token ids would mean other tokens. Rebuild it: `{command}`")

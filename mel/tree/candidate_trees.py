"""Per-example constraints for batched decoding: each example of a batch chooses only among its own candidates."""
import numpy as np

from mel.tree.trie import MAX_TOKEN_ID, PrefixTree


class CandidateTrees:
    """The prefix trees of a batch's candidate lists, stored as one PrefixTree.

    Example i's names are stored as [EOS, VIRTUAL - i] + name + [EOS]: decoding starts example i past its virtual
    token, so the allowed tokens at every step come from its own candidates only, while all examples still decode
    together in the batched fast path. Virtual tokens lie beyond every vocabulary and are never offered.
    """

    def __init__(self, token_lists, eos_token_id):
        """token_lists: per example, the token ids of each candidate name (as targets are tokenized)."""
        sequences = [[eos_token_id, MAX_TOKEN_ID - i, *tokens, eos_token_id]
                     for i, names in enumerate(token_lists) for tokens in names]
        self.tree = PrefixTree.from_sequences(sequences, eos_token_id)
        self.eos_token_id = eos_token_id
        self._starts = self.tree.advance(np.full(len(token_lists), self.tree.start_state(), dtype=np.int64),
                                         MAX_TOKEN_ID - np.arange(len(token_lists), dtype=np.int64))

    def start_states(self, batch_size):
        if batch_size != len(self._starts):
            raise ValueError(f"CandidateTrees holds {len(self._starts)} examples, not {batch_size}")
        return self._starts.copy()

    def advance(self, states, tokens):
        return self.tree.advance(states, tokens)

    def allowed_indices(self, states):
        return self.tree.allowed_indices(states)

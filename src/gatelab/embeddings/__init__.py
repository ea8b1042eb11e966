"""Word embeddings: HogBatch word2vec, word vectors, their files and their evaluation.

- :class:`Word2Vec` / :class:`Word2VecConfig`: skip-gram with negative sampling, trained the
  HogBatch way (shared negatives, small matrix products, lock-free threads, numba kernel;
  a batched torch path for GPUs; model merging across processes via :mod:`gatelab.distributed`;
  checkpoints by words processed, ``resume``, and a stop within a chunk on Ctrl-C).
- :func:`train_word2vec`: train and save vectors plus the config JSON.
- :class:`KeyedVectors`: look-up, ``most_similar``, ``similarity``, word2vec text/binary files,
  ``evaluate_word_pairs`` (WS-353, SimLex-999) and ``evaluate_word_analogies`` (Google set).
- :class:`Vocab`, :class:`EncodedCorpus`: the frequency-sorted vocabulary and the streamed,
  encoded corpus (shared with WordRank).
- :func:`evaluate_all`: every evaluation set found under the data folder.

- :class:`WordRank` / :class:`WordRankConfig` / :func:`train_wordrank`: WordRank (ranking-based
  embeddings) on a :class:`CooccurrenceMatrix` counted by :func:`count_cooccurrences`.

Corpus readers live in :mod:`gatelab.data.text`.
"""

from gatelab.embeddings.cooccurrence import CooccurrenceMatrix, count_cooccurrences
from gatelab.embeddings.evaluate import EVAL_SETS, evaluate_all
from gatelab.embeddings.keyedvectors import KeyedVectors
from gatelab.embeddings.vocab import EncodedCorpus, Vocab
from gatelab.embeddings.word2vec import Word2Vec, Word2VecConfig, train_word2vec
from gatelab.embeddings.wordrank import WordRank, WordRankConfig, train_wordrank

__all__ = [
    "Word2Vec",
    "Word2VecConfig",
    "train_word2vec",
    "KeyedVectors",
    "Vocab",
    "EncodedCorpus",
    "evaluate_all",
    "EVAL_SETS",
    "WordRank",
    "WordRankConfig",
    "train_wordrank",
    "CooccurrenceMatrix",
    "count_cooccurrences",
]

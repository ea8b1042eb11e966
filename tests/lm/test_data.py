"""Vocabulary, encoding, streams, and the PTB reader."""

import pytest
import torch

from gatelab.data.ptb import ptb_path
from gatelab.data.store import md5sum
from gatelab.data.text import ptb_corpus
from gatelab.errors import GatelabError
from gatelab.lm.corpus import IGNORE, encode_sentences, load_corpus, make_streams
from gatelab.lm.vocab import Vocab

SENTS = [["a", "b", "a"], ["c", "a"], ["b", "d", "e", "a"]]


def test_vocab_min_count_unk_and_order(tmp_path):
    v = Vocab.build(SENTS, min_count=2)
    assert v.words == ["</s>", "<unk>", "a", "b"]
    assert v.counts == [3, 3, 4, 2]  # 3 sentences; c, d, e fold into <unk>
    assert v.encode(["a", "zzz", "b"]) == [2, 1, 3]
    assert Vocab.build(SENTS, max_size=3).words == ["</s>", "<unk>", "a"]
    v.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json") == v
    assert Vocab.load(tmp_path / "v.json").fingerprint() == v.fingerprint()


def test_literal_unk_token_is_the_unknown_word():
    v = Vocab.build([["x", "<unk>", "y"], ["<unk>"]])
    assert v.id("<unk>") == v.unk_id == 1 and v.counts[1] == 2


def test_empty_corpus_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\n")
    with pytest.raises(GatelabError, match="empty"):
        load_corpus(str(empty))
    with pytest.raises(GatelabError, match="empty"):
        Vocab.build([])
    with pytest.raises(GatelabError, match="does not exist"):
        load_corpus(str(tmp_path / "missing.txt"))


def test_streams_start_at_sentence_boundaries_and_cover_every_target():
    v = Vocab.build(SENTS * 20)
    ids = encode_sentences(SENTS * 20, v)
    s = make_streams(ids, 4)
    assert s.inputs.shape[1] == 4
    assert (s.inputs[0] == v.eos_id).all()  # every stream starts at </s>
    assert s.n_targets == ids.numel() - 1
    # the targets, read stream by stream, are the text itself
    pieces = [s.targets[:, b][s.targets[:, b] != IGNORE] for b in range(4)]
    assert torch.equal(torch.cat(pieces), ids[1:])
    chunks = list(s.chunks(5))
    assert sum(c[0].shape[0] for c in chunks) == s.inputs.shape[0] and all(c[0].shape[0] <= 5 for c in chunks)


def test_one_long_line_falls_back_to_even_streams():
    v = Vocab.build([["w%d" % (i % 7) for i in range(1000)]])
    ids = encode_sentences([["w%d" % (i % 7) for i in range(1000)]], v)
    s = make_streams(ids, 8)
    assert s.inputs.shape[0] <= 126 and s.n_targets == ids.numel() - 1


def test_ptb_files_are_the_standard_ones(ptb_available):
    assert md5sum(ptb_path("valid")) == "aa0affc06ff7c36e977d7cd49e3839bf"
    valid = list(ptb_corpus("valid"))
    assert len(valid) == 3370 and sum(map(len, valid)) == 70390
    corpus = load_corpus("ptb")
    assert len(corpus.vocab) == 10000  # 9,999 word types incl. <unk>, plus </s>
    assert corpus.test.numel() == 78669 + 3761 + 1


def test_missing_ptb_names_the_file(tmp_path):
    from gatelab.errors import DataMissingError

    with pytest.raises(DataMissingError, match="ptb.train.txt"):
        ptb_path("train", root=tmp_path, download=False)

"""RNN language models whose output layer scales to huge vocabularies: BlackOut, with full softmax, NCE and IS.

    corpus = load_corpus("ptb")                        # any text: validation carved from it unless given
    config = LMConfig(loss="blackout", samples=100, alpha=0.4, hidden=128, epochs=2)
    model, history = train(corpus, config, checkpoint="run.pt")  # lr decay and best epoch on validation
    model, history = train(corpus, config, resume="run.pt")      # after a crash: continues exactly
    print(perplexity(model, corpus.test))              # exact full softmax, <unk> targets counted
    save_model(model, corpus.vocab, config, "ptb-blackout")

BlackOut: Ji, Vishwanathan, Satish, Anderson, Dubey, ICLR 2016 (arXiv:1511.06909).
"""

from gatelab.lm.corpus import (
    IGNORE,
    Corpus,
    Streams,
    encode_file,
    encode_sentences,
    encode_test,
    load_corpus,
    make_streams,
)
from gatelab.lm.model import CELLS, RNNLM, sigmoid_rnn
from gatelab.lm.optim import RMSProp, clip_grad_norm
from gatelab.lm.output import (
    LOSSES,
    NCE,
    BlackOut,
    FullSoftmax,
    ImportanceSampling,
    OutputLayer,
    blackout_loss,
    make_output,
    nce_loss,
    sampled_softmax_loss,
)
from gatelab.lm.sampler import UnigramSampler
from gatelab.lm.train import (
    LMConfig,
    build_model,
    evaluate,
    generate,
    load_model,
    perplexity,
    save_model,
    train,
    unigram_perplexity,
)
from gatelab.lm.vocab import EOS, UNK, EmptyCorpusError, Vocab

__all__ = [
    "Vocab",
    "EOS",
    "UNK",
    "EmptyCorpusError",
    "Corpus",
    "Streams",
    "IGNORE",
    "load_corpus",
    "encode_file",
    "encode_sentences",
    "encode_test",
    "make_streams",
    "RNNLM",
    "CELLS",
    "sigmoid_rnn",
    "OutputLayer",
    "FullSoftmax",
    "BlackOut",
    "NCE",
    "ImportanceSampling",
    "LOSSES",
    "make_output",
    "blackout_loss",
    "nce_loss",
    "sampled_softmax_loss",
    "UnigramSampler",
    "RMSProp",
    "clip_grad_norm",
    "LMConfig",
    "build_model",
    "train",
    "evaluate",
    "perplexity",
    "unigram_perplexity",
    "save_model",
    "load_model",
    "generate",
]

"""Saved models read back; a resumed fit equals an uninterrupted one exactly; damaged files give GatelabError."""

import pytest
import torch

from gatelab.errors import GatelabError
from gatelab.vi import LDAVI, GaussianMixtureVI, synthetic_gmm, synthetic_lda


@pytest.mark.parametrize("algorithm, update", [("batch", None), ("svi", None), ("esvi", "incremental"), ("esvi", None)])
def test_resumed_lda_equals_uninterrupted(tmp_path, one_thread, algorithm, update):
    corpus, _ = synthetic_lda(n_docs=80, n_words=50, n_topics=4, doc_length=30, seed=6)
    settings = dict(algorithm=algorithm, local_iter=3, batch_size=16, n_blocks=2, seed=3)
    if update is not None:
        settings["esvi_update"] = update
    whole = LDAVI(4, max_iter=4, **settings).fit(corpus)
    ckpt = tmp_path / "lda.pt"
    LDAVI(4, max_iter=2, **settings).fit(corpus, checkpoint=ckpt)
    resumed = LDAVI(4, max_iter=4, **settings).fit(corpus, resume=ckpt)
    assert torch.equal(resumed.components_, whole.components_)
    assert resumed.n_iter_ == 4 and resumed.elbo_ == whole.elbo_


def test_models_are_saved_and_loaded(tmp_path):
    x, _, _ = synthetic_gmm(400, 3, 2, seed=7)
    gmm = GaussianMixtureVI(3, max_iter=5).fit(x)
    gmm.save(tmp_path / "gmm.pt")
    back = GaussianMixtureVI.load(tmp_path / "gmm.pt")
    assert torch.allclose(back.score_samples(x), gmm.score_samples(x)) and back.history_ == gmm.history_
    corpus, _ = synthetic_lda(n_docs=40, n_words=30, n_topics=3, doc_length=20, seed=8)
    lda = LDAVI(3, max_iter=3, algorithm="esvi", n_blocks=3).fit(corpus)
    lda.save(tmp_path / "lda.pt")
    assert torch.equal(LDAVI.load(tmp_path / "lda.pt").transform(corpus), lda.transform(corpus))
    with pytest.raises(GatelabError, match="not a 'gatelab-vi-gmm-model'"):
        GaussianMixtureVI.load(tmp_path / "lda.pt")
    data = (tmp_path / "lda.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(GatelabError, match="truncated"):
        LDAVI.load(tmp_path / "cut.pt")
    state = torch.load(tmp_path / "lda.pt", weights_only=True)
    state["extra"]["n_words"] = "x"
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(GatelabError, match="n_words"):
        LDAVI.load(tmp_path / "bad.pt")

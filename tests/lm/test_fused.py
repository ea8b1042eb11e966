"""The compiled training step equals the torch path: same losses, states, parameters and RMSProp state."""

import pytest
import torch

from gatelab.lm.corpus import IGNORE, load_corpus
from gatelab.lm.fused import FusedStep, fusable
from gatelab.lm.model import RNNLM
from gatelab.lm.optim import RMSProp, clip_grad_norm
from gatelab.lm.output import make_output
from gatelab.lm.train import LMConfig, train

V, H, B, T, K = 40, 16, 4, 6, 12  # K samples from 40 words: duplicates and samples equal to targets occur


def _model(loss="blackout", cell="rnn"):
    counts = torch.arange(1, V + 1).float()
    torch.manual_seed(1)
    return RNNLM(V, make_output(loss, V, H, counts, samples=K, alpha=0.4, seed=3), hidden_size=H, cell=cell)


@pytest.mark.parametrize("clip", [0.3, 0.0])
def test_compiled_step_equals_torch_step(clip):
    ref, fast = _model(), _model()
    fast.load_state_dict(ref.state_dict())
    params = list(ref.parameters())
    opt_ref, opt_fast = RMSProp(params, lr=0.05), RMSProp(list(fast.parameters()), lr=0.05)
    step = FusedStep(fast, opt_fast, nominal=B * T, clip=clip, ignore=IGNORE)
    gen = torch.Generator().manual_seed(5)
    s_ref = s_fast = None
    for i in range(5):
        inputs = torch.randint(0, V, (T, B), generator=gen)
        inputs[2, 1] = inputs[4, 3] = 0  # sentence boundaries (eos id 0) reset the state
        targets = torch.randint(0, V, (T, B), generator=gen)
        if i == 4:
            targets[-2:, 2] = IGNORE  # padding at the end of an epoch
        loss, _, state = ref(inputs, targets, s_ref)
        opt_ref.zero_grad()
        (loss / (B * T)).backward()
        clip_grad_norm(params, clip)
        opt_ref.step()
        s_ref = state.detach()
        fast_loss, s_fast = step(inputs, targets, s_fast)
        assert float(fast_loss) == pytest.approx(float(loss.detach()), rel=1e-5)
        torch.testing.assert_close(s_fast, s_ref, rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
        assert opt_fast.state[b]["step"] == opt_ref.state[a]["step"] == 5
        torch.testing.assert_close(opt_fast.state[b]["v"], opt_ref.state[a]["v"], rtol=1e-4, atol=1e-9)
        assert torch.equal(opt_fast.state[b]["last"], opt_ref.state[a]["last"]), name


def test_only_the_papers_model_on_cpu_is_compiled():
    assert fusable(_model())
    assert not fusable(_model(loss="nce")) and not fusable(_model(cell="lstm"))


def test_training_compiled_or_not_gives_the_same_run(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("\n".join(["the cat sat on the mat", "a dog and a cat sat on the log"] * 20) + "\n")
    corpus = load_corpus(str(text), val_size=0.1, seed=0)
    cfg = LMConfig(samples=5, hidden=16, epochs=2, batch_size=4, bptt=8, lr=0.02, seed=3)
    _, compiled = train(corpus, cfg)
    _, plain = train(corpus, cfg, compiled=False)
    for a, b in zip(compiled, plain):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["valid_ppl"] == pytest.approx(
            b["valid_ppl"], rel=1e-4
        )

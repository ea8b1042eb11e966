"""DefenseVAE: training on real FGSM pairs, purification, exact resume, memmap input, files, Defended's gradient."""

import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gatelab.checkpoint import Interrupted, load_state
from gatelab.data.mnist import mnist_tensors
from gatelab.defense import Defended, DefenseVAE, VAEConfig
from gatelab.defense import purifier as purifier_module
from gatelab.errors import GatelabError

SMALL = VAEConfig(latent=16, batch_size=16, epochs=1)


@pytest.fixture(scope="module")
def fgsm_pairs():
    """FGSM (eps 0.3) images of 320 MNIST training digits against a softmax trained for a moment, with the clean
    digits, the labels and the softmax."""
    pytest.importorskip("torchattacks")
    from gatelab.defense import attack

    x, y = mnist_tensors("mnist", "train")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(50):
        opt.zero_grad()
        F.cross_entropy(model(x[:2000]), y[:2000]).backward()
        opt.step()
    clean, labels = x[2000:2320], y[2000:2320]
    return attack(model, clean, labels, "fgsm", 0.3), clean, labels, model


def noisy_pairs(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 1, 28, 28, generator=gen)
    return (clean + 0.3 * torch.randn(n, 1, 28, 28, generator=gen)).clamp(0, 1), clean


def bce_per_pair(purifier, adversarial, clean):
    return F.binary_cross_entropy(purifier.purify(adversarial), clean, reduction="sum").item() / len(clean)


def test_training_on_fgsm_pairs_lowers_the_held_out_reconstruction_loss(fgsm_pairs, one_thread):
    adv, clean, _, _ = fgsm_pairs
    config = VAEConfig(latent=32, epochs=2)  # the paper's lr 5e-4 and batch 16
    untrained = DefenseVAE(VAEConfig(latent=32))
    torch.manual_seed(0)
    untrained.vae_ = purifier_module.VAE18(32).eval()
    fitted = DefenseVAE(config).fit(adv[:256], clean[:256], quiet=True)
    assert [h["epoch"] for h in fitted.history_] == [1, 2]
    assert fitted.history_[1]["loss"] < fitted.history_[0]["loss"]
    before = bce_per_pair(untrained, adv[256:], clean[256:])  # about 544 = 784 ln 2: grey everywhere
    after = bce_per_pair(fitted, adv[256:], clean[256:])
    assert after < 0.5 * before, (before, after)


def test_purify_shape_range_and_batches(one_thread):
    adv, clean = noisy_pairs(20)
    purifier = DefenseVAE(SMALL).fit(adv, clean, quiet=True)
    whole = purifier.purify(adv, batch_size=20)
    assert whole.shape == (20, 1, 28, 28) and whole.dtype == torch.float32
    assert ((whole >= 0) & (whole <= 1)).all()
    assert torch.allclose(purifier.purify(adv, batch_size=3), whole, atol=1e-6)
    assert not purifier.vae_.training


def test_interrupted_training_resumes_exactly(tmp_path, monkeypatch, one_thread):
    adv, clean = noisy_pairs(48)  # 3 steps an epoch
    config = VAEConfig(latent=8, batch_size=16, epochs=2)
    whole = DefenseVAE(config).fit(adv, clean, quiet=True)

    ckpt = tmp_path / "vae.ckpt"
    calls = []
    original = purifier_module.loss

    def interrupting(*args, **kw):
        calls.append(1)
        if len(calls) == 5:  # the second step of the second epoch
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kw)

    monkeypatch.setattr(purifier_module, "loss", interrupting)
    with pytest.raises(Interrupted):
        DefenseVAE(config).fit(adv, clean, quiet=True, checkpoint=ckpt)
    monkeypatch.setattr(purifier_module, "loss", original)
    saved = load_state(ckpt)
    assert (saved["epoch"], saved["step"]) == (1, 2) and len(saved["history"]) == 1

    resumed = DefenseVAE(config).fit(adv, clean, quiet=True, checkpoint=ckpt, resume=ckpt)
    assert resumed.history_ == whole.history_
    for key, value in whole.vae_.state_dict().items():
        assert torch.equal(value, resumed.vae_.state_dict()[key]), key


class Watched(np.memmap):
    """A uint8 memmap that records how many rows each read takes."""

    reads: list = []

    def __getitem__(self, idx):
        out = super().__getitem__(idx)
        if isinstance(out, np.ndarray) and out.ndim == 4:
            Watched.reads.append(out.shape[0])
        return out


def test_uint8_memmap_is_read_one_batch_at_a_time(tmp_path, one_thread):
    adv, clean = noisy_pairs(32)
    to_uint8 = lambda t: (t * 255).round().to(torch.uint8).numpy()  # noqa: E731
    files = []
    for name, images in (("adv", adv), ("clean", clean)):
        mm = np.memmap(tmp_path / f"{name}.u8", dtype=np.uint8, mode="w+", shape=(32, 1, 28, 28))
        mm[:] = to_uint8(images)
        mm.flush()
        files.append(np.memmap(tmp_path / f"{name}.u8", dtype=np.uint8, mode="r", shape=(32, 1, 28, 28)).view(Watched))
    Watched.reads = []
    from_files = DefenseVAE(SMALL).fit(*files, quiet=True)
    assert Watched.reads and max(Watched.reads) <= SMALL.batch_size  # never the whole array
    floats = [torch.from_numpy(to_uint8(t)).float() / 255 for t in (adv, clean)]
    from_floats = DefenseVAE(SMALL).fit(*floats, quiet=True)
    assert from_files.history_ == from_floats.history_
    assert torch.equal(from_files.purify(files[0]), from_floats.purify(floats[0]))


def test_save_load_round_trip_and_corrupt_files(tmp_path):
    adv, clean = noisy_pairs(16)
    purifier = DefenseVAE(SMALL, seed=3).fit(adv, clean, quiet=True)
    path = purifier.save(tmp_path / "vae.safetensors")
    loaded = DefenseVAE.load(path)
    assert loaded.config == SMALL and loaded.seed == 3 and loaded.history_ == purifier.history_
    assert torch.equal(loaded.purify(adv), purifier.purify(adv))

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(GatelabError, match="truncated"):
        DefenseVAE.load(truncated)
    with pytest.raises(GatelabError, match="does not exist"):
        DefenseVAE.load(tmp_path / "missing.safetensors")
    other = DefenseVAE(VAEConfig(latent=8, epochs=1)).fit(adv, clean, quiet=True).save(tmp_path / "other.safetensors")
    edits = {b'\\"latent\\": 9': "do not fit", b'\\"latent\\":[]': r"latent=\[\] is not of type"}
    for replacement, match in edits.items():  # the same length, so only the config changes
        data = other.read_bytes()
        assert b'\\"latent\\": 8' in data
        (tmp_path / "edited.safetensors").write_bytes(data.replace(b'\\"latent\\": 8', replacement))
        with pytest.raises(GatelabError, match=match):
            DefenseVAE.load(tmp_path / "edited.safetensors")


def test_defended_equals_classify_after_purify_and_passes_gradients(fgsm_pairs):
    adv, clean, labels, model = fgsm_pairs
    purifier = DefenseVAE(SMALL).fit(adv[:32], clean[:32], quiet=True)
    defended = Defended(model, purifier)
    x = adv[:8].clone().requires_grad_(True)
    logits = defended(x)
    assert torch.allclose(logits, model(purifier.purify(adv[:8])), atol=1e-5)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels[:8]), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    with pytest.raises(GatelabError, match="logits"):
        Defended(nn.Sequential(model, nn.Flatten(0)), purifier)(adv[:2])  # (N * 10,)
    with pytest.raises(GatelabError, match="not fitted"):
        Defended(model, DefenseVAE(SMALL))


@pytest.mark.parametrize(
    "adversarial, clean, match",
    [
        (torch.rand(4, 1, 28, 27), torch.rand(4, 1, 28, 27), "shape"),
        (torch.rand(4, 28, 28), torch.rand(4, 28, 28), "shape"),
        (torch.rand(0, 1, 28, 28), torch.rand(0, 1, 28, 28), "N >= 1"),
        (torch.rand(4, 1, 28, 28), torch.rand(5, 1, 28, 28), "one clean image per adversarial"),
        (torch.rand(4, 1, 28, 28) * 2, torch.rand(4, 1, 28, 28), r"\[0, 1\]"),
        (torch.full((4, 1, 28, 28), float("nan")), torch.rand(4, 1, 28, 28), "NaN"),
        (np.zeros((4, 1, 28, 28), np.int32), torch.rand(4, 1, 28, 28), "uint8"),
        ([[0.0]], torch.rand(4, 1, 28, 28), "tensor or numpy"),
    ],
)
def test_bad_input_is_refused(adversarial, clean, match):
    with pytest.raises(GatelabError, match=match):
        DefenseVAE(SMALL).fit(adversarial, clean, quiet=True)


def test_bad_settings_are_refused():
    with pytest.raises(GatelabError, match="VAEConfig"):
        DefenseVAE({"latent": 8})
    with pytest.raises(GatelabError, match="batch_size"):
        DefenseVAE(VAEConfig(batch_size=0))
    with pytest.raises(GatelabError, match="not fitted"):
        DefenseVAE(SMALL).purify(torch.rand(2, 1, 28, 28))
    adv, clean = noisy_pairs(16)
    with pytest.raises(GatelabError, match="batch_size"):
        DefenseVAE(SMALL).fit(adv, clean, quiet=True).purify(adv, batch_size=0)

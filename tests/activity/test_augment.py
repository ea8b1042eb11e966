import math

import pytest
import torch

from gatelab.activity.augment import (
    AugmentConfig,
    augment,
    frame_dropout,
    kept_frames,
    rotate_y,
    scale,
    temporal_crop,
    translate,
)
from gatelab.activity.skeleton import KINECT_BONES, UTD_MHAD_20
from gatelab.errors import GatelabError

BONES = [(UTD_MHAD_20.index(a), UTD_MHAD_20.index(b)) for a, b in KINECT_BONES]


def bone_lengths(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([(x[..., a, :] - x[..., b, :]).norm(dim=-1) for a, b in BONES], dim=-1)


@pytest.fixture
def batch():
    return torch.randn(5, 12, 20, 3, dtype=torch.float64)


def test_rotation_and_translation_keep_bone_lengths(batch):
    angles = torch.tensor([0.3, -1.0, 2.0, 0.0, math.pi], dtype=torch.float64)
    rotated = rotate_y(batch, angles)
    moved = translate(batch, torch.randn(5, 3, dtype=torch.float64))
    for out in (rotated, moved):
        assert out.shape == batch.shape
        torch.testing.assert_close(bone_lengths(out), bone_lengths(batch))
    torch.testing.assert_close(rotated[..., 1], batch[..., 1])  # the vertical axis is untouched
    assert not torch.allclose(rotated[1], batch[1])


def test_scaling_scales_bone_lengths_by_its_factor(batch):
    factors = torch.tensor([0.9, 1.0, 1.1, 0.95, 1.05], dtype=torch.float64)
    torch.testing.assert_close(bone_lengths(scale(batch, factors)), bone_lengths(batch) * factors[:, None, None])


def test_temporal_crop_of_the_whole_clip_is_the_identity_and_a_half_crop_resamples(batch):
    t = batch.shape[1]
    whole = temporal_crop(batch, torch.zeros(5, dtype=torch.float64), torch.full((5,), t - 1.0, dtype=torch.float64))
    torch.testing.assert_close(whole, batch)
    half = temporal_crop(batch, torch.zeros(5, dtype=torch.float64), torch.full((5,), (t - 1) / 2, dtype=torch.float64))
    torch.testing.assert_close(half[:, 0], batch[:, 0])
    torch.testing.assert_close(half[:, -1], (batch[:, 5] + batch[:, 6]) / 2)


def test_augment_keeps_shapes_and_the_off_ranges_change_nothing(batch):
    out = augment(batch, AugmentConfig())
    assert out.shape == batch.shape and not torch.allclose(out, batch)
    off = AugmentConfig(rotation=0, scale=0, translation=0, jitter=0, crop=1)
    torch.testing.assert_close(augment(batch, off), batch)
    with pytest.raises(GatelabError, match="crop"):
        AugmentConfig(crop=0).validate()


def test_frame_dropout_keeps_the_order_and_the_rate():
    t = 40
    x = torch.arange(t, dtype=torch.float32)[None, :, None, None].expand(64, t, 20, 3)
    kept, idx = frame_dropout(x, 0.25)
    assert kept.shape == (64, 30, 20, 3) and idx.shape == (64, 30)
    assert (idx.diff(dim=1) > 0).all()  # order kept, no frame twice
    torch.testing.assert_close(kept[..., 0, 0], idx.float())
    assert len({tuple(r) for r in idx.tolist()}) > 60  # a fresh subset per sequence
    counts = torch.bincount(idx.flatten(), minlength=t).float() / 64
    assert counts.min() > 0.4 and counts.max() < 1  # every frame is sometimes kept, sometimes dropped
    assert kept_frames(40, 0.0) == 40 and kept_frames(3, 0.9) == 2
    with pytest.raises(GatelabError, match=r"\[0, 1\)"):
        kept_frames(10, 1.0)

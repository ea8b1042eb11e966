"""Small synthetic skeleton data for the activity tests (real data sets are read in test_readers and the floor)."""

import numpy as np
import pytest

from gatelab.activity import SkeletonSequence
from gatelab.activity.trainer import ActivityConfig, SkeletonDataset


def synthetic_sequence(label: int, rng: np.random.Generator, frames: int = 20) -> SkeletonSequence:
    """A standing UTD-MHAD skeleton whose right hand moves up (label 0) or sideways (label 1), with noise."""
    base = rng.normal(0, 0.05, (20, 3)) + np.array([0, 0, 3.0])
    base[:, 1] += np.linspace(0.6, -1.0, 20)  # head high, feet low
    base[3] = [0, -0.1, 3.0]  # hip centre
    base[1] = [0, 0.3, 3.0]  # shoulder centre
    base[12], base[16] = [-0.1, -0.2, 3.0], [0.1, -0.2, 3.0]  # hips
    t = np.linspace(0, 1, frames)[:, None]
    joints = np.repeat(base[None], frames, axis=0) + rng.normal(0, 0.01, (frames, 20, 3))
    joints[:, 11, 1 - label] += 0.5 * t[:, 0]
    return SkeletonSequence(joints, "utd-mhad20", 30.0, f"synthetic-{label}")


@pytest.fixture
def toy_data() -> SkeletonDataset:
    from gatelab.activity.readers import Clip

    rng = np.random.default_rng(0)
    clips = [Clip(synthetic_sequence(i % 2, rng), i % 2, 1, i, f"c{i}") for i in range(24)]
    return SkeletonDataset.from_clips(clips, ["up", "side"], "utd-mhad20", ActivityConfig(frames=12))


@pytest.fixture
def toy_folder(tmp_path):
    rng = np.random.default_rng(1)
    for label, name in enumerate(["raise", "swipe"]):
        (tmp_path / "clips" / name).mkdir(parents=True)
        for i in range(6):
            synthetic_sequence(label, rng).save(tmp_path / "clips" / name / f"{i}.npz")
    return tmp_path / "clips"


@pytest.fixture
def make_sequence():
    """``make(label)``: one more synthetic sequence of that action."""
    rng = np.random.default_rng(5)
    return lambda label: synthetic_sequence(label, rng)

"""From a raw skeleton to a model input: fill unobserved joints, normalise the body, resample to a fixed length.

Missing or low-visibility joints (``valid`` False) are filled by linear interpolation in time between the frames
where the joint was seen (held constant before the first and after the last sighting). A joint never seen in the
whole sequence is placed at the root joint and the fill is counted, so callers can say so; nothing unseen is
passed on as a silent zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gatelab.activity.skeleton import SkeletonSequence
from gatelab.errors import GatelabError

ROOT, NECK = "hip_center", "shoulder_center"


@dataclass
class Filled:
    """Coordinates (T, J, 3) with every joint filled, and how many joint-frames were interpolated / never seen."""

    xyz: np.ndarray
    interpolated: int
    never_seen: list[str]


def fill_missing(seq: SkeletonSequence) -> Filled:
    """The first three channels with unobserved joints interpolated in time (see the module's note)."""
    xyz = np.zeros((len(seq), seq.joints.shape[1], 3), dtype=np.float32)
    channels = min(3, seq.joints.shape[2])
    xyz[..., :channels] = seq.joints[..., :channels]
    t = np.arange(len(seq))
    never = []
    for j, name in enumerate(seq.joint_names):
        seen = seq.valid[:, j]
        if seen.all():
            continue
        if not seen.any():
            never.append(name)
            continue
        for c in range(3):
            xyz[:, j, c] = np.interp(t, t[seen], xyz[seen, j, c])
    if never:
        if ROOT not in seq.joint_names or seq.joint_names.index(ROOT) in [seq.joint_names.index(n) for n in never]:
            raise GatelabError(
                f"{seq.source or 'a skeleton'}: the {ROOT} joint is never observed, so the body cannot be placed"
            )
        root = seq.joint_names.index(ROOT)
        for name in never:
            xyz[:, seq.joint_names.index(name)] = xyz[:, root]
    return Filled(xyz, int((~seq.valid).sum()), never)


CENTRES = ("frame", "first")


def normalise(xyz: np.ndarray, names: tuple[str, ...], rotate: bool = True, centre: str = "frame") -> np.ndarray:
    """Centre on the hip centre, divide by the mean hip-to-shoulder-centre length, and (``rotate``) turn about the
    vertical axis so that the first frame's left-to-right hip line lies along +x (facing the camera).

    ``centre``: "frame" puts every frame's hip centre at the origin (the body's pose only; on MSR Action3D AS1 this
    scored a little higher); "first" subtracts the first frame's, keeping the root's motion through the clip.
    y is vertical in camera axes.
    """
    if centre not in CENTRES:
        raise GatelabError(f"unknown centring {centre!r}; accepted: {', '.join(CENTRES)}")
    for name in (ROOT, NECK):
        if name not in names:
            raise GatelabError(f"normalisation needs a {name} joint; layout joints are {', '.join(names)}")
    root, neck = names.index(ROOT), names.index(NECK)
    out = xyz - (xyz[:, root : root + 1] if centre == "frame" else xyz[0, root])
    length = float(np.linalg.norm(xyz[:, neck] - xyz[:, root], axis=-1).mean())
    if not length > 1e-6:
        raise GatelabError("the skeleton's hip-to-shoulder length is zero; the joints are degenerate")
    out = out / length
    if rotate and "left_hip" in names and "right_hip" in names:
        d = out[0, names.index("right_hip")] - out[0, names.index("left_hip")]
        angle = np.arctan2(d[2], d[0])  # the hip line's angle from +x in the ground (x, z) plane
        c, s = np.cos(angle), np.sin(angle)
        x, z = out[..., 0].copy(), out[..., 2].copy()
        out[..., 0], out[..., 2] = c * x + s * z, -s * x + c * z
    return out.astype(np.float32)


def resample(xyz: np.ndarray, frames: int) -> np.ndarray:
    """``frames`` frames by linear interpolation over the clip's time span (stretching or shrinking it)."""
    if frames < 1:
        raise GatelabError(f"frames must be >= 1, got {frames}")
    if len(xyz) == 1:
        return np.repeat(xyz, frames, axis=0)
    pos = np.linspace(0, len(xyz) - 1, frames)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(xyz) - 1)
    w = (pos - lo)[:, None, None].astype(np.float32)
    return (1 - w) * xyz[lo] + w * xyz[hi]


def prepare(
    seq: SkeletonSequence, layout: str, frames: int, rotate: bool = True, centre: str = "frame", min_frames: int = 2
) -> np.ndarray:
    """One model input (frames, J, 3): convert to ``layout``, fill, normalise, resample.

    Sequences shorter than ``min_frames`` are refused (a single frame carries no motion).
    """
    if len(seq) < min_frames:
        raise GatelabError(
            f"{seq.source or 'a skeleton sequence'} has {len(seq)} frame(s); at least {min_frames} are needed"
        )
    if seq.layout != layout:
        seq = seq.to_layout(layout)
    filled = fill_missing(seq)
    return resample(normalise(filled.xyz, seq.joint_names, rotate, centre), frames)

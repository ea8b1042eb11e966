"""One skeleton type for every source: a sequence of T frames x J joints x C channels with its joint layout named.

A layout is an ordered tuple of joint names. Sources with different orders (MediaPipe's 33 landmarks, Kinect v1's
20 joints as UTD-MHAD or MSR Action3D store them) convert to each other through the joints whose names they share,
so a model trained on one layout can be fed another where the joints correspond.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gatelab.errors import GatelabError

# MediaPipe pose (BlazePose) landmarks, in the solution's own order.
MEDIAPIPE_33 = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)  # fmt: skip

# Kinect v1 joints in UTD-MHAD's order (../shared/data/utd-mhad/joint_order.txt).
UTD_MHAD_20 = (
    "head", "shoulder_center", "spine", "hip_center", "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand", "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
)  # fmt: skip

LAYOUTS: dict[str, tuple[str, ...]] = {"mediapipe33": MEDIAPIPE_33, "utd-mhad20": UTD_MHAD_20}


def layout_joints(layout: str) -> tuple[str, ...]:
    """The ordered joint names of a named layout."""
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise GatelabError(f"unknown joint layout {layout!r}; known: {', '.join(sorted(LAYOUTS))}") from None


@dataclass
class SkeletonSequence:
    """``joints`` is float32 (T, J, C): C is 2 or 3 coordinates, optionally followed by a visibility/confidence.

    ``valid`` (T, J) marks joints that were observed; readers and the pose extractor set it, and
    normalisation or interpolation decide what to do with the rest instead of passing zeros on silently.
    """

    joints: np.ndarray
    layout: str
    fps: float | None = None
    source: str | None = None
    valid: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        names = layout_joints(self.layout)
        self.joints = np.asarray(self.joints, dtype=np.float32)
        if self.joints.ndim != 3 or self.joints.shape[1] != len(names) or self.joints.shape[2] < 2:
            raise GatelabError(
                f"a {self.layout} skeleton must be (frames, {len(names)}, channels>=2), got {self.joints.shape}"
                + (f" in {self.source}" if self.source else "")
            )
        if len(self.joints) == 0:
            raise GatelabError(f"an empty skeleton sequence{' in ' + self.source if self.source else ''}")
        if self.valid is None:
            self.valid = np.ones(self.joints.shape[:2], dtype=bool)
        self.valid = np.asarray(self.valid, dtype=bool)
        if self.valid.shape != self.joints.shape[:2]:
            raise GatelabError(f"valid mask {self.valid.shape} does not match joints {self.joints.shape[:2]}")
        if not np.isfinite(self.joints[self.valid]).all():
            raise GatelabError(f"NaN or infinite joint coordinates{' in ' + self.source if self.source else ''}")

    def __len__(self) -> int:
        return len(self.joints)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return layout_joints(self.layout)

    def to_layout(self, layout: str) -> "SkeletonSequence":
        """The same frames in ``layout``: shared joints are copied; a joint the source lacks is marked invalid."""
        target = layout_joints(layout)
        index = {name: i for i, name in enumerate(self.joint_names)}
        out = np.zeros((len(self), len(target), self.joints.shape[2]), dtype=np.float32)
        valid = np.zeros((len(self), len(target)), dtype=bool)
        for j, name in enumerate(target):
            if name in index:
                out[:, j] = self.joints[:, index[name]]
                valid[:, j] = self.valid[:, index[name]]
        if not valid.any():
            raise GatelabError(f"layouts {self.layout} and {layout} share no joints")
        return SkeletonSequence(out, layout, self.fps, self.source, valid)

"""One skeleton type for every source: a sequence of T frames x J joints x C channels with its joint layout named.

A layout is an ordered tuple of joint names. Sources with different orders (MediaPipe's 33 landmarks, Kinect v1's
20 joints as UTD-MHAD or MSR Action3D store them) convert to each other through the joints whose names they share,
so a model trained on one layout can be fed another where the joints correspond.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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

# Kinect v1 joints in MSR Action3D's order. The data set ships no joint list; its body_model.mat names
# left_hip_index 5, right_hip_index 6, hip_center_index 7, head_index 20, left/right_wrist_index 10/11 and
# left/right_ankle_index 16/17 (1-based), and its 19 bones (7-4, 4-3, 3-20, 3-1, 3-2, 1-8, 2-9, 8-10, 9-11, 10-12,
# 11-13, 7-5, 7-6, 5-14, 6-15, 14-16, 15-17, 16-18, 17-19) fix the rest: 4 joins the hip centre to 3, which joins
# the head and both shoulders (1, 2), so 4 is the spine and 3 the shoulder centre; 1-8-10-12 and 2-9-11-13 are the
# arms (shoulder, elbow, wrist, hand), 5-14-16-18 and 6-15-17-19 the legs (hip, knee, ankle, foot). This is the
# order the literature uses (Wang et al., CVPR 2012, whose files_used list ships with the data). Checked on
# a01_s01_e01: joint 20 is highest, 16-19 lowest, 3 between the head and 4.
MSR_ACTION3D_20 = (
    "left_shoulder", "right_shoulder", "shoulder_center", "spine", "left_hip", "right_hip", "hip_center",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand", "left_knee", "right_knee",
    "left_ankle", "right_ankle", "left_foot", "right_foot", "head",
)  # fmt: skip

LAYOUTS: dict[str, tuple[str, ...]] = {
    "mediapipe33": MEDIAPIPE_33,
    "utd-mhad20": UTD_MHAD_20,
    "msr-action3d20": MSR_ACTION3D_20,
}

# Bones as joint-name pairs (for ST-GCN's graph and for drawing). Kinect v1's 19 bones serve both Kinect layouts.
KINECT_BONES = (
    ("hip_center", "spine"), ("spine", "shoulder_center"), ("shoulder_center", "head"),
    ("shoulder_center", "left_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("left_wrist", "left_hand"), ("shoulder_center", "right_shoulder"), ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"), ("right_wrist", "right_hand"), ("hip_center", "left_hip"),
    ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("left_ankle", "left_foot"), ("hip_center", "right_hip"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("right_ankle", "right_foot"),
)  # fmt: skip
MEDIAPIPE_BONES = (
    ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_hip", "right_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("left_ankle", "left_heel"),
    ("left_heel", "left_foot_index"), ("right_ankle", "right_heel"), ("right_heel", "right_foot_index"),
    ("left_wrist", "left_index"), ("right_wrist", "right_index"), ("nose", "left_eye"), ("nose", "right_eye"),
    ("left_eye", "left_ear"), ("right_eye", "right_ear"), ("mouth_left", "mouth_right"),
)  # fmt: skip
BONES: dict[str, tuple[tuple[str, str], ...]] = {
    "mediapipe33": MEDIAPIPE_BONES,
    "utd-mhad20": KINECT_BONES,
    "msr-action3d20": KINECT_BONES,
}

# Kinect joints that MediaPipe lacks, as the mean of MediaPipe landmarks. Kinect v1 places the hip centre between
# the hips, the shoulder centre between the shoulders, the spine about midway up the torso, the head at the skull's
# centre (between the ears), the hand past the wrist (between index and pinky knuckles) and the foot at the toes.
# These are our reading of Kinect's joints, not a published mapping.
DERIVED_FROM_MEDIAPIPE: dict[str, tuple[str, ...]] = {
    "hip_center": ("left_hip", "right_hip"),
    "shoulder_center": ("left_shoulder", "right_shoulder"),
    "spine": ("left_hip", "right_hip", "left_shoulder", "right_shoulder"),
    "head": ("left_ear", "right_ear"),
    "left_hand": ("left_index", "left_pinky"),
    "right_hand": ("right_index", "right_pinky"),
    "left_foot": ("left_foot_index",),
    "right_foot": ("right_foot_index",),
}

# Axis conventions. "image": x right, y down (MediaPipe's pixels). "camera": Kinect camera space, y up, with the
# subject's left shoulder at smaller x than the right one when facing the sensor (true of UTD-MHAD and MSR Action3D
# files: a1_s1_t1 frame 0, -0.20 vs 0.13 m; MediaPipe's image puts the left shoulder at larger x). So image ->
# camera negates x and y: a 180 degree turn about the viewing axis, not a mirror.
AXES = {"mediapipe33": "image", "utd-mhad20": "camera", "msr-action3d20": "camera"}


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
        """The same frames in ``layout``: shared joints are copied; a joint the source lacks is marked invalid.

        From MediaPipe, Kinect joints it lacks are derived (``DERIVED_FROM_MEDIAPIPE``: valid where all their
        landmarks are) and coordinates turn from image axes to camera axes (``AXES``).
        """
        target = layout_joints(layout)
        index = {name: i for i, name in enumerate(self.joint_names)}
        derived = DERIVED_FROM_MEDIAPIPE if self.layout == "mediapipe33" else {}
        out = np.zeros((len(self), len(target), self.joints.shape[2]), dtype=np.float32)
        valid = np.zeros((len(self), len(target)), dtype=bool)
        for j, name in enumerate(target):
            if name in index:
                out[:, j] = self.joints[:, index[name]]
                valid[:, j] = self.valid[:, index[name]]
            elif name in derived:
                parts = [index[p] for p in derived[name]]
                out[:, j] = self.joints[:, parts].mean(axis=1)
                valid[:, j] = self.valid[:, parts].all(axis=1)
        if not valid.any():
            raise GatelabError(f"layouts {self.layout} and {layout} share no joints")
        if AXES[self.layout] != AXES[layout]:
            out[..., :2] *= -1
        out[~valid] = 0.0
        return SkeletonSequence(out, layout, self.fps, self.source, valid)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the sequence as ``.npz`` (joints, valid, layout, fps, source), atomically."""
        from gatelab.files import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    joints=self.joints,
                    valid=self.valid,
                    layout=np.array(self.layout),
                    fps=np.array(np.nan if self.fps is None else self.fps),
                    source=np.array(self.source or ""),
                )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SkeletonSequence":
        """Read a file written by ``save``; a missing, damaged or foreign file is a GatelabError naming it."""
        path = Path(path)
        if not path.is_file():
            raise GatelabError(f"skeleton file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                joints, valid, layout = data["joints"], data["valid"], str(data["layout"])
                fps = float(data["fps"]) if "fps" in data else float("nan")
                source = str(data["source"]) if "source" in data else ""
        except Exception as exc:  # zipfile, numpy and KeyError all signal a file that is not ours
            raise GatelabError(
                f"{path} is not a gatelab skeleton .npz ({type(exc).__name__}: {str(exc)[:200]}); "
                "expected arrays joints (frames, joints, channels), valid and a layout name"
            ) from None
        return cls(joints, layout, None if np.isnan(fps) else fps, source or str(path), valid)

"""Activity recognition from skeletons (Sarker et al., ICMLA 2018): pose from RGB video, then a deep BLSTM.

``extract_skeletons`` (video to ``SkeletonSequence``; needs ``pip install 'gatelab[video]'``) lives in
``gatelab.activity.video`` and is imported from there on first use, so the core needs no MediaPipe.
"""

from gatelab.activity.augment import AugmentConfig, augment, frame_dropout
from gatelab.activity.models import STGCN, BLSTMClassifier
from gatelab.activity.preprocess import fill_missing, normalise, prepare
from gatelab.activity.protocols import MSR_SUBSETS, load_split
from gatelab.activity.readers import load_folder, load_msr_action3d, load_utd_mhad, read_clip, read_skeleton
from gatelab.activity.skeleton import LAYOUTS, SkeletonSequence, layout_joints
from gatelab.activity.trainer import (
    ActivityConfig,
    SkeletonDataset,
    evaluate,
    load_model,
    predict,
    save_model,
    train,
)


def extract_skeletons(video, **options) -> SkeletonSequence:
    """MediaPipe pose skeletons of ``video`` (see ``gatelab.activity.video.extract_skeletons``)."""
    from gatelab.activity.video import extract_skeletons as extract

    return extract(video, **options)


__all__ = [
    "LAYOUTS",
    "MSR_SUBSETS",
    "STGCN",
    "ActivityConfig",
    "AugmentConfig",
    "BLSTMClassifier",
    "SkeletonDataset",
    "SkeletonSequence",
    "augment",
    "evaluate",
    "extract_skeletons",
    "fill_missing",
    "frame_dropout",
    "layout_joints",
    "load_folder",
    "load_model",
    "load_msr_action3d",
    "load_split",
    "load_utd_mhad",
    "normalise",
    "predict",
    "prepare",
    "read_clip",
    "read_skeleton",
    "save_model",
    "train",
]

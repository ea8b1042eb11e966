"""Activity recognition from skeletons (Sarker et al., ICMLA 2018): pose from RGB video, then a deep BLSTM.

``extract_skeletons`` (video to ``SkeletonSequence``), ``extract_folder`` and ``draw_overlay`` need
``pip install 'gatelab[video]'``; ``gatelab.activity.video`` imports MediaPipe only when they run.
"""

from gatelab.activity.augment import AugmentConfig, augment, frame_dropout
from gatelab.activity.models import STGCN, BLSTMClassifier, Ensemble
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
from gatelab.activity.video import draw_overlay, extract_folder, extract_skeletons

__all__ = [
    "LAYOUTS",
    "MSR_SUBSETS",
    "STGCN",
    "ActivityConfig",
    "AugmentConfig",
    "BLSTMClassifier",
    "Ensemble",
    "SkeletonDataset",
    "SkeletonSequence",
    "augment",
    "draw_overlay",
    "evaluate",
    "extract_folder",
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

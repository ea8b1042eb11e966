"""Activity recognition from skeletons (Sarker et al., ICMLA 2018): pose from RGB video, then a deep BLSTM."""

from gatelab.activity.skeleton import LAYOUTS, SkeletonSequence, layout_joints

__all__ = ["LAYOUTS", "SkeletonSequence", "layout_joints"]

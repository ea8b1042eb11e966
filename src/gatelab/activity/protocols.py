"""The evaluation protocols: MSR Action3D and UTD-MHAD cross-subject splits, MSR's action subsets.

``load_split`` reads only the files of the part asked for, so a trainer that asks for "train" never opens a test
file; the reproductions ask for "test" once, after training.
"""

from __future__ import annotations

from gatelab.activity.readers import MSR_ACTIONS, UTD_ACTIONS, load_msr_action3d, load_utd_mhad
from gatelab.errors import GatelabError

# Li, Zhang & Liu (CVPR Workshops 2010), Table 1: three subsets of eight actions (1-based action numbers).
MSR_SUBSETS = {
    "AS1": (2, 3, 5, 6, 10, 13, 18, 20),
    "AS2": (1, 4, 7, 8, 9, 11, 12, 14),
    "AS3": (6, 14, 15, 16, 17, 18, 19, 20),
    "all": tuple(range(1, 21)),
}
# Cross-subject: odd subjects train, even subjects test (MSR Action3D: Li et al. 2010; UTD-MHAD: Chen et al. 2015).
SUBJECTS = {
    "msr-action3d": {"train": (1, 3, 5, 7, 9), "test": (2, 4, 6, 8, 10)},
    "utd-mhad": {"train": (1, 3, 5, 7), "test": (2, 4, 6, 8)},
}
LAYOUT = {"msr-action3d": "msr-action3d20", "utd-mhad": "utd-mhad20"}
DATASETS = tuple(SUBJECTS)


def actions(dataset: str, subset: str = "all") -> tuple[list[int], list[str]]:
    """Zero-based labels of ``subset`` and their names (UTD-MHAD has only "all")."""
    if dataset not in SUBJECTS:
        raise GatelabError(f"unknown data set {dataset!r}; accepted: {', '.join(DATASETS)}")
    if dataset == "utd-mhad":
        if subset != "all":
            raise GatelabError(f"UTD-MHAD has no action subsets; accepted: all (got {subset!r})")
        return list(range(27)), list(UTD_ACTIONS)
    if subset not in MSR_SUBSETS:
        raise GatelabError(f"unknown MSR Action3D subset {subset!r}; accepted: {', '.join(MSR_SUBSETS)}")
    labels = [a - 1 for a in MSR_SUBSETS[subset]]
    return labels, [MSR_ACTIONS[a] for a in labels]


def load_split(dataset: str, part: str, subset: str = "all", config=None, root=None):
    """The ``part`` ("train" or "test") of ``dataset``'s cross-subject split, restricted to ``subset``, as a
    ``SkeletonDataset`` whose labels count 0..k-1 within the subset, prepared as ``config`` (an ``ActivityConfig``;
    default: its defaults) says."""
    from gatelab.activity.trainer import SkeletonDataset

    if part not in ("train", "test"):
        raise GatelabError(f"unknown split part {part!r}; accepted: train, test")
    labels, names = actions(dataset, subset)
    subjects = SUBJECTS[dataset][part]
    if dataset == "msr-action3d":
        clips = load_msr_action3d(root, subjects=subjects, actions=labels)
    else:
        clips = load_utd_mhad(root, subjects=subjects, actions=labels)
    relabel = {a: i for i, a in enumerate(labels)}
    for clip in clips:
        clip.label = relabel[clip.label]
    return SkeletonDataset.from_clips(clips, names, LAYOUT[dataset], config)

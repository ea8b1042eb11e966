"""Readers for skeleton files: MSR Action3D text files, UTD-MHAD ``.mat`` files and gatelab's own ``.npz``.

Each file becomes one ``SkeletonSequence``; ``load_msr_action3d`` and ``load_utd_mhad`` read a whole data set as
labelled ``Clip``s, with the subject and trial taken from the file names. Neither data set can be downloaded
without registering with its authors, so a missing folder is a DataMissingError that says where to put it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gatelab.activity.skeleton import SkeletonSequence
from gatelab.data.store import data_dir
from gatelab.errors import DataMissingError, GatelabError

MSR_ACTIONS = (
    "high arm wave",
    "horizontal arm wave",
    "hammer",
    "hand catch",
    "forward punch",
    "high throw",
    "draw X",
    "draw tick",
    "draw circle",
    "hand clap",
    "two hand wave",
    "side boxing",
    "bend",
    "forward kick",
    "side kick",
    "jogging",
    "tennis swing",
    "tennis serve",
    "golf swing",
    "pickup and throw",
)  # fmt: skip  (action_names.mat in the data set's folder, in its order a01..a20)

# UTD-MHAD's 27 actions a1..a27 (Chen, Jafari & Kehtarnavaz, ICIP 2015, Table 1).
UTD_ACTIONS = (
    "right arm swipe to the left", "right arm swipe to the right", "right hand wave", "two hand front clap",
    "right arm throw", "cross arms in the chest", "basketball shoot", "right hand draw x", "right hand draw circle "
    "(clockwise)", "right hand draw circle (counter clockwise)", "draw triangle", "bowling", "front boxing",
    "baseball swing from right", "tennis right hand forehand swing", "arm curl", "tennis serve", "two hand push",
    "right hand knock on door", "right hand catch an object", "right hand pick up and throw", "jogging in place",
    "walking in place", "sit to stand", "stand to sit", "forward lunge", "squat",
)  # fmt: skip

MSR_FPS, UTD_FPS = 15.0, 30.0  # Kinect v1 at the rates the data sets' papers give


@dataclass
class Clip:
    """One labelled sequence of a data set: ``label`` counts from 0; ``subject`` and ``trial`` from 1."""

    sequence: SkeletonSequence
    label: int
    subject: int
    trial: int
    name: str


def read_msr_action3d(path: str | os.PathLike) -> SkeletonSequence:
    """One MSR Action3D ``*_skeleton3D.txt``: 20 lines a frame of ``x y z confidence`` (y up, z the depth).

    The fourth number is Kinect's tracking confidence; a quarter of all joints have 0 there although their
    positions are plausible, so it is kept as a channel and every joint is marked valid.
    """
    path = Path(path)
    values = _numbers(path)
    if values.size == 0 or values.size % 4 or (values.size // 4) % 20:
        raise GatelabError(
            f"{path} holds {values.size} numbers; an MSR Action3D skeleton file holds 20 joints x 4 numbers "
            "(x y z confidence) per frame"
        )
    return SkeletonSequence(values.reshape(-1, 20, 4), "msr-action3d20", MSR_FPS, str(path))


def _numbers(path: Path) -> np.ndarray:
    if not path.is_file():
        raise GatelabError(f"skeleton file {path} does not exist")
    try:
        return np.array(path.read_text().split(), dtype=np.float32)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GatelabError(f"{path} is not a text file of numbers ({str(exc)[:120]})") from None


def read_utd_mhad(path: str | os.PathLike) -> SkeletonSequence:
    """One UTD-MHAD ``a*_s*_t*_skeleton.mat``: ``d_skel`` (20 joints, 3 coordinates, frames), y up, metres."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise GatelabError(f"skeleton file {path} does not exist")
    try:
        skel = loadmat(path)["d_skel"]
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError... for damaged files
        raise GatelabError(f"{path} is not a UTD-MHAD skeleton .mat ({type(exc).__name__}: {str(exc)[:150]})") from None
    if skel.ndim != 3 or skel.shape[:2] != (20, 3):
        raise GatelabError(f"{path}: d_skel is {skel.shape}; UTD-MHAD stores (20 joints, 3 coordinates, frames)")
    return SkeletonSequence(np.transpose(skel, (2, 0, 1)), "utd-mhad20", UTD_FPS, str(path))


def read_skeleton(path: str | os.PathLike) -> SkeletonSequence:
    """Any skeleton file gatelab reads, by its suffix: ``.txt`` (MSR Action3D), ``.mat`` (UTD-MHAD), ``.npz``."""
    suffix = Path(path).suffix.lower()
    readers = {".txt": read_msr_action3d, ".mat": read_utd_mhad, ".npz": SkeletonSequence.load}
    if suffix not in readers:
        raise GatelabError(f"cannot read skeleton file {path}: accepted suffixes are .txt, .mat and .npz")
    return readers[suffix](path)


def _folder(root, name: str, sub: str, what: str) -> Path:
    folder = data_dir(root) / name / sub
    if not folder.is_dir():
        raise DataMissingError(
            f"{what} is not at {folder}; it is a research-only data set that cannot be downloaded here: "
            f"get it from its authors and put it there (or point GATELAB_DATA at a folder holding {name}/)"
        )
    return folder


def _wanted(name: str, subjects, actions) -> bool:
    a, s = (int(v) for v in re.match(r"a(\d+)_s(\d+)", name).groups())
    return (subjects is None or s in subjects) and (actions is None or a - 1 in actions)


def load_msr_action3d(root=None, sequences: str = "cvpr12", subjects=None, actions=None) -> list[Clip]:
    """MSR Action3D's clips, sorted by name. ``sequences``: "cvpr12" (the 557 listed in the data set's
    files_used_in_cvpr12_paper.txt, which leaves out 10 with broken skeletons, as most papers do) or "all" (567).
    ``subjects`` (from 1) and ``actions`` (labels from 0) keep only those; other files are not read."""
    if sequences not in ("cvpr12", "all"):
        raise GatelabError(f"unknown MSR Action3D sequence list {sequences!r}; accepted: cvpr12, all")
    folder = _folder(root, "msr-action3d", "real_world_coordinates", "MSR Action3D")
    files = sorted(folder.glob("a*_s*_e*_skeleton3D.txt"))
    if sequences == "cvpr12":
        used = set((folder / "files_used_in_cvpr12_paper.txt").read_text().split())
        files = [f for f in files if f.name[:11] in used]
    files = [f for f in files if _wanted(f.name, subjects, actions)]
    clips = []
    for f in files:
        a, s, e = (int(v) for v in re.match(r"a(\d+)_s(\d+)_e(\d+)", f.name).groups())
        clips.append(Clip(read_msr_action3d(f), a - 1, s, e, f.name[:11]))
    if not clips:
        raise DataMissingError(f"no MSR Action3D skeleton files (a*_s*_e*_skeleton3D.txt) in {folder}")
    return clips


def load_utd_mhad(root=None, subjects=None, actions=None) -> list[Clip]:
    """UTD-MHAD's 861 skeleton clips, sorted by action, subject and trial (``subjects``, ``actions``: as for
    ``load_msr_action3d``)."""
    folder = _folder(root, "utd-mhad", "skeleton", "UTD-MHAD")
    clips = []
    for f in folder.glob("a*_s*_t*_skeleton.mat"):
        if not _wanted(f.name, subjects, actions):
            continue
        a, s, t = (int(v) for v in re.match(r"a(\d+)_s(\d+)_t(\d+)", f.name).groups())
        clips.append(Clip(read_utd_mhad(f), a - 1, s, t, f.name.removesuffix("_skeleton.mat")))
    if not clips:
        raise DataMissingError(f"no UTD-MHAD skeleton files (a*_s*_t*_skeleton.mat) in {folder}")
    return sorted(clips, key=lambda c: (c.label, c.subject, c.trial))


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
SKELETON_SUFFIXES = (".npz", ".txt", ".mat")


def read_clip(path: str | os.PathLike, **extract) -> SkeletonSequence:
    """A skeleton file, or a video whose skeletons are extracted (needs the ``video`` extra; cached beside it)."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        try:
            from gatelab.activity.video import extract_skeletons
        except ImportError as exc:  # no video module or no mediapipe: say how to get them
            raise GatelabError(
                f"reading video {path} needs the video extra ({exc}); install it with pip install 'gatelab[video]'"
            ) from None
        return extract_skeletons(path, **extract)
    return read_skeleton(path)


def load_folder(folder: str | os.PathLike, **extract) -> tuple[list[Clip], list[str]]:
    """A user's labelled clips: one subfolder per action (its name is the action), holding videos or skeleton
    files. Returns the clips and the action names (sorted). The pose cache the extractor keeps beside a video
    (``clip.mp4.pose.npz``) is not counted as a second clip."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GatelabError(f"{folder} is not a folder; give msr-action3d, utd-mhad or a folder of action subfolders")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    clips = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES + SKELETON_SUFFIXES)
        caches = {p.with_name(p.name + ".pose.npz") for p in files if p.suffix.lower() in VIDEO_SUFFIXES}
        for i, path in enumerate(p for p in files if p not in caches):
            clips.append(Clip(read_clip(path, **extract), label, 0, i + 1, f"{name}/{path.name}"))
    if len(classes) < 2 or not clips:
        raise GatelabError(
            f"{folder} needs at least two action subfolders holding clips ({', '.join(VIDEO_SUFFIXES)}) or "
            f"skeleton files ({', '.join(SKELETON_SUFFIXES)}); found {len(classes)} subfolder(s), {len(clips)} clip(s)"
        )
    return clips, classes

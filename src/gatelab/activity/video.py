"""RGB video to pose skeletons with MediaPipe's pose solution (BlazePose), cached as ``.npz``, and overlays.

Needs the ``video`` extra (``pip install 'gatelab[video]'``): mediapipe 0.10.14, whose wheel ships the pose
detector and the *full* pose landmark model (so nothing is downloaded at run time), and the OpenCV that
mediapipe depends on, which reads the video. The rest of gatelab does not need either.

Each frame gives MediaPipe's 33 landmarks as ``x, y, z, visibility``: x and y in pixels of the frame, z (depth
relative to the hips, smaller is nearer the camera) scaled by the frame width as MediaPipe defines it, so it is in
pixels too. Missing joints are **masked, not interpolated**: ``SkeletonSequence.valid`` is False for a landmark
whose visibility is below ``min_visibility`` (its coordinates stay MediaPipe's estimate) and for every landmark of
a frame in which no person was found (its coordinates are NaN, so they cannot pass as zeros). Filling them in, if
wanted, is the caller's choice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gatelab.activity.skeleton import MEDIAPIPE_33, SkeletonSequence
from gatelab.errors import GatelabError
from gatelab.files import atomic_path, check_output_path, grants_write
from gatelab.progress import bar, say

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
_INSTALL = "pose extraction needs the video extra: pip install 'gatelab[video]' (mediapipe 0.10.14 and OpenCV)"
# What decides the landmarks besides the clip itself; a cache written under other settings is not used.
_POSE = {"model_complexity": 1, "static_image_mode": False, "smooth_landmarks": True}
_CACHE_FORMAT = 1
# MediaPipe's pose connections (mp.solutions.pose.POSE_CONNECTIONS), as landmark indices into MEDIAPIPE_33.
_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13), (13, 15),
    (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20), (11, 23),
    (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28), (27, 29), (28, 30), (29, 31), (30, 32), (27, 31),
    (28, 32),
)  # fmt: skip


def _cv2():
    try:
        import cv2
    except ImportError:
        raise GatelabError(_INSTALL) from None
    return cv2


def _mediapipe():
    try:
        import mediapipe
    except ImportError:
        raise GatelabError(_INSTALL) from None
    return mediapipe


@contextlib.contextmanager
def _native_stderr_muted():
    """Send file descriptor 2 to /dev/null for a moment: MediaPipe's C++ side (TFLite, absl) prints set-up chatter
    there when its models load, and FFmpeg its reasons for refusing a file; neither has a switch for it."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _open(video: str | os.PathLike):
    """An opened cv2.VideoCapture for ``video``, or a GatelabError saying why it cannot be read."""
    path = Path(video)
    if not path.is_file():
        raise GatelabError(f"video {path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise GatelabError(f"video {path} is empty (0 bytes)")
    cv2 = _cv2()
    with _native_stderr_muted():  # FFmpeg's own complaint ("moov atom not found") would precede ours
        capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise GatelabError(f"cannot read video {path}: not a video file OpenCV can decode (e.g. mp4, avi, mov)")
    return capture


def _frames(video: str | os.PathLike):
    """Yield the clip's frames as RGB uint8 arrays (H, W, 3)."""
    cv2 = _cv2()
    capture = _open(video)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def declared_frame_rate(video: str | os.PathLike) -> float:
    """The frame rate (frames per second of playback) that the clip's container declares: metadata, not a
    measured extraction speed; a GatelabError for a missing, empty or unreadable clip or one that declares none."""
    capture = _open(video)
    try:
        fps = float(capture.get(_cv2().CAP_PROP_FPS))
    finally:
        capture.release()
    if not math.isfinite(fps) or fps <= 0:
        raise GatelabError(f"video {video} declares no frame rate (got {fps})")
    return fps


def _frame_count(video: str | os.PathLike) -> int | None:
    """The container's frame count, for progress bars only (it can be missing or approximate)."""
    capture = _open(video)
    try:
        count = int(capture.get(_cv2().CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return count if count > 0 else None


def _settings() -> dict:
    return {**_POSE, "mediapipe": _mediapipe().__version__, "format": _CACHE_FORMAT}


def _cache_key(video: Path, settings: dict) -> str:
    """sha256 of the clip's bytes and the settings that decide its landmarks: any change means a new extraction."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    with open(video, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pose_cache() -> Path:
    """Where caches of clips in read-only folders go."""
    return Path.home() / ".cache" / "gatelab" / "pose"


def _cache_paths(video: Path, key: str) -> list[Path]:
    """Beside the clip (``NAME.pose.npz``) if its folder grants write, then the per-user cache (by key)."""
    paths = []
    folder = video.resolve().parent
    if grants_write(folder):
        paths.append(folder / f"{video.name}.pose.npz")
    return paths + [_pose_cache() / f"{key}.npz"]


def _load_cache(paths: list[Path], key: str) -> tuple[np.ndarray, float] | None:
    for path in paths:
        try:
            with np.load(path, allow_pickle=False) as npz:
                if str(npz["key"]) == key:
                    return npz["landmarks"].astype(np.float32), float(npz["fps"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            continue
    return None


def _save_cache(paths: list[Path], key: str, landmarks: np.ndarray, fps: float) -> None:
    for path in paths:
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez_compressed(fh, key=np.array(key), landmarks=landmarks, fps=np.array(fps))
            return
        except OSError:
            continue
    say(f"note: no writable place for the pose cache of {paths[0].name}; it will be extracted again next time")


def _landmarks(pose, frame: np.ndarray) -> np.ndarray:
    """One frame's (33, 4) landmarks in pixels, or NaN where MediaPipe found no person."""
    height, width = frame.shape[:2]
    with warnings.catch_warnings():  # mediapipe 0.10.14 calls a protobuf method that protobuf 4.25 deprecates
        warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype", category=UserWarning)
        found = pose.process(frame).pose_landmarks
    if found is None:
        return np.full((33, 4), np.nan, dtype=np.float32)
    return np.asarray([(p.x * width, p.y * height, p.z * width, p.visibility) for p in found.landmark], np.float32)


def _run_pose(video: Path, progress: bool) -> np.ndarray:
    """MediaPipe pose on every frame: (T, 33, 4) float32 x, y, z (pixels), visibility; NaN where no person."""
    mp = _mediapipe()
    frames = _frames(video)
    first = next(frames, None)
    if first is None:
        raise GatelabError(f"video {video} has no frames that OpenCV can decode")
    with _native_stderr_muted():  # the models load in the background until the first frame's result is back
        pose = mp.solutions.pose.Pose(**_POSE)
        rows = [_landmarks(pose, first)]
    with bar(total=_frame_count(video), desc=video.name, unit="frame", quiet=not progress) as pbar, pose:
        pbar.update(1)
        for frame in frames:
            rows.append(_landmarks(pose, frame))
            pbar.update(1)
    landmarks = np.stack(rows)
    if np.isnan(landmarks[:, 0, 0]).all():
        raise GatelabError(f"no person found in any of the {len(rows)} frames of {video}")
    return landmarks


def _check_visibility(min_visibility: float) -> float:
    if isinstance(min_visibility, bool) or not isinstance(min_visibility, (int, float)):
        raise GatelabError(f"min_visibility must be a number in [0, 1], got {min_visibility!r}")
    if not 0.0 <= min_visibility <= 1.0:  # also refuses NaN
        raise GatelabError(f"min_visibility must be in [0, 1], got {min_visibility}")
    return float(min_visibility)


def extract_skeletons(
    video: str | os.PathLike, *, cache: bool = True, min_visibility: float = 0.5, progress: bool = True
) -> SkeletonSequence:
    """The clip's pose as a ``mediapipe33`` SkeletonSequence (T, 33, 4): x, y, z in pixels, visibility.

    ``valid`` is False for landmarks with visibility below ``min_visibility`` and in frames without a person
    (see the module docstring). With ``cache``, the raw landmarks are kept in ``NAME.pose.npz`` beside the clip,
    or in ``~/.cache/gatelab/pose`` when the clip's folder is read-only, keyed by a hash of the clip's bytes and
    the pose settings; ``min_visibility`` is applied after loading, so changing it needs no new extraction.
    Raises GatelabError for a missing, empty or undecodable clip and for a clip with no person in it.
    """
    min_visibility = _check_visibility(min_visibility)
    path = Path(video)
    fps = declared_frame_rate(path)  # also refuses a missing, empty or unreadable file
    landmarks = None
    if cache:
        key = _cache_key(path, _settings())
        paths = _cache_paths(path, key)
        cached = _load_cache(paths, key)
        if cached is not None:
            landmarks, fps = cached
    if landmarks is None:
        landmarks = _run_pose(path, progress)
        if cache:
            _save_cache(paths, key, landmarks, fps)
    valid = ~np.isnan(landmarks[:, :, 0]) & (np.nan_to_num(landmarks[:, :, 3]) >= min_visibility)
    return SkeletonSequence(landmarks, "mediapipe33", fps=fps, source=str(path), valid=valid)


def extract_folder(
    folder: str | os.PathLike, *, cache: bool = True, min_visibility: float = 0.5, progress: bool = True
) -> list[tuple[Path, SkeletonSequence]]:
    """``extract_skeletons`` on every video in ``folder`` (not its subfolders), in name order.

    A video is a file ending in one of VIDEO_SUFFIXES. The bar counts clips and shows frames/s.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GatelabError(f"{folder} is not a folder")
    clips = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        raise GatelabError(f"no videos in {folder}; accepted suffixes: {', '.join(VIDEO_SUFFIXES)}")
    out, frames, start = [], 0, time.perf_counter()
    with bar(total=len(clips), desc="clips", unit="clip", quiet=not progress) as pbar:
        for clip in clips:
            sequence = extract_skeletons(clip, cache=cache, min_visibility=min_visibility, progress=False)
            out.append((clip, sequence))
            frames += len(sequence)
            pbar.set_postfix_str(f"{frames / (time.perf_counter() - start):.1f} frames/s")
            pbar.update(1)
    return out


# Colours by the subject's side, from the landmark names (left_shoulder, mouth_left, ...); the nose is neither.
_SIDE_COLOURS = {"left": (255, 138, 0), "right": (0, 170, 255), None: (240, 240, 240)}
_SIDES = tuple(next((s for s in ("left", "right") if s in name.split("_")), None) for name in MEDIAPIPE_33)


def _colour(*joints: int) -> tuple[int, int, int]:
    """A landmark's or bone's colour: its side's, or the centre's for a bone that crosses sides."""
    sides = {_SIDES[j] for j in joints}
    return _SIDE_COLOURS[sides.pop() if len(sides) == 1 else None]


def draw_overlay(
    video: str | os.PathLike,
    sequence: SkeletonSequence,
    out_png: str | os.PathLike,
    *,
    frames: int = 12,
    title: str | None = None,
) -> Path:
    """A contact sheet PNG: ``frames`` evenly spaced frames of the clip with the skeleton drawn on them.

    Only valid landmarks, and bones between two valid landmarks, are drawn (left side orange, right blue).
    ``frames`` above the clip's length shows every frame. The PNG is written atomically.
    """
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise GatelabError(f"frames must be a positive whole number, got {frames!r}")
    if not isinstance(sequence, SkeletonSequence) or sequence.layout != "mediapipe33":
        raise GatelabError("draw_overlay needs a mediapipe33 SkeletonSequence in pixels, as extract_skeletons gives")
    out_png = check_output_path(out_png)
    chosen = set(np.linspace(0, len(sequence) - 1, min(frames, len(sequence))).round().astype(int).tolist())
    tiles, seen = [], 0
    for index, frame in enumerate(_frames(video)):
        seen += 1
        if index not in chosen or index >= len(sequence):
            continue
        image = Image.fromarray(frame)
        scale = 360 / image.height
        image = image.resize((max(1, round(image.width * scale)), 360), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(image)
        xy, ok = sequence.joints[index, :, :2] * scale, sequence.valid[index]
        for a, b in _EDGES:
            if ok[a] and ok[b]:
                draw.line([tuple(xy[a]), tuple(xy[b])], fill=_colour(a, b), width=3)
        for j in np.flatnonzero(ok):
            x, y = xy[j]
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=_colour(j), outline=(0, 0, 0))
        draw.text((6, 6), f"frame {index}", fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
        tiles.append(image)
    if seen != len(sequence):
        raise GatelabError(f"the sequence has {len(sequence)} frames but video {video} has {seen}; is it its clip?")
    columns = min(len(tiles), 6)
    rows = math.ceil(len(tiles) / columns)
    width, height = tiles[0].size
    top = 28
    sheet = Image.new("RGB", (columns * width, rows * height + top), (20, 20, 20))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * width, top + (i // columns) * height))
    caption = f"{title or Path(video).name}   (orange: the subject's left, blue: right; invalid joints not drawn)"
    ImageDraw.Draw(sheet).text((8, 8), caption, fill=(255, 255, 255))
    with atomic_path(out_png) as tmp:
        sheet.save(tmp, format="PNG")
    return out_png

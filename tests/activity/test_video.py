"""Video to skeleton: MediaPipe on the real squats clip against its reference landmarks, the cache, masking of
missing joints, the overlay, and clear errors for bad clips."""

import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest

from gatelab.activity import SkeletonSequence
from gatelab.activity import video as vid
from gatelab.data import data_dir
from gatelab.errors import GatelabError

needs_video = pytest.mark.skipif(
    importlib.util.find_spec("mediapipe") is None, reason="needs the video extra: pip install 'gatelab[video]'"
)
CLIP = "tfjs_pose_squats.mp4"


def _clip():
    path = data_dir() / "video" / CLIP
    if not path.is_file():
        pytest.skip(f"{path} is not here")
    return path


def _copy(folder):
    """The squats clip copied into ``folder`` (the shared one is read-only), writable."""
    folder.mkdir(parents=True, exist_ok=True)
    target = shutil.copyfile(_clip(), folder / CLIP)
    return target


@pytest.fixture(scope="module")
def squats(tmp_path_factory):
    """The squats clip in a writable folder and its skeletons, extracted once by MediaPipe for the module."""
    clip = _copy(tmp_path_factory.mktemp("squats"))
    return clip, vid.extract_skeletons(clip, progress=False)


@pytest.fixture
def fake_pose(monkeypatch):
    """Replace MediaPipe by canned landmarks: (T, 33, 4) pixels and visibility, a person in every frame."""
    calls = []
    landmarks = np.random.default_rng(0).uniform(10, 100, size=(65, 33, 4)).astype(np.float32)
    landmarks[..., 3] = 0.9

    def run(video, progress):
        calls.append(video)
        return landmarks.copy()

    monkeypatch.setattr(vid, "_run_pose", run)
    return calls, landmarks


@needs_video
def test_extract_agrees_with_the_reference_blazepose_landmarks(squats):
    _, seq = squats
    assert seq.joints.shape == (65, 33, 4) and seq.layout == "mediapipe33" and seq.fps == 5.0
    with open(_clip().with_name("tfjs_pose_squats.full.json")) as fh:
        ref = np.asarray(json.load(fh), dtype=np.float64)  # (65, 33, 3): x, y in pixels of the 720x1280 frame, z
    error = np.linalg.norm(seq.joints[..., :2] - ref[..., :2], axis=-1)
    # The landmark model sees a 256x256 crop of a ~1000-pixel body region, so one of its input pixels is ~4 frame
    # pixels; the reference is the same full model under TensorFlow.js, whose float arithmetic and landmark smoothing
    # differ. We ask for a median within 1.5 model pixels and a 95th percentile within 3 (measured: 3.6 and 8.3).
    assert np.median(error) < 6.0 and np.percentile(error, 95) < 12.0, (np.median(error), np.percentile(error, 95))
    # z is scaled by the frame width, as the reference's: same spread, strongly correlated (measured: 1.02, 0.94).
    z, ref_z = seq.joints[..., 2].ravel(), ref[..., 2].ravel()
    assert 0.8 < ref_z.std() / z.std() < 1.25 and np.corrcoef(z, ref_z)[0, 1] > 0.9
    assert np.array_equal(seq.valid, seq.joints[..., 3] >= 0.5)


@needs_video
def test_cache_is_keyed_by_content_and_reused(squats, fake_pose, tmp_path):
    clip, seq = squats
    cache = clip.with_name(CLIP + ".pose.npz")
    assert cache.is_file()
    calls, _ = fake_pose
    moved = _copy(tmp_path / "elsewhere")  # the same bytes under another folder: the cached landmarks apply
    shutil.copyfile(cache, moved.with_name(cache.name))
    again = vid.extract_skeletons(moved, progress=False)
    assert calls == [] and np.array_equal(again.joints, seq.joints) and np.array_equal(again.valid, seq.valid)
    strict = vid.extract_skeletons(moved, min_visibility=0.99, progress=False)  # applied after loading
    assert calls == [] and strict.valid.sum() < seq.valid.sum()
    with open(moved, "ab") as fh:  # other bytes: the cache no longer applies and is rewritten
        fh.write(b"\0")
    vid.extract_skeletons(moved, progress=False)
    assert len(calls) == 1
    vid.extract_skeletons(moved, progress=False)
    assert len(calls) == 1


@needs_video
def test_a_read_only_folder_caches_in_the_home_cache(fake_pose, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    clip = _copy(tmp_path / "shared")
    clip.parent.chmod(0o555)
    try:
        vid.extract_skeletons(clip, progress=False)
        vid.extract_skeletons(clip, progress=False)
        assert sorted(p.name for p in clip.parent.iterdir()) == [CLIP]
    finally:
        clip.parent.chmod(0o755)
    calls, _ = fake_pose
    assert len(calls) == 1 and len(list((tmp_path / "home/.cache/gatelab/pose").glob("*.npz"))) == 1


@needs_video
def test_missing_and_hidden_joints_are_masked_not_zero(fake_pose, tmp_path, monkeypatch):
    _, landmarks = fake_pose
    landmarks[3] = np.nan  # no person in frame 3
    landmarks[5, 7, 3] = 0.2  # a hidden ear in frame 5
    seq = vid.extract_skeletons(_copy(tmp_path), cache=False, progress=False)
    assert not seq.valid[3].any() and np.isnan(seq.joints[3]).all()
    assert not seq.valid[5, 7] and seq.joints[5, 7, 0] == landmarks[5, 7, 0]  # MediaPipe's estimate, masked
    assert seq.valid.sum() == 65 * 33 - 33 - 1 and np.isfinite(seq.joints[seq.valid]).all()


@needs_video
def test_a_clip_without_a_person_is_a_clear_error(tmp_path):
    import cv2

    path = tmp_path / "empty_room.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    for _ in range(6):
        writer.write(np.full((64, 96, 3), 128, np.uint8))
    writer.release()
    with pytest.raises(GatelabError, match=r"no person found in any of the 6 frames"):
        vid.extract_skeletons(path, progress=False)


@needs_video
def test_unreadable_empty_or_missing_videos_are_clear_errors(tmp_path, capfd):
    (tmp_path / "notes.mp4").write_text("not a video\n")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "truncated.mp4").write_bytes(_clip().read_bytes()[:100_000])  # its index is at the end
    for name, message in [
        ("notes.mp4", "cannot read video"),
        ("empty.mp4", r"is empty \(0 bytes\)"),
        ("truncated.mp4", "cannot read video"),
        ("absent.mp4", "does not exist"),
    ]:
        with pytest.raises(GatelabError, match=message):
            vid.extract_skeletons(tmp_path / name, progress=False)
        with pytest.raises(GatelabError, match=message):
            vid.declared_frame_rate(tmp_path / name)
    assert capfd.readouterr().err == ""  # FFmpeg's own complaints are not printed before ours


@needs_video
@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.5, True, "0.5"])
def test_min_visibility_must_be_in_zero_one(bad, tmp_path):
    with pytest.raises(GatelabError, match="min_visibility"):
        vid.extract_skeletons(tmp_path / "never_read.mp4", min_visibility=bad)


@pytest.mark.parametrize("missing", [("mediapipe",), ("mediapipe", "cv2")])
def test_without_the_video_extra_says_how_to_install(missing, monkeypatch, tmp_path):
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    with pytest.raises(GatelabError, match=r"pip install 'gatelab\[video\]'"):
        vid.extract_skeletons(_copy(tmp_path), progress=False)


@needs_video
def test_extract_folder_takes_every_clip_in_name_order(fake_pose, tmp_path):
    folder = tmp_path / "clips"
    _copy(folder).rename(folder / "b.mp4")
    _copy(folder).rename(folder / "a.MOV")
    (folder / "readme.txt").write_text("not a clip")
    got = vid.extract_folder(folder, progress=False)
    assert [p.name for p, _ in got] == ["a.MOV", "b.mp4"]
    assert all(isinstance(s, SkeletonSequence) and s.joints.shape == (65, 33, 4) for _, s in got)
    with pytest.raises(GatelabError, match="no videos in"):
        vid.extract_folder(tmp_path / "clips" / "..", progress=False)
    with pytest.raises(GatelabError, match="is not a folder"):
        vid.extract_folder(folder / "b.mp4")


def _skeleton_pixels(png):
    """How many pixels of a sheet have the overlay's left (orange) or right (blue) colour."""
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    return sum(int((pixels == colour).all(axis=1).sum()) for colour in ((255, 138, 0), (0, 170, 255)))


@needs_video
def test_overlay_contact_sheet_is_written_with_the_skeleton_drawn(squats, tmp_path):
    clip, seq = squats
    out = vid.draw_overlay(clip, seq, tmp_path / "sheet.png", frames=4, title="squats")
    hidden = SkeletonSequence(seq.joints, seq.layout, seq.fps, valid=np.zeros_like(seq.valid))
    bare = vid.draw_overlay(clip, hidden, tmp_path / "bare.png", frames=4)
    from PIL import Image

    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (4 * 202, 360 + 28)  # 720x1280 frames shown 202x360
    assert _skeleton_pixels(out) > 2000 and _skeleton_pixels(bare) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.png", "sheet.png"]  # no temporary left behind
    with pytest.raises(GatelabError, match="the sequence has 10 frames but video"):
        vid.draw_overlay(clip, SkeletonSequence(seq.joints[:10], seq.layout), tmp_path / "x.png")
    with pytest.raises(GatelabError, match="positive whole number"):
        vid.draw_overlay(clip, seq, tmp_path / "x.png", frames=0)
    with pytest.raises(GatelabError, match="is an existing folder"):
        vid.draw_overlay(clip, seq, tmp_path, frames=2)

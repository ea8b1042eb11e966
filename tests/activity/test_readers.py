import numpy as np
import pytest

from gatelab.activity import SkeletonSequence, load_msr_action3d, read_skeleton
from gatelab.activity.preprocess import fill_missing, normalise, prepare
from gatelab.activity.protocols import load_split
from gatelab.activity.skeleton import MSR_ACTION3D_20, UTD_MHAD_20
from gatelab.activity.trainer import ActivityConfig
from gatelab.data.store import data_dir
from gatelab.errors import GatelabError

MSR = data_dir() / "msr-action3d" / "real_world_coordinates"
UTD = data_dir() / "utd-mhad" / "skeleton"


def test_msr_action3d_file_against_its_known_values():
    seq = read_skeleton(MSR / "a01_s01_e01_skeleton3D.txt")
    assert seq.layout == "msr-action3d20" and seq.joints.shape == (54, 20, 4)  # 1080 lines / 20 joints
    np.testing.assert_allclose(seq.joints[0, 0], [-0.371736, 0.371031, 2.674849, 1.0], rtol=1e-6)
    np.testing.assert_allclose(seq.joints[1, 0, :3], [-0.369292, 0.364387, 2.673330], rtol=1e-6)
    y = seq.joints[0, :, 1]
    names = MSR_ACTION3D_20
    assert y[names.index("head")] == y.max()  # body_model.mat's head_index 20
    assert y[names.index("shoulder_center")] > y[names.index("spine")] > y[names.index("hip_center")]
    assert y[names.index("left_foot")] < y[names.index("left_knee")] < y[names.index("left_hip")]


def test_utd_mhad_file_against_its_known_values():
    seq = read_skeleton(UTD / "a1_s1_t1_skeleton.mat")
    assert seq.layout == "utd-mhad20" and seq.joints.shape == (48, 20, 3)
    np.testing.assert_allclose(seq.joints[0, 0], [-0.04576265, 0.48398542, 2.83018947], rtol=1e-6)
    np.testing.assert_allclose(seq.joints[0, 19], [0.09826498, -1.08133364, 2.92298913], rtol=1e-6)


def test_msr_sequence_lists_and_cross_subject_split_read_only_their_subjects():
    assert len(load_msr_action3d(sequences="cvpr12", actions=[0])) == 27
    assert len(load_msr_action3d(sequences="all", actions=[12])) == 30  # bend: 3 broken files left out in cvpr12
    train = load_split("msr-action3d", "train", "AS1", ActivityConfig(frames=16))
    assert set(train.subjects) == {1, 3, 5, 7, 9} and train.x.shape[1:] == (16, 20, 3)
    assert sorted(set(train.y.tolist())) == list(range(8)) and train.classes[0] == "horizontal arm wave"


def test_npz_round_trip_and_kinect_layouts_convert(tmp_path):
    seq = read_skeleton(UTD / "a1_s1_t1_skeleton.mat")
    back = read_skeleton(seq.save(tmp_path / "s.npz"))
    np.testing.assert_array_equal(back.joints, seq.joints)
    assert back.layout == seq.layout and back.fps == 30.0
    msr = seq.to_layout("msr-action3d20")
    for name in UTD_MHAD_20:
        np.testing.assert_array_equal(
            msr.joints[:, MSR_ACTION3D_20.index(name)], seq.joints[:, UTD_MHAD_20.index(name)]
        )


def test_mediapipe_converts_to_kinect_with_derived_joints_and_camera_axes():
    rng = np.random.default_rng(0)
    joints = rng.normal(300, 50, (5, 33, 4)).astype(np.float32)
    valid = np.ones((5, 33), bool)
    valid[2, 23] = False  # left hip unseen in frame 2
    mp = SkeletonSequence(joints, "mediapipe33", valid=valid)
    kin = mp.to_layout("utd-mhad20")
    hip_center = UTD_MHAD_20.index("hip_center")
    seen = [0, 1, 3, 4]
    mean = (joints[seen, 23, :3] + joints[seen, 24, :3]) / 2
    np.testing.assert_allclose(kin.joints[seen, hip_center, :2], -mean[:, :2], rtol=1e-6)  # image -> camera axes
    np.testing.assert_allclose(kin.joints[seen, hip_center, 2], mean[:, 2], rtol=1e-6)
    assert not kin.valid[2, hip_center] and (kin.joints[2, hip_center] == 0).all()
    assert kin.valid.sum() == 5 * 20 - 3  # left hip, hip centre and spine lack the left hip in frame 2
    filled = fill_missing(kin)
    left_hip = UTD_MHAD_20.index("left_hip")
    np.testing.assert_allclose(filled.xyz[2, left_hip], (kin.joints[1, left_hip, :3] + kin.joints[3, left_hip, :3]) / 2)
    assert filled.interpolated == 3 and filled.never_seen == []


def test_normalisation_centres_scales_and_faces_the_camera():
    seq = read_skeleton(UTD / "a1_s1_t1_skeleton.mat")
    out = normalise(fill_missing(seq).xyz, seq.joint_names)
    names = seq.joint_names
    np.testing.assert_allclose(out[:, names.index("hip_center")], 0, atol=1e-6)
    first = normalise(fill_missing(seq).xyz, names, centre="first")
    np.testing.assert_allclose(first[0, names.index("hip_center")], 0, atol=1e-6)
    assert np.abs(first[:, names.index("hip_center")]).max() > 1e-3  # the root's motion is kept
    spine = np.linalg.norm(out[:, names.index("shoulder_center")] - out[:, names.index("hip_center")], axis=-1)
    assert spine.mean() == pytest.approx(1.0, rel=1e-5)
    hips = out[0, names.index("right_hip")] - out[0, names.index("left_hip")]
    assert abs(hips[2]) < 1e-5 and hips[0] > 0


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "holds 0 numbers"),
        ("1 2 3 4\n" * 19, "20 joints"),
        ("1 2 x 4\n" * 20, "not a text file of numbers"),
        ("nan 2 3 4\n" * 20, "NaN"),
    ],
)
def test_bad_msr_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "a01_s01_e01_skeleton3D.txt"
    path.write_text(content)
    with pytest.raises(GatelabError, match=message):
        read_skeleton(path)


def test_bad_skeletons(tmp_path):
    with pytest.raises(GatelabError, match=r"\(frames, 20, channels>=2\)"):
        SkeletonSequence(np.zeros((4, 19, 3)), "utd-mhad20")
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(GatelabError, match="not a gatelab skeleton .npz"):
        read_skeleton(tmp_path / "x.npz")
    one = SkeletonSequence(np.zeros((1, 20, 3)), "utd-mhad20")
    with pytest.raises(GatelabError, match="at least 2 are needed"):
        prepare(one, "utd-mhad20", 16)
    with pytest.raises(GatelabError, match="accepted suffixes"):
        read_skeleton(tmp_path / "x.csv")

"""Bad input to ``gatelab activity``: one line on stderr and exit status 2, never a traceback."""

import numpy as np
import pytest

from gatelab.activity import SkeletonSequence
from gatelab.cli import main


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gatelab: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_training_on_bad_folders_is_refused(tmp_path, capsys, toy_folder):
    out = str(tmp_path / "m.safetensors")
    bad = tmp_path / "bad"
    (bad / "a").mkdir(parents=True)
    (bad / "b").mkdir()
    (bad / "a" / "x_skeleton3D.txt").write_text("1 2 3 4\n" * 19)  # 19 joints
    (bad / "b" / "y.npz").write_bytes(b"")
    assert "20 joints" in _one_line_error(capsys, ["activity", "train", str(bad), "--out", out])
    (bad / "a" / "x_skeleton3D.txt").write_text("nan 2 3 4\n" * 20)
    assert "NaN" in _one_line_error(capsys, ["activity", "train", str(bad), "--out", out])
    assert "at least two action subfolders" in _one_line_error(
        capsys, ["activity", "train", str(toy_folder / "raise"), "--out", out]
    )
    assert "not a folder" in _one_line_error(capsys, ["activity", "train", str(tmp_path / "none"), "--out", out])
    no_validation = ["activity", "train", str(toy_folder), "--out", out, "--val-size", "0", "--keep", "best"]
    assert "needs val_size > 0" in _one_line_error(capsys, no_validation)


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--epochs", "0"),
        ("--lr", "nan"),
        ("--label-fraction", "0"),
        ("--frame-dropout-rate", "1"),
        ("--val-size", "-1"),
    ],
)
def test_impossible_numbers_are_refused_before_any_work(capsys, toy_folder, flag, value):
    with pytest.raises(SystemExit) as info:
        main(["activity", "train", str(toy_folder), flag, value])
    assert info.value.code == 2 and flag in capsys.readouterr().err


def test_predict_refuses_short_clips_bad_videos_and_bad_models(tmp_path, capsys, toy_folder):
    model = tmp_path / "m.safetensors"
    argv = ["activity", "train", str(toy_folder), "--out", str(model), "--epochs", "1", "--hidden", "4"]
    assert main([*argv, "--layers", "2", "--frames", "8", "--val-size", "2", "--quiet"]) == 0
    capsys.readouterr()
    SkeletonSequence(np.zeros((1, 20, 3)), "utd-mhad20").save(tmp_path / "short.npz")
    assert "at least 2 are needed" in _one_line_error(
        capsys, ["activity", "predict", str(model), str(tmp_path / "short.npz")]
    )
    (tmp_path / "empty.mp4").write_bytes(b"")
    _one_line_error(capsys, ["activity", "predict", str(model), str(tmp_path / "empty.mp4")])
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    assert "not a gatelab activity model" in _one_line_error(
        capsys, ["activity", "predict", str(tmp_path / "junk.safetensors"), str(tmp_path / "short.npz")]
    )
    assert main(["activity", "predict", str(model), str(toy_folder / "raise" / "0.npz")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("%" in line for line in lines)  # two actions known: the top-3 is both


def test_extract_then_predict_on_the_real_squat_clip(tmp_path, capsys, toy_folder):
    """The RGB path end to end (needs the video extra): extract writes the skeleton and a contact sheet, predict
    classifies the clip with a model trained on Kinect-layout skeletons and writes its overlay."""
    pytest.importorskip("mediapipe")
    pytest.importorskip("gatelab.activity.video")
    import shutil

    from gatelab.data.store import data_dir

    clip = tmp_path / "squats.mp4"
    shutil.copy(data_dir() / "video" / "tfjs_pose_squats.mp4", clip)
    assert main(["activity", "extract", str(clip), "--quiet"]) == 0
    assert (tmp_path / "squats.mp4.skeleton.png").stat().st_size > 1000
    model = tmp_path / "m.safetensors"
    argv = ["activity", "train", str(toy_folder), "--out", str(model), "--epochs", "1", "--hidden", "4"]
    assert main([*argv, "--layers", "2", "--frames", "8", "--val-size", "2", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["activity", "predict", str(model), str(clip), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "raise" in out and "swipe" in out
    assert (tmp_path / "squats.mp4.prediction.png").stat().st_size > 1000


def test_evaluate_refuses_a_subset_the_model_was_not_trained_on(tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    argv = ["activity", "train", "msr-action3d", "--subset", "AS2", "--out", str(model), "--epochs", "1"]
    assert main([*argv, "--hidden", "4", "--layers", "2", "--frames", "8", "--label-fraction", "0.1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["activity", "evaluate", str(model), "msr-action3d", "--out", str(tmp_path / "s.json")]) == 0
    assert "accuracy" in capsys.readouterr().out and (tmp_path / "s.json").is_file()  # the model's own subset
    err = _one_line_error(capsys, ["activity", "evaluate", str(model), "msr-action3d", "--subset", "all"])
    assert "knows 8 actions" in err

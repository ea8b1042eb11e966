"""The shared CLI vocabulary, devices, output-path checks and atomic folders."""

import argparse
import os

import pytest
import torch

from gatelab import options
from gatelab.devices import resolve_device
from gatelab.errors import GatelabError
from gatelab.files import atomic_dir, check_output_path, grants_write


@pytest.mark.parametrize(
    "parse,text",
    [
        (options.positive_int, "0"),
        (options.positive_int, "-3"),
        (options.positive_int, "2.5"),
        (options.positive_float, "nan"),
        (options.nonnegative_float, "-1e-9"),
        (options.finite_float, "inf"),
        (options.probability, "1"),
        (options.fraction, "0"),
    ],
)
def test_numbers_outside_their_range_are_refused(parse, text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"expected .*got {text!r}"):
        parse(text)


def test_numbers_inside_their_range_pass():
    assert options.positive_int("3") == 3 and options.fraction("1") == 1.0 and options.finite_float("-2") == -2.0


def test_devices():
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(GatelabError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(GatelabError, match="use --device cpu"):
            resolve_device("cuda")


def test_common_flags_parse_and_reject(capsys):
    parser = argparse.ArgumentParser()
    options.add_training(parser)
    args = parser.parse_args(["--checkpoint-every", "60", "--seed", "4"])
    assert (args.checkpoint_every, args.seed, args.device, args.resume, args.quiet) == (60.0, 4, "cpu", None, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "gpu7"])
    assert "unknown device 'gpu7'" in capsys.readouterr().err


def test_output_paths_are_checked_before_work(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert check_output_path(tmp_path / "new" / "deeper" / "out.pt") == tmp_path / "new" / "deeper" / "out.pt"
    with pytest.raises(GatelabError, match="existing folder"):
        check_output_path(tmp_path, kind="file")
    with pytest.raises(GatelabError, match="existing file"):
        check_output_path(tmp_path / "afile", kind="dir")
    with pytest.raises(GatelabError, match="is a file, not a folder"):
        check_output_path(tmp_path / "afile" / "out.pt")
    assert not (tmp_path / "new").exists()  # nothing created


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_read_only_mount_is_refused(tmp_path):
    with pytest.raises(GatelabError, match="not writable"):
        check_output_path("/proc/gatelab-out.pt")


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("crash")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    with atomic_dir(out) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_held_out_size_is_a_count_or_a_fraction():
    assert options.count_or_fraction("64") == 64 and options.count_or_fraction("0.1") == 0.1
    for bad in ("0", "1.5", "-3", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="a count >= 1 or a fraction in"):
            options.count_or_fraction(bad)


def test_grants_write_follows_the_mode_bits_even_for_root(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    assert grants_write(tmp_path) and grants_write(shared)
    shared.chmod(0o555)  # root could still write there; gatelab leaves it alone
    assert not grants_write(shared) and not grants_write(tmp_path / "missing")
    shared.chmod(0o755)

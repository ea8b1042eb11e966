"""Activity recognition speed: training and inference sequences/s of the deep BLSTM against the ST-GCN peer, on the
same MSR Action3D inputs in one run, and pose extraction frames/s (extract_skeletons, uncached, timed here) when
the video extra is installed: on the clip as it is, and on a 640x480 copy (scaled to fit, on black), the size the
issue's target names.

    python benchmarks/activity.py [--steps 20] [--threads 1] [--video PATH]

Both models use their ActivityConfig defaults (the BLSTM's 2 x 64 units a direction, ST-GCN's 9 blocks of the
paper's widths) on the cross-subject training sequences of all 20 actions, 32 frames each, with all three aids on
(ST-GCN has no auxiliary heads, so gradient injection does not apply to it). Timings exclude data loading.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from gatelab.activity.models import build_model
from gatelab.activity.protocols import load_split
from gatelab.activity.trainer import ActivityConfig, training_loss
from gatelab.data.store import data_dir
from gatelab.errors import GatelabError
from gatelab.options import positive_int


def _train_rate(config: ActivityConfig, data, steps: int) -> float:
    model = build_model(config, data.layout, len(data.classes))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    start = None
    for i in range(steps + 2):  # two warm-up steps, not timed
        if i == 2:
            start = time.perf_counter()
        idx = torch.randint(0, len(data), (config.batch_size,))
        loss, _ = training_loss(model, data.x[idx], data.y[idx], config)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * config.batch_size / (time.perf_counter() - start)


@torch.no_grad()
def _infer_rate(config: ActivityConfig, data) -> float:
    model = build_model(config, data.layout, len(data.classes)).eval()
    model(data.x[:8])
    start = time.perf_counter()
    for batch in data.x.split(256):
        model(batch)
    return len(data) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=positive_int, default=20, help="timed training steps per model (default: 20)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default: 1)")
    default_video = data_dir() / "video" / "tfjs_pose_squats.mp4"
    parser.add_argument("--video", default=str(default_video), help=f"clip for extraction (default: {default_video})")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    blstm = ActivityConfig()
    stgcn = ActivityConfig(arch="stgcn", gradient_injection=False)
    data = load_split("msr-action3d", "train", "all", blstm)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} thread(s); data: {len(data)} MSR Action3D training sequences x {blstm.frames} frames; "
        f"each model the default ensemble of {blstm.ensemble}"
    )
    rows = {}
    for name, config in (("BLSTM", blstm), ("ST-GCN", stgcn)):
        rows[name] = (_train_rate(config, data, args.steps), _infer_rate(config, data))
        print(
            f"{name:7s} training {rows[name][0]:8.1f} seq/s   inference {rows[name][1]:9.1f} seq/s   "
            f"load average {open('/proc/loadavg').read().split()[0]}"
        )
    print(
        f"ratio BLSTM / ST-GCN: training {rows['BLSTM'][0] / rows['ST-GCN'][0]:.2f}x, "
        f"inference {rows['BLSTM'][1] / rows['ST-GCN'][1]:.2f}x"
    )
    try:
        from gatelab.activity.video import extract_skeletons

        with tempfile.TemporaryDirectory() as tmp:
            clips = {"its own size": Path(args.video), "640x480": _letterboxed(Path(args.video), Path(tmp), 640, 480)}
            for size, clip in clips.items():
                start = time.perf_counter()
                frames = len(extract_skeletons(clip, cache=False, progress=False))
                fps = frames / (time.perf_counter() - start)
                print(
                    f"pose extraction at {size}: {fps:.1f} frames/s ({frames} frames of {args.video}; the target is "
                    f">= 15 at 640x480 on 2 cores), load average {open('/proc/loadavg').read().split()[0]}"
                )
    except (ImportError, GatelabError) as exc:
        print(f"pose extraction: not measured ({exc})")


def _letterboxed(video: Path, folder: Path, width: int, height: int) -> Path:
    """``video`` scaled to fit ``width`` x ``height`` and centred on black, written as MJPEG into ``folder``."""
    import cv2
    import numpy as np

    reader = cv2.VideoCapture(str(video))
    out = folder / f"{video.stem}-{width}x{height}.avi"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), reader.get(cv2.CAP_PROP_FPS), (width, height))
    while True:
        ok, frame = reader.read()
        if not ok:
            break
        scale = min(width / frame.shape[1], height / frame.shape[0])
        small = cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)))
        canvas = np.zeros((height, width, 3), dtype=np.uint8)
        top, left = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
        canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
        writer.write(canvas)
    reader.release()
    writer.release()
    return out


if __name__ == "__main__":
    main()
